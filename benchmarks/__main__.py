"""Run the benchmarks: `uv run python -m benchmarks [--quick] [--only coldstart,serving,...]`.

Prints tables, writes benchmarks/out/results.json and benchmarks/out/chart.png. Weights are
random values in the real architectures (real sizes, real compute), generated once into
.local/bench-weights. See benchmarks/RESULTS.md for the committed figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import coldstart, containers, report, serving
from benchmarks.harness import ROOT, bench_weights, drop_page_cache
from weights.catalog import load_catalog

KNOBS = {
    "default": {},
    "torch_threads=1": {"TORCH_THREADS": "1"},
    "inference_concurrency=2": {"INFERENCE_CONCURRENCY": "2"},
    "inference_concurrency=2,torch_threads=1": {
        "INFERENCE_CONCURRENCY": "2",
        "TORCH_THREADS": "1",
    },
    "channels_last": {"CHANNELS_LAST": "1"},
    "gunicorn_threads=2": {"GUNICORN_THREADS": "2"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small models, one run: a smoke test")
    parser.add_argument("--runs", type=int, default=3, help="cold starts per variant (median)")
    parser.add_argument(
        "--only", default="coldstart,serving,knobs,containers", help="comma-separated parts"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=ROOT / ".local" / "bench-weights",
        help="where the generated weights are kept between runs",
    )
    args = parser.parse_args()
    parts = set(args.only.split(","))
    catalog = load_catalog()
    sets = {"resnet152": ["resnet152"], "v2": catalog.select("v2")}
    serve_model = "resnet152"
    # requests for latency, client counts and seconds per throughput point
    load = {"n": 30, "clients": (1, 2, 4, 8), "seconds": 12.0}
    if args.quick:
        sets, serve_model, args.runs = {"resnet18": ["resnet18"]}, "resnet18", 1
        load = {"n": 5, "clients": (1, 2), "seconds": 2.0}
    all_ids = list(dict.fromkeys(i for ids in sets.values() for i in ids))
    weights_dir = bench_weights(all_ids, args.weights_dir)
    results: dict = {
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after each part: a failure later keeps what was measured
        (args.out / "results.json").write_text(json.dumps(results, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "coldstart" in parts:
            results["coldstart"] = {}
            for name, ids in sets.items():
                results["coldstart"][name] = {
                    "warm_cache": coldstart.run(weights_dir, ids, args.runs, cold_cache=False)
                }
                if drop_page_cache():
                    results["coldstart"][name]["cold_cache"] = coldstart.run(
                        weights_dir, ids, args.runs, cold_cache=True
                    )
                report.print_coldstart(name, results["coldstart"][name])
                save()
        if "serving" in parts:
            results["serving"] = {
                "bare": {serve_model: serving.bare(weights_dir, serve_model, load["n"])},
                "backend": serving.backend_run(weights_dir, [serve_model], work, **load),
            }
            big = sets.get("v2")
            if big:
                results["serving"]["memory_v2"] = serving.backend_run(
                    weights_dir, big, work, n=5, clients=(), seconds=0
                )
            report.print_serving(results["serving"], serve_model)
            save()
        if "knobs" in parts:
            results["knobs"] = {}
            for name, env in KNOBS.items():
                run = serving.backend_run(
                    weights_dir, [serve_model], work, env=env, n=20, clients=(1, 4), seconds=10
                )
                results["knobs"][name] = run["models"][serve_model]
            report.print_knobs(results["knobs"])
            save()
        if "containers" in parts:
            results["containers"] = containers.run(sets, args.runs, work)
            report.print_containers(results["containers"])
    save()
    report.chart(results, args.out / "chart.png", serve_model)
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'chart.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
