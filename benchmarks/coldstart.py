"""Cold start: launch to first successful prediction, three ways, broken into phases.

(a) baked   our backend: weights on disk, verified, loaded, warmed up (gunicorn)
(b) download the assignment's way: weights downloaded at start (from 127.0.0.1)
(c) floor   a bare process: import torch+torchvision, read, build, one forward pass
"""

from __future__ import annotations

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
    gunicorn,
    launch,
    log_time,
    median,
    test_image,
    weight_files,
)


def baked(weights_dir: Path, ids: list[str], work: Path, extra_env: dict | None = None) -> dict:
    target = launch(
        gunicorn(),
        {
            "WEIGHTS_DIR": str(weights_dir),
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
    verified = next(e for e in events if e.get("event") == "verified")
    phases = {"import": log_time(loading) - target.launched_at}
    loaded = [e["timings_ms"] for e in events if e.get("event") == "model_loaded"]
    # All files are hashed side by side first ("verified"); each load then only checks.
    phases["verify"] = verified["verify_ms"] / 1000 + sum(t["verify"] for t in loaded) / 1000
    for key in ("read", "build", "warm_up"):
        phases[key] = sum(t[key] for t in loaded) / 1000
    phases["first_request"] = done - log_time(ready)
    return {"total": done - target.launched_at, "phases": phases}


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


def floor(weights_dir: Path, ids: list[str]) -> dict:
    files = weight_files(weights_dir, ids)
    args = [f"{architecture(i)}={files[i]}" for i in ids]
    launched = time.time()
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "floor.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    marks = json.loads(out.stdout.strip().splitlines()[-1])
    phases = {
        "import": marks["imported"] - launched,
        "read": marks["read_s"],
        "build": marks["build_s"],
        "forward": marks["forward_s"],
    }
    return {"total": marks["done"] - launched, "phases": phases}


def run(weights_dir: Path, ids: list[str], runs: int, cold_cache: bool) -> dict:
    """Median of `runs` starts of each variant, interleaved so drift hits all alike."""
    samples: dict[str, list[dict]] = {"baked": [], "download": [], "floor": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(runs):
            for name in samples:
                if cold_cache and not drop_page_cache():
                    raise PermissionError("cannot drop the page cache (needs root)")
                if name == "baked":
                    samples[name].append(baked(weights_dir, ids, work))
                elif name == "download":
                    samples[name].append(download(weights_dir, ids, work))
                else:
                    samples[name].append(floor(weights_dir, ids))
    result = {}
    for name, runs_of in samples.items():
        phases = {k: median([r["phases"][k] for r in runs_of]) for k in runs_of[0]["phases"]}
        result[name] = {
            "total_s": median([r["total"] for r in runs_of]),
            "all_s": [round(r["total"], 3) for r in runs_of],
            "phases_s": phases,
        }
    return result
