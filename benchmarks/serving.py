"""Serving: /predict latency and throughput against the bare model, and memory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
import torch
from PIL import Image

from benchmarks.harness import (
    ROOT,
    first_prediction,
    gunicorn,
    launch,
    median,
    percentile,
    rss_mb,
    test_image,
    weight_files,
)
from weights.store import WeightsStore


def bare(weights_dir: Path, model_id: str, n: int) -> dict:
    """Decode + preprocess + forward of the same image, no HTTP, in a fresh process.

    A process of its own, like the backend's worker: the harness's own threads and
    children must not slow the baseline down.
    """
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", str(weights_dir), model_id, str(n)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bare_in_process(weights_dir: Path, model_id: str, n: int) -> dict:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    loaded = WeightsStore(weights_dir).load(model_id, allow_untrained=True)
    transforms = loaded.entry.transforms()
    data = test_image()

    def once() -> float:
        start = time.perf_counter()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        with torch.inference_mode():
            loaded.module(transforms(image).unsqueeze(0))
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


def backend_run(
    weights_dir: Path,
    ids: list[str],
    work: Path,
    *,
    env: dict | None = None,
    n: int = 30,
    clients: tuple[int, ...] = (1, 2, 4, 8),
    seconds: float = 12.0,
) -> dict:
    """Start the backend with `env`, then measure memory, latency and throughput."""
    target = launch(
        gunicorn(),
        {
            "WEIGHTS_DIR": str(weights_dir),
            "MODELS": ",".join(ids),
            "ALLOW_UNTRAINED_WEIGHTS": "1",
            **(env or {}),
        },
        work / "serving.log",
    )
    try:
        first_prediction(target, test_image(), ids[0])
        memory = rss_mb(target.worker_pid())
        files_mb = sum(p.stat().st_size for p in weight_files(weights_dir, ids).values()) / 2**20
        result = {"memory_mb": memory, "weights_mb": files_mb, "models": {}}
        for model_id in ids:
            result["models"][model_id] = {
                "latency": latency(target.url, model_id, n),
                "throughput": [throughput(target.url, model_id, c, seconds) for c in clients],
            }
        return result
    finally:
        target.stop()


if __name__ == "__main__":
    print(json.dumps(_bare_in_process(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))))
