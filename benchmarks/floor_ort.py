"""The ONNX Runtime floor of a cold start: import, open the graph(s), decode one image, forward.

    python benchmarks/floor_ort.py [--ours] [--fixed-mmap-threshold] [--image JPEG] GRAPH [...]

The least a process can do to answer an image with these models: import onnxruntime, open
each bundle's graph one after another, decode the image and preprocess it as the bundle says
(runtime/preprocess.py: Pillow and numpy), run one forward pass per graph. By default the
sessions take ONNX Runtime's default options, the way anyone would first use it. --ours opens
them with the backend's session settings (runtime/settings.py) and --fixed-mmap-threshold
applies the backend's allocator setting (backend/process.py). Without --image, a zero tensor
is the input (no decode phase).

Prints one JSON line: each phase's end in seconds from the process's own start (as the backend
logs its phases, backend/start_trace.py), `process_started_at` on the wall clock, the
process's memory after the forward passes, and what importing the backend's modules for
--ours or --fixed-mmap-threshold added to it (`ours_imports_mib`: a server needs its own).
"""

import json
import os
import sys
import time


def _since_start() -> float:
    """Seconds since this process started (the kernel's record, /proc/self/stat)."""
    with open("/proc/self/stat") as stat:
        ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")


def _memory_mib() -> dict[str, float]:
    """The process's resident memory, from the kernel's own counters."""
    memory = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                memory[key] = int(value.split()[0]) / 1024
    return memory


marks = {"interpreter": _since_start()}
args = sys.argv[1:]
ours = "--ours" in args
fixed = "--fixed-mmap-threshold" in args
image_path = args[args.index("--image") + 1] if "--image" in args else None
paths = [a for a in args if not a.startswith("--") and a != image_path]
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

if image_path is not None:
    from PIL import Image  # as the backend imports it: before anything opens

marks["imported"] = _since_start()
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
before_ours = _memory_mib()["VmRSS"]
if fixed:  # as the serving process: one threshold while the sessions open, one to serve
    from backend.process import allocator_for_loading, allocator_for_serving

    allocator_for_loading()
options = None
if ours:
    from runtime.session import session_options, share_one_thread_pool
    from runtime.settings import SessionSettings, available_cpus

    settings = SessionSettings(threads=available_cpus())
    share_one_thread_pool(settings)  # as the serving process
    options = session_options(settings)
# What importing the backend's modules (for its settings and allocator) adds to the process.
marks["ours_imports_mib"] = _memory_mib()["VmRSS"] - before_ours
start = time.time()
sessions = [ort.InferenceSession(p, options, providers=["CPUExecutionProvider"]) for p in paths]
marks["open_s"] = time.time() - start
if fixed:
    allocator_for_serving()
marks["opened"] = _since_start()
batches = [np.zeros((1, 3, 224, 224), dtype=np.float32)] * len(paths)
if image_path is not None:  # decode once; each model's own resize and crop
    from runtime.bundle import MANIFEST, Manifest

    with Image.open(image_path) as image:
        rgb = image.convert("RGB")
    batches = []
    for path in paths:
        with open(os.path.join(os.path.dirname(path), MANIFEST)) as manifest:
            batches.append(Manifest.from_json(manifest.read()).preprocessing.batch([rgb]))
marks["decoded"] = _since_start()
start = time.time()
for session, batch in zip(sessions, batches, strict=True):
    session.run(None, {session.get_inputs()[0].name: batch})
marks["forward_s"] = time.time() - start
marks["done"] = _since_start()
marks["process_started_at"] = time.time() - marks["done"]
marks["memory_mb"] = _memory_mib()
print(json.dumps(marks), flush=True)
