"""Run the benchmarks: `uv run python -m benchmarks [--quick] [--only coldstart,serving,...]`.

Prints tables, writes benchmarks/out/results.json and benchmarks/out/chart.png. Weights are
random values in the real architectures (real sizes, real compute), generated once into
.local/bench-weights and compiled by the real bake step into .local/bench-bundles (both kept
between runs). See benchmarks/RESULTS.md for the committed figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import coldstart, containers, memory, report, serving
from benchmarks.harness import (
    ROOT,
    bench_bundles,
    bench_weights,
    drop_page_cache,
    graphs,
    model_files_mib,
)
from runtime.bundle import Bundle
from weights.catalog import load_catalog

# Session settings against the defaults (runtime/settings.py), one change at a time.
KNOBS = {
    "default": {},
    "optimization=extended": {"ORT_OPTIMIZATION": "extended"},
    "memory_arena=on": {"ORT_MEMORY_ARENA": "1"},
    "prepacking=on": {"ORT_PREPACKING": "1"},
    "memory_arena=on,prepacking=on (onnxruntime's own)": {
        "ORT_MEMORY_ARENA": "1",
        "ORT_PREPACKING": "1",
    },
    "spinning=off": {"ORT_SPINNING": "0"},
    "inference_concurrency=2": {"INFERENCE_CONCURRENCY": "2"},
    "inference_concurrency=2,threads=1": {"INFERENCE_CONCURRENCY": "2", "INFERENCE_THREADS": "1"},
    "inference_concurrency=8 (every request thread)": {"INFERENCE_CONCURRENCY": "8"},
}
PARTS = "export,coldstart,serving,knobs,allocator,layout,containers,memory"


def _export(bundles_dir: Path, ids: list[str]) -> dict:
    """What the bake step recorded for each bundle: export and verification."""
    out = {}
    for model_id in ids:
        manifest = Bundle.read(bundles_dir / model_id, fix="-").manifest
        out[model_id] = {
            "export_s": manifest.export_seconds,
            "verify_s": manifest.verification["seconds"],
            "worst_probability_difference": manifest.verification["worst_probability_difference"],
            "model_files_mb": sum(a.size for n, a in manifest.artifacts.items() if "onnx" in n)
            / 1e6,
        }
    return out


def _allocator(bundles_dir: Path, sets: dict[str, list[str]]) -> dict:
    """Our session settings in a bare process, with glibc's default allocator and with ours."""
    out: dict = {}
    for name, ids in sets.items():
        paths = [str(p) for p in graphs(bundles_dir, ids).values()]
        files_mib = model_files_mib(bundles_dir, ids)
        script = str(ROOT / "benchmarks" / "floor_ort.py")
        for variant, flags in (
            ("glibc_default", []),
            ("fixed_threshold", ["--fixed-mmap-threshold"]),
        ):
            done = subprocess.run(
                [sys.executable, script, "--ours", *flags, *paths],
                cwd=ROOT, capture_output=True, text=True, check=True,
            )  # fmt: skip
            marks = json.loads(done.stdout.strip().splitlines()[-1])
            out.setdefault(name, {})[variant] = {
                **marks["memory_mb"],
                "rss_over_files_mib": marks["memory_mb"]["VmRSS"] - files_mib,
                "ours_imports_mib": marks["ours_imports_mib"],
            }
    return out


def _layout(bundles_dir: Path, sets: dict[str, list[str]], work: Path) -> dict:
    """Our graphs opened at "all" against graphs saved after the layout transforms."""
    script = str(ROOT / "benchmarks" / "layout.py")
    out: dict = {}
    for name, ids in sets.items():
        ours = [str(p) for p in graphs(bundles_dir, ids).values()]
        saved = [str(work / f"{i}.layout.onnx") for i in ids]
        for graph, target in zip(ours, saved, strict=True):
            if not Path(target).exists():
                subprocess.run([sys.executable, script, "make", graph, target], check=True)
        files_mib = model_files_mib(bundles_dir, ids)
        for kind, paths in (("ours", ours), ("saved", saved)):
            done = subprocess.run(
                [sys.executable, script, "run", kind, *paths],
                cwd=ROOT, capture_output=True, text=True, check=True,
            )  # fmt: skip
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            figures["rss_over_files_mib"] = figures["memory_mb"]["VmRSS"] - files_mib
            out.setdefault(name, {})[kind] = figures
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small models, one run: a smoke test")
    parser.add_argument("--runs", type=int, default=3, help="cold starts per variant (median)")
    parser.add_argument("--only", default=PARTS, help="comma-separated parts")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=ROOT / ".local" / "bench-weights",
        help="where the generated weights are kept between runs",
    )
    parser.add_argument(
        "--bundles-dir",
        type=Path,
        default=ROOT / ".local" / "bench-bundles",
        help="where their bundles are kept between runs",
    )
    args = parser.parse_args()
    parts = set(args.only.split(","))
    catalog = load_catalog()
    sets = {"resnet152": ["resnet152"], "v2": catalog.select("v2")}
    serve_model = "resnet152"
    # requests for latency, client counts and seconds per throughput point
    load = {"n": 30, "clients": (1, 2, 4, 8), "seconds": 12.0}
    knob_load = {"n": 20, "clients": (1, 4), "seconds": 10.0}
    if args.quick:
        sets, serve_model, args.runs = {"resnet18": ["resnet18"]}, "resnet18", 1
        load = {"n": 5, "clients": (1, 2), "seconds": 2.0}
        knob_load = {"n": 3, "clients": (1,), "seconds": 1.0}
    all_ids = list(dict.fromkeys(i for ids in sets.values() for i in ids))
    weights_dir = bench_weights(all_ids, args.weights_dir)
    bundles_dir = bench_bundles(all_ids, weights_dir, args.bundles_dir)
    import onnxruntime
    import torch

    results: dict = {
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after each part: a failure later keeps what was measured
        (args.out / "results.json").write_text(json.dumps(results, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "export" in parts:
            results["export"] = _export(bundles_dir, all_ids)
            report.print_export(results["export"])
            save()
        if "coldstart" in parts:
            results["coldstart"] = {}
            for name, ids in sets.items():
                runs = {
                    "warm_cache": coldstart.run(weights_dir, bundles_dir, ids, args.runs, False)
                }
                if drop_page_cache():
                    runs["cold_cache"] = coldstart.run(
                        weights_dir, bundles_dir, ids, args.runs, True
                    )
                results["coldstart"][name] = runs
                report.print_coldstart(name, runs)
                save()
        if "serving" in parts:
            big = sets.get("v2")
            # /predict against a bare session.run for these (the v2 backend serves the others)
            latency_models = [serve_model, *(["convnext_base", "swin_b"] if big else [])]
            results["serving"] = {
                "bare_torch": {
                    serve_model: serving.bare("torch", weights_dir, serve_model, load["n"])
                },
                **{
                    f"bare_{kind.replace('-', '_')}": {
                        m: serving.bare(kind, bundles_dir, m, load["n"]) for m in latency_models
                    }
                    for kind in ("ort", "ort-ours")
                },
                "backend": serving.backend_run(bundles_dir, [serve_model], work, **load),
            }
            if big:
                results["serving"]["v2"] = serving.backend_run(
                    bundles_dir, big, work, n=load["n"], clients=(), seconds=0
                )
            report.print_serving(results["serving"], serve_model)
            report.print_latency(results["serving"], latency_models)
            save()
        if "knobs" in parts:
            results["knobs"] = {}
            for name, env in KNOBS.items():
                run = {
                    serve_model: serving.backend_run(
                        bundles_dir, [serve_model], work, env=env, **knob_load
                    )
                }
                if "v2" in sets:
                    run["v2"] = serving.backend_run(
                        bundles_dir, sets["v2"], work, env=env, n=5, clients=(), seconds=0
                    )
                results["knobs"][name] = run
                save()
            report.print_knobs(results["knobs"], serve_model)
        if "allocator" in parts:
            results["allocator"] = _allocator(bundles_dir, sets)
            report.print_allocator(results["allocator"])
            save()
        if "layout" in parts:
            results["layout"] = _layout(bundles_dir, sets, work)
            report.print_layout(results["layout"])
            save()
        if "containers" in parts:
            results["containers"] = containers.run(sets, args.runs, work)
            report.print_containers(results["containers"])
            save()
        if "memory" in parts:
            images = memory.worst_images(ROOT / ".local" / "bench-memory")
            results["memory"] = {"backend": {}}
            # v1, v2, and each model alone as its v3 service runs it.
            memory_sets = {**sets, **{f"v3 {i}": [i] for i in sets.get("v2", [])}}
            for name, ids in memory_sets.items():
                results["memory"]["backend"][name] = memory.backend(
                    bundles_dir, ids, images, work, threads=int(memory.deployed("BACKEND_THREADS"))
                )
                memory.print_backend(name, results["memory"]["backend"][name])
                save()
            results["memory"]["frontend"] = memory.frontend(
                images,
                work,
                sessions=memory.BROWSER_SESSIONS,
                deployed=int(memory.deployed("FRONTEND_CONCURRENCY")),
            )
            memory.print_frontend(results["memory"]["frontend"])
            results["memory"]["reduced_jpeg_decode"] = memory.draft_effect(
                bundles_dir, all_ids, smallest=(1024, 2048)
            )
            memory.print_draft(results["memory"]["reduced_jpeg_decode"])
            save()
    save()
    report.chart(results, args.out / "chart.png", serve_model)
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'chart.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
