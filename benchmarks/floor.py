"""The floor of a cold start: import, read the weights, build, one forward pass; nothing else.

    python benchmarks/floor.py ARCH=FILE [ARCH=FILE ...]

Prints one JSON line of wall-clock timestamps (time.time()) after each phase, so the
harness can break the time since it launched this process into the same phases as the
backend's. Uses the fastest honest way we know (mmap + meta-device build + assign).
"""

import json
import sys
import time

import torch
from torchvision.models import get_model

marks = {"imported": time.time()}
models = []
read_s = build_s = 0.0
for spec in sys.argv[1:]:
    arch, path = spec.split("=", 1)
    start = time.time()
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    read_s += time.time() - start
    start = time.time()
    with torch.device("meta"):
        module = get_model(arch, weights=None)
    module.load_state_dict(state, strict=True, assign=True)
    models.append(module.eval())
    build_s += time.time() - start
marks["read_s"], marks["build_s"] = read_s, build_s
start = time.time()
with torch.inference_mode():
    for module in models:
        module(torch.rand(1, 3, 224, 224))
marks["forward_s"] = time.time() - start
marks["done"] = time.time()
print(json.dumps(marks), flush=True)
