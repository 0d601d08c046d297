"""The ONNX Runtime floor of a cold start: import, open the session(s), one forward; nothing else.

    python benchmarks/floor_ort.py [--ours] [--fixed-mmap-threshold] GRAPH [GRAPH ...]

By default the sessions take ONNX Runtime's default options, the way anyone would first use
it. --ours opens them with the backend's session settings (runtime/settings.py) and
--fixed-mmap-threshold applies the backend's allocator setting (backend/process.py): the
benchmarks' "allocator" part compares the two. Prints one JSON line of wall-clock timestamps
and the process's memory after the forward passes.
"""

import json
import sys
import time

marks = {"started": time.time()}
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

marks["imported"] = time.time()
args = sys.argv[1:]
ours = "--ours" in args
fixed = "--fixed-mmap-threshold" in args
paths = [a for a in args if not a.startswith("--")]
if ours or fixed:  # the project's modules, only where asked for: the floor imports nothing more
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
if fixed:
    from backend.process import bound_allocator

    bound_allocator()
options = None
if ours:
    from runtime.session import session_options
    from runtime.settings import SessionSettings, available_cpus

    options = session_options(SessionSettings(threads=available_cpus()))
start = time.time()
sessions = [ort.InferenceSession(p, options, providers=["CPUExecutionProvider"]) for p in paths]
marks["open_s"] = time.time() - start
start = time.time()
for session in sessions:
    name = session.get_inputs()[0].name
    session.run(None, {name: np.zeros((1, 3, 224, 224), dtype=np.float32)})
marks["forward_s"] = time.time() - start
marks["done"] = time.time()
memory = {}
with open("/proc/self/status") as status:
    for line in status:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            memory[key] = int(value.split()[0]) / 1024
marks["memory_mb"] = memory
print(json.dumps(marks), flush=True)
