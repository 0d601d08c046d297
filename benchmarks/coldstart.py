"""Cold start: launch to first successful prediction, four ways, broken into phases.

(a) baked       our backend: bundles on disk, verified, opened in ONNX Runtime, warmed up
(b) download    the assignment's way: torch, weights downloaded at start (from 127.0.0.1)
(c) torch floor a bare process: import torch+torchvision, read, build, one forward pass
(d) ort floor   a bare process: import onnxruntime, open the session(s), one forward pass
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    FileServer,
    architecture,
    drop_page_cache,
    first_prediction,
    graphs,
    gunicorn,
    launch,
    log_time,
    median,
    test_image,
    weight_files,
)

VARIANTS = ("baked", "download", "torch_floor", "ort_floor")


def baked(bundles_dir: Path, ids: list[str], work: Path, extra_env: dict | None = None) -> dict:
    target = launch(
        gunicorn(),
        {
            "BUNDLES_DIR": str(bundles_dir),
            "MODELS": ",".join(ids),
            "ALLOW_UNTRAINED_WEIGHTS": "1",
            **(extra_env or {}),
        },
        work / "baked.log",
    )
    try:
        done = first_prediction(target, test_image(), ids[0])
        events = target.events()
    finally:
        target.stop()
    loading = next(e for e in events if e.get("event") == "loading")
    ready = next(e for e in events if e.get("event") == "ready")
    loaded = [e["timings_ms"] for e in events if e.get("event") == "model_loaded"]
    hashed = [e["verify_ms"] for e in events if e.get("event") == "bundle_verified"]
    phases = {
        "import": log_time(loading) - target.launched_at,  # python, gunicorn, flask, ort
        "load": ready["load_ms"] / 1000,  # every bundle verified, opened, warmed up
        "first_request": done - log_time(ready),
    }
    # What the load did, summed over the models (they load side by side: more than its time).
    work = {f"{k}_total": sum(t[k] for t in loaded) / 1000 for k in ("open", "warm_up")}
    work["verify_total"] = sum(hashed) / 1000
    return {"total": done - target.launched_at, "phases": phases, "load_work": work}


def download(weights_dir: Path, ids: list[str], work: Path) -> dict:
    server = FileServer(weights_dir)
    files = weight_files(weights_dir, ids)
    spec = ",".join(f"{architecture(i)}={server.url}/{files[i].name}" for i in ids)
    target = launch(
        gunicorn("benchmarks.assignment_app:app"), {"BENCH_MODELS": spec}, work / "download.log"
    )
    try:
        done = first_prediction(target, test_image(), architecture(ids[0]))
        events = target.events()
    finally:
        target.stop()
        server.close()
    imported = next(e for e in events if e.get("event") == "imported")
    ready = next(e for e in events if e.get("event") == "ready")
    loads = [e for e in events if e.get("event") == "model_loaded"]
    phases = {
        "import": imported["t_imported"] - target.launched_at,
        "download": sum(e["download_s"] for e in loads),
        "build": sum(e["build_s"] + e["load_s"] for e in loads),
        "first_request": done - log_time(ready),
    }
    return {"total": done - target.launched_at, "phases": phases}


def _marks(script: str, args: list[str]) -> tuple[float, dict]:
    launched = time.time()
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return launched, json.loads(out.stdout.strip().splitlines()[-1])


def torch_floor(weights_dir: Path, ids: list[str]) -> dict:
    files = weight_files(weights_dir, ids)
    launched, marks = _marks("floor.py", [f"{architecture(i)}={files[i]}" for i in ids])
    phases = {
        "import": marks["imported"] - launched,
        "read": marks["read_s"],
        "build": marks["build_s"],
        "forward": marks["forward_s"],
    }
    return {"total": marks["done"] - launched, "phases": phases}


def ort_floor(bundles_dir: Path, ids: list[str]) -> dict:
    launched, marks = _marks("floor_ort.py", [str(p) for p in graphs(bundles_dir, ids).values()])
    phases = {
        "import": marks["imported"] - launched,
        "open": marks["open_s"],
        "forward": marks["forward_s"],
    }
    return {"total": marks["done"] - launched, "phases": phases}


def run(weights_dir: Path, bundles_dir: Path, ids: list[str], runs: int, cold_cache: bool) -> dict:
    """Median of `runs` starts of each variant, interleaved so drift hits all alike."""
    samples: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(runs):
            for name in VARIANTS:
                if cold_cache and not drop_page_cache():
                    raise PermissionError("cannot drop the page cache (needs root)")
                if name == "baked":
                    samples[name].append(baked(bundles_dir, ids, work))
                elif name == "download":
                    samples[name].append(download(weights_dir, ids, work))
                elif name == "torch_floor":
                    samples[name].append(torch_floor(weights_dir, ids))
                else:
                    samples[name].append(ort_floor(bundles_dir, ids))
    result = {}
    for name, runs_of in samples.items():
        phases = {k: median([r["phases"][k] for r in runs_of]) for k in runs_of[0]["phases"]}
        result[name] = {
            "total_s": median([r["total"] for r in runs_of]),
            "all_s": [round(r["total"], 3) for r in runs_of],
            "phases_s": phases,
        }
        if "load_work" in runs_of[0]:
            work = runs_of[0]["load_work"]
            result[name]["load_work_s"] = {
                k: median([r["load_work"][k] for r in runs_of]) for k in work
            }
    return result
