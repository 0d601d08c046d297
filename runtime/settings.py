"""How ONNX Runtime should run a bundle, as plain data.

No onnxruntime import here: settings are plain data, read and checked (the backend's settings,
the bake step) without loading ONNX Runtime. Only runtime/session.py imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, bounded by a cgroup v2 quota if any."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


@dataclass(frozen=True)
class SessionSettings:
    """How ONNX Runtime runs a bundle (docs/architecture.md, "Session settings").

    threads: intra-op threads of one forward pass (the backend: the CPUs it may use).
    optimization: graph optimisation level. "all" adds the layout transforms (NCHWc convolutions)
        that make convolutional models ~1.5x faster on x86; they are applied when the session
        opens, on the machine that serves, never saved into the bundle (a saved layout is
        specific to the CPU that made it).
    memory_arena: ONNX Runtime's own memory arena for activations. Off, buffers come from the
        C allocator and go back when freed (with `backend.process` bounding what glibc keeps).
    prepacking: repack MatMul/Gemm weights for the CPU's kernels at load. Off, a v2 instance
        starts ~2.4 s sooner (5.3 s against 2.9 s); on, with the memory arena, convnext_base and
        swin_b run 1.3-1.45x faster. resnet152 and vgg16 hardly change either way.
    spinning: let the intra-op threads spin for a moment after work instead of sleeping.
    """

    threads: int = 1
    optimization: str = "all"
    memory_arena: bool = False
    prepacking: bool = False
    spinning: bool = True

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}")
