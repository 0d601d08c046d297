"""Serving: /predict latency and throughput against the bare models, and memory.

The bare baselines each run in a fresh process, like the backend's worker (the harness's own
threads and children must not slow them down), on the same 640x480 JPEG:
- torch: decode + torchvision's transforms + eager forward (torch threads = CPUs);
- ort: decode + the runtime's preprocessing + an ONNX Runtime session with default options;
- ort-ours: the same with the backend's session settings and allocator (runtime/settings.py,
  backend/process.py): what the server adds, and nothing else.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from PIL import Image

from benchmarks.harness import (
    BACKEND,
    ROOT,
    first_prediction,
    launch,
    median,
    model_files_mib,
    percentile,
    rss_mb,
    test_image,
)


def bare(kind: str, source_dir: Path, model_id: str, n: int) -> dict:
    """`kind` "torch" (a weights directory), "ort" or "ort-ours" (a bundles directory), in a
    fresh process."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", kind, str(source_dir), model_id, str(n)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bare_torch(weights_dir: Path, model_id: str):
    import os

    import torch

    from weights.store import WeightsStore

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    store = WeightsStore(weights_dir)
    module = store.load(model_id, allow_untrained=True)
    transforms = store.fetched(model_id).catalog_entry().transforms()

    def forward(image: Image.Image) -> None:
        with torch.inference_mode():
            module(transforms(image).unsqueeze(0))

    return forward


def _bare_ort(bundles_dir: Path, model_id: str, ours: bool = False):
    import onnxruntime as ort

    from runtime.bundle import Bundle

    options = None
    if ours:
        from backend.process import allocator_for_loading, allocator_for_serving
        from runtime.session import session_options
        from runtime.settings import SessionSettings, available_cpus

        allocator_for_loading()
        options = session_options(SessionSettings(threads=available_cpus()))
    bundle = Bundle.read(bundles_dir / model_id, fix="-")
    session = ort.InferenceSession(str(bundle.graph), options, providers=["CPUExecutionProvider"])
    if ours:
        allocator_for_serving()
    name = session.get_inputs()[0].name
    preprocessing = bundle.manifest.preprocessing

    def forward(image: Image.Image) -> None:
        session.run(None, {name: preprocessing.batch([image])})

    return forward


def _bare_in_process(kind: str, source_dir: Path, model_id: str, n: int) -> dict:
    if kind == "torch":
        forward = _bare_torch(source_dir, model_id)
    else:
        forward = _bare_ort(source_dir, model_id, ours=kind == "ort-ours")
    data = test_image()

    def once() -> float:
        start = time.perf_counter()
        forward(Image.open(io.BytesIO(data)).convert("RGB"))
        return time.perf_counter() - start

    for _ in range(3):
        once()
    times = [once() for _ in range(n)]
    return {
        "p50_ms": median(times) * 1000,
        "p95_ms": percentile(times, 0.95) * 1000,
        "throughput_rps": 1 / (sum(times) / len(times)),
    }


def _post(url: str, model: str, data: bytes, session: requests.Session) -> int:
    response = session.post(
        f"{url}/predict",
        files={"image": ("x.jpg", data, "image/jpeg")},
        data={"model": model},
        timeout=120,
    )
    return response.status_code


def latency(url: str, model: str, n: int) -> dict:
    data = test_image()
    times = []
    with requests.Session() as session:
        for _ in range(3):
            _post(url, model, data, session)
        for _ in range(n):
            start = time.perf_counter()
            status = _post(url, model, data, session)
            times.append(time.perf_counter() - start)
            assert status == 200, status
    return {
        "p50_ms": median(times) * 1000,
        "p95_ms": percentile(times, 0.95) * 1000,
        "p99_ms": percentile(times, 0.99) * 1000,
    }


def throughput(url: str, model: str, clients: int, seconds: float) -> dict:
    data = test_image()
    ok = errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client() -> None:
        nonlocal ok, errors
        with requests.Session() as session:
            while time.perf_counter() < stop_at:
                try:
                    status = _post(url, model, data, session)
                except requests.RequestException:
                    status = 0
                with lock:
                    if status == 200:
                        ok += 1
                    else:
                        errors += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"clients": clients, "rps": ok / elapsed, "ok": ok, "errors": errors}


def _wait_for_reference_checks(url: str, ids: list[str], timeout: float = 60) -> None:
    """Until every model has run its reference check (it follows the first answers)."""
    deadline = time.monotonic() + timeout
    for model_id in ids:
        while not requests.get(f"{url}/models/{model_id}", timeout=10).json()["reference_checked"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{model_id}: no reference check within {timeout} s")
            time.sleep(0.05)


def backend_run(
    bundles_dir: Path,
    ids: list[str],
    work: Path,
    *,
    env: dict | None = None,
    n: int = 30,
    clients: tuple[int, ...] = (1, 2, 4, 8),
    seconds: float = 12.0,
) -> dict:
    """Start the backend with `env`; measure start, memory, latency and throughput.

    Memory is the worker's after its first prediction (what the targets name), and again at
    the end, after every measurement (what an instance settles at).
    """
    target = launch(
        BACKEND,
        {
            "BUNDLES_DIR": str(bundles_dir),
            "MODELS": ",".join(ids),
            "ALLOW_UNTRAINED_WEIGHTS": "1",
            **(env or {}),
        },
        work / "serving.log",
    )
    try:
        ready_at = first_prediction(target, test_image(), ids[0])
        files_mib = model_files_mib(bundles_dir, ids)
        memory = rss_mb(target.worker_pid())
        result = {
            "start_s": ready_at - target.launched_at,
            "memory_mb": memory,
            "model_files_mib": files_mib,
            "rss_over_files_mib": memory["VmRSS"] - files_mib,
            "models": {},
        }
        _wait_for_reference_checks(target.url, ids)  # one forward pass each, not in a sample
        for model_id in ids:
            result["models"][model_id] = {
                "latency": latency(target.url, model_id, n),
                "throughput": [throughput(target.url, model_id, c, seconds) for c in clients],
            }
        end = rss_mb(target.worker_pid())
        result["memory_end_mb"] = end
        result["rss_over_files_end_mib"] = end["VmRSS"] - files_mib
        return result
    finally:
        target.stop()


if __name__ == "__main__":
    kind, directory, model, count = sys.argv[1:5]
    print(json.dumps(_bare_in_process(kind, Path(directory), model, int(count))))
