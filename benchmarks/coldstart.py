"""Cold start: launch to first successful prediction, five ways, broken into phases.

(a) baked          our backend: bundles on disk, verified, opened in ONNX Runtime (each model's
                   reference check follows its first answers);
                   done when every model has answered one POST /predict; beside the client,
                   Cloud Run's startup probe (GET /ready once a second from the launch) says
                   when Cloud Run would route the first request to it (`probe`)
(b) download       the assignment's way: torch, weights downloaded at start (from 127.0.0.1)
(c) torch floor    a bare process: import torch+torchvision, read, build, one forward pass
(d) ort floor      a bare process: import onnxruntime, open the graph(s) one after another with
                   ONNX Runtime's default options, decode one image, one forward pass each
(e) ort floor ours the same with the backend's session settings and allocator

The backend logs each phase of its start (backend/start_trace.py); `trace` is those phases on
one timeline from the launch, for the run of median total, beside the floors' own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    BACKEND,
    ROOT,
    FileServer,
    StartupProbe,
    architecture,
    drop_page_cache,
    first_prediction,
    graphs,
    launch,
    log_time,
    median,
    test_image,
    weight_files,
)

# The assignment's app, served as Cloud Run's Python sample serves one (gunicorn binds $PORT).
ASSIGNMENT = (
    sys.executable,
    "-m",
    "gunicorn",
    "--workers",
    "1",
    "--threads",
    "8",
    "--timeout",
    "0",
    "--no-control-socket",  # its default path is one per user: starts side by side collide
    "benchmarks.assignment_app:app",
)
VARIANTS = ("baked", "download", "torch_floor", "ort_floor", "ort_floor_ours")
# The backend's sequential phases, launch to first answer (the rest overlaps inside "load").
BACKEND_PHASES = ("interpreter", "imports", "settings", "bundles", "load")


def _all_answered(target, ids: list[str]) -> float:
    """Wall-clock time when every model in `ids` has answered a POST /predict with 200."""
    image = test_image()
    done = first_prediction(target, image, ids[0])
    for model_id in ids[1:]:
        done = first_prediction(target, image, model_id)
    return done


def backend_trace(events: list[dict], launched_at: float) -> list[dict]:
    """The backend's logged start phases as spans in seconds from the launch."""
    spans = []
    for event in events:
        if event.get("event") != "start_phase":
            continue
        offset = event["process_started_at"] - launched_at  # fork and exec, to 10 ms
        label = event["phase"] + (f" {event['model']}" if event.get("model") else "")
        start = 0.0 if event["phase"] == "interpreter" else offset + event["start_ms"] / 1000
        spans.append({"phase": label, "start": start, "end": offset + event["end_ms"] / 1000})
    return spans


def baked(bundles_dir: Path, ids: list[str], work: Path, extra_env: dict | None = None) -> dict:
    target = launch(
        BACKEND,
        {
            "BUNDLES_DIR": str(bundles_dir),
            "MODELS": ",".join(ids),
            "ALLOW_UNTRAINED_WEIGHTS": "1",
            **(extra_env or {}),
        },
        work / "baked.log",
    )
    try:
        probe = StartupProbe(target)
        done = _all_answered(target, ids)
        probe_s = probe.passed()
        events = target.events()
    finally:
        target.stop()
    trace = backend_trace(events, target.launched_at)
    spans = {s["phase"]: s for s in trace}
    phases = {name: spans[name]["end"] - spans[name]["start"] for name in BACKEND_PHASES}
    # Between the checks and the load: the app built, the loader started.
    phases["app"] = spans["load"]["start"] - spans["bundles"]["end"]
    done -= target.launched_at  # from here on, seconds from the launch
    phases["first_requests"] = done - spans["load"]["end"]
    # When Cloud Run's probe would see the instance ready, after the load ended (a probe's
    # period at most; the probe's own answer at least).
    phases["probe_after_load"] = probe_s - spans["load"]["end"]
    trace.append(
        {
            "phase": "answered (client)",
            "start": spans["load"]["end"],
            "end": done,
        }
    )
    # What the load did, summed over the models (they load side by side: more than its time).
    work = {
        f"{kind}_total": sum(
            s["end"] - s["start"] for s in trace if s["phase"].startswith(kind + " ")
        )
        for kind in ("digest_data", "digest_graph", "open")
    }
    trace.append({"phase": "startup probe passed", "start": probe_s, "end": probe_s})
    return {"total": done, "phases": phases, "load_work": work, "trace": trace}


def download(weights_dir: Path, ids: list[str], work: Path) -> dict:
    server = FileServer(weights_dir)
    files = weight_files(weights_dir, ids)
    spec = ",".join(f"{architecture(i)}={server.url}/{files[i].name}" for i in ids)
    hub = Path(tempfile.mkdtemp(prefix="hub-", dir=work))  # new and empty: this start downloads
    target = launch(
        ASSIGNMENT,
        {"BENCH_MODELS": spec, "BENCH_HUB_DIR": str(hub)},
        work / "download.log",
    )
    try:
        done = first_prediction(target, test_image(), architecture(ids[0]))
        events = target.events()
    finally:
        target.stop()
        server.close()
        shutil.rmtree(hub)
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
    """Run a floor script; its launch (wall clock) and the JSON line it prints."""
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


def ort_floor(bundles_dir: Path, ids: list[str], work: Path, ours: bool = False) -> dict:
    image = work / "image.jpg"
    image.write_bytes(test_image())
    flags = ["--ours", "--fixed-mmap-threshold"] if ours else []
    paths = [str(p) for p in graphs(bundles_dir, ids).values()]
    launched, marks = _marks("floor_ort.py", [*flags, "--image", str(image), *paths])
    offset = marks["process_started_at"] - launched
    ends = {k: offset + marks[k] for k in ("interpreter", "imported", "opened", "decoded", "done")}
    names = {"interpreter": "interpreter", "imported": "import", "opened": "open",
             "decoded": "decode", "done": "forward"}  # fmt: skip
    trace, start = [], 0.0
    for key, end in ends.items():
        trace.append({"phase": names[key], "start": start, "end": end})
        start = end
    phases = {s["phase"]: s["end"] - s["start"] for s in trace}
    return {"total": ends["done"], "phases": phases, "trace": trace}


def run(
    weights_dir: Path,
    bundles_dir: Path,
    ids: list[str],
    runs: int,
    cold_cache: bool,
    variants: tuple[str, ...] = VARIANTS,
) -> dict:
    """Median of `runs` starts of each variant, interleaved so drift hits all alike."""
    samples: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(runs):
            for name in variants:
                if cold_cache and not drop_page_cache():
                    raise PermissionError("cannot drop the page cache (needs root)")
                if name == "baked":
                    samples[name].append(baked(bundles_dir, ids, work))
                elif name == "download":
                    samples[name].append(download(weights_dir, ids, work))
                elif name == "torch_floor":
                    samples[name].append(torch_floor(weights_dir, ids))
                else:
                    samples[name].append(ort_floor(bundles_dir, ids, work, name.endswith("ours")))
    result = {}
    for name, runs_of in samples.items():
        phases = {k: median([r["phases"][k] for r in runs_of]) for k in runs_of[0]["phases"]}
        result[name] = {
            "total_s": median([r["total"] for r in runs_of]),
            "all_s": [round(r["total"], 3) for r in runs_of],
            "phases_s": phases,
        }
        totals = [r["total"] for r in runs_of]
        typical = runs_of[totals.index(sorted(totals)[(len(totals) - 1) // 2])]
        if "trace" in typical:
            result[name]["trace"] = typical["trace"]  # the run of median total
        if "load_work" in runs_of[0]:
            work = runs_of[0]["load_work"]
            result[name]["load_work_s"] = {
                k: median([r["load_work"][k] for r in runs_of]) for k in work
            }
    return result
