"""The alternative not taken: the "all" layout saved at build time instead of made at start.

    python benchmarks/layout.py make GRAPH OUT      # open at "all", save the optimised graph
    python benchmarks/layout.py run saved|ours GRAPH [GRAPH ...]

`make` is what a build step would do: ONNX Runtime writes the graph after its layout
transforms (NCHWc convolutions, blocked for this CPU: 16 floats with AVX-512, 8 with AVX2) with
its weights as external data. `run saved` opens such graphs with optimisations off, `run ours`
opens the bundles' portable graphs at "all", as the backend does; both with the backend's other
settings and allocator. Prints one JSON line: open seconds, p50 forward per graph, memory.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnxruntime as ort

from backend.process import allocator_for_loading, allocator_for_serving
from runtime.session import session_options
from runtime.settings import SessionSettings, available_cpus


def _options(optimization: str) -> ort.SessionOptions:
    return session_options(SessionSettings(threads=available_cpus(), optimization=optimization))


def make(graph: str, out: str) -> None:
    options = _options("all")
    options.optimized_model_filepath = out
    name = Path(out).name + ".data"
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", name
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def run(kind: str, graphs: list[str]) -> dict:
    allocator_for_loading()  # as the serving process
    optimization = "disable" if kind == "saved" else "all"
    start = time.time()
    sessions = [
        ort.InferenceSession(g, _options(optimization), providers=["CPUExecutionProvider"])
        for g in graphs
    ]
    opened = time.time() - start
    allocator_for_serving()
    batch = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    p50 = []
    for session in sessions:
        name = session.get_inputs()[0].name
        times = []
        for _ in range(8):
            started = time.perf_counter()
            session.run(None, {name: batch})
            times.append(time.perf_counter() - started)
        p50.append(sorted(times[1:])[3] * 1000)  # the first is the warm-up
    memory = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                memory[key] = int(value.split()[0]) / 1024
    return {"open_s": opened, "p50_ms": p50, "memory_mb": memory}


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    else:
        print(json.dumps(run(sys.argv[2], sys.argv[3:])), flush=True)
