"""A bundle opened in ONNX Runtime: a batch in, class probabilities out.

The backend builds one `ModelSession` per bundle at start; the bake step builds one to verify
a bundle before it is written. How sessions run (runtime/settings.py) is what
benchmarks/RESULTS.md measured.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state
from PIL import Image

from runtime.bundle import Bundle, BundleError
from runtime.settings import SessionSettings

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
ERRORS_ONLY = 3  # ONNX Runtime's log severity: 0 verbose ... 3 error, 4 fatal
# What InferenceSession raises for a graph it cannot load: its own classes, none of them a
# RuntimeError or an OSError.
_LOAD_ERRORS = (
    _ort_state.Fail,
    _ort_state.InvalidArgument,
    _ort_state.InvalidGraph,
    _ort_state.InvalidProtobuf,
    _ort_state.NoSuchFile,
    _ort_state.NotImplemented,
    _ort_state.RuntimeException,
)
# The intra-op threads of this process's one shared pool, once `share_one_thread_pool` made it.
_shared_pool_threads: int | None = None


def share_one_thread_pool(settings: SessionSettings) -> None:
    """Run the forward passes of every session this process opens from now on on one intra-op
    pool of `settings.threads` threads (ONNX Runtime's global pool) instead of a pool per
    session; nothing where `settings.spinning` is off.

    A session's own pool starts cold: its first forward pass paid for it (v2's four first
    forwards took 0.95-1.01 s with a pool each, 0.87-0.88 s on one pool; the next ones the
    same). One pool is also what one inference thread needs: a pool per model left threads
    idle. The shared pool always spins (ONNX Runtime's Python API cannot turn that off), so
    with spinning off each session keeps its own. Once it exists, ONNX Runtime refuses a
    session with a pool of its own: call it before the process's first session (the serving
    process does; the bake step and the tests keep a pool per session).
    """
    global _shared_pool_threads
    if not settings.spinning:
        return
    if _shared_pool_threads is None:
        _ort_state.set_global_thread_pool_sizes(settings.threads, 1)
        _shared_pool_threads = settings.threads
    elif _shared_pool_threads != settings.threads:
        raise RuntimeError(f"this process already shares a pool of {_shared_pool_threads} threads")


def session_options(settings: SessionSettings) -> ort.SessionOptions:
    """ONNX Runtime's options for `settings` (threads and spinning: the shared pool's, if this
    process has one)."""
    options = ort.SessionOptions()
    if _shared_pool_threads is None:
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if settings.spinning else "0"
        )
    else:
        options.use_per_session_threads = False
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _LEVELS[settings.optimization]
    options.enable_cpu_mem_arena = settings.memory_arena
    options.log_severity_level = ERRORS_ONLY
    if not settings.prepacking:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return options


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (the probabilities a client sees)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_classes(probabilities: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k most probable (class index, probability) of one row, best first."""
    k = min(k, probabilities.shape[-1])
    best = np.argpartition(-probabilities, k - 1)[:k]
    best = best[np.argsort(-probabilities[best], kind="stable")]
    return [(int(i), float(probabilities[i])) for i in best]


class ModelSession:
    """One bundle, opened: its preprocessing, categories and forward pass."""

    def __init__(self, bundle: Bundle, settings: SessionSettings) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        if self.manifest.precision == "int8":
            # int8 kernels pack their weights at load; unpacked, an int8 resnet18 ran slower
            # than its fp32 graph (bake/quantize.py measures the graph opened this way).
            settings = replace(settings, prepacking=True)
        try:
            self._session = ort.InferenceSession(
                str(bundle.graph), session_options(settings), providers=["CPUExecutionProvider"]
            )
        except _LOAD_ERRORS as exc:
            raise BundleError(
                f"ONNX Runtime cannot open the graph of {bundle.id!r} ({bundle.graph}): {exc}"
            ) from exc
        self._input = self._session.get_inputs()[0].name

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def categories(self) -> list[str]:
        return self.manifest.categories

    @property
    def untrained(self) -> bool:
        return self.manifest.untrained

    def preprocess(self, images: list[Image.Image]) -> np.ndarray:
        return self.manifest.preprocessing.batch(images)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """The model's raw output for a (N, 3, H, W) float32 batch."""
        return self._session.run(None, {self._input: batch})[0]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return softmax(self.logits(batch))

    def check_reference(self) -> None:
        """Answer the bundle's reference image as the build verified it, or raise BundleError.

        The bake step checked the graph against torchvision on its build machine; this checks,
        with one forward pass, that this machine and this runtime still agree (when the backend
        runs it, before or after ready: backend/registry.py).
        """
        reference = self.manifest.reference
        with Image.open(self.bundle.reference_image) as image:
            probabilities = self.probabilities(self.preprocess([image.convert("RGB")]))[0]
        worst = max(abs(float(probabilities[i]) - p) for i, p in reference.top)
        best = int(np.argmax(probabilities))
        (expected_best, p0), (_, p1) = reference.top[0], reference.top[1]
        separable = p0 - p1 > reference.tolerance
        finite = bool(np.isfinite(probabilities).all())
        # `not worst <= tolerance`: a NaN difference must fail, and NaN compares false.
        if not finite or not worst <= reference.tolerance or (separable and best != expected_best):
            raise BundleError(
                f"model {self.id!r} answers its reference image differently here than when it "
                f"was built (worst probability difference {worst:.2e}, tolerance "
                f"{reference.tolerance:g}; best class {best}, built {expected_best}). The runtime "
                f"differs from the build's (onnxruntime {ort.__version__} here, "
                f"{self.manifest.versions.get('onnxruntime')} at build): rebuild the image"
            )
