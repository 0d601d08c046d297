"""The models this instance serves: bundles checked at start, opened once, read-only afterwards.

Requests only ever look models up; nothing a request does can change which model another
request gets (the assignment's `PUT /model/<id>` bug is impossible by construction).

Start, in order: before the process serves, cheap checks (the index, every bundle's manifest,
every file present with its size, demo weights allowed or not); then, in a loader thread, for
each bundle its graph and reference image verified and one ONNX Runtime session opened, while
other threads hash the weights data (XXH3 releases the GIL). /ready says 200 once every
session is open and every digest matched: no answer is ever computed from a byte not verified.
Each model answers its reference image as the build verified it (the reference check): an int8
model before it is served (its kernels differ by CPU: with or without VNNI), an fp32 model once
the instance is ready and no forward pass has run for a moment (after the first answer, in a
cold start that a request began). A model that answers it differently ends the instance, as a
failed load does.
A stop request (the process exiting on SIGTERM) is honoured between steps: the loader is not a
daemon, so the interpreter waits for the step in progress instead of tearing down ONNX Runtime
under it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from backend.errors import NotReady, UnknownModel
from backend.forwards import Forwards
from backend.process import allocator_for_loading, allocator_for_serving
from backend.settings import Settings
from backend.start_trace import log_phase, phase, since_start
from runtime.bundle import (
    GRAPH,
    GRAPH_DATA,
    REFERENCE_IMAGE,
    Bundle,
    BundleError,
    BundleIndex,
    fix_command,
    read_index,
)
from runtime.selection import SelectionError
from runtime.session import ModelSession

log = logging.getLogger(__name__)

# The files of a bundle that are parsed (by ONNX Runtime, by Pillow): verified before reading.
PARSED = (GRAPH, REFERENCE_IMAGE)
# The exit status of a serving process whose models failed to load, or answered their reference
# image differently (a wrong setting or a missing bundle, found before the load: 1).
LOAD_FAILED_EXIT = 3
# How long the forward passes must have been idle before a reference check runs: longer than
# the gap between a client's answer and its next request, short beside a cold start's wait.
REFERENCE_CHECK_AFTER_IDLE_S = 0.25
# ... and under a load that never pauses, the checks take their turn in the queue this long
# after ready: no instance serves unchecked for longer.
REFERENCE_CHECK_WITHIN_S = 5.0


class ModelRegistry:
    """Every configured bundle, checked, opened and served; then checked against its
    reference image."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        directory = settings.bundles_dir
        index = read_index(directory)
        self.ids = self._served(index, settings.models)
        self.default_id = settings.default_model or (
            index.default if index.default in self.ids else self.ids[0]
        )
        if self.default_id not in self.ids:
            raise BundleError(
                f"DEFAULT_MODEL={self.default_id!r} is not among the models served "
                f"({', '.join(self.ids)})"
            )
        self.listed_ids = self._listed(index, settings.listed_models)
        with phase("bundles", models=len(self.ids)):
            self.bundles = {model_id: self._checked(model_id) for model_id in self.ids}
        self.runner = Forwards(settings.inference_concurrency)
        self._sessions: dict[str, ModelSession] = {}
        self._reference_checked: set[str] = set()
        self._ready = threading.Event()
        self._settled = threading.Event()  # ready, failed or stopped: nothing left to wait for
        # Predictions that wait for the load: half the request threads at most (none with one
        # thread), so that the rest are there for /ready, the startup probe, and /health;
        # beyond it a prediction is told 503 at once.
        self._holds = threading.BoundedSemaphore(settings.request_threads // 2)
        self._stop = threading.Event()
        self._started = False
        self.failure: str | None = None

    def _served(self, index: BundleIndex, models: str | None) -> list[str]:
        try:
            ids = index.select(models)
        except SelectionError as exc:
            raise BundleError(f"MODELS={models!r}: {exc}") from exc
        missing = [i for i in ids if i not in index.models]
        if missing or not ids:
            directory = self.settings.bundles_dir
            raise BundleError(
                f"MODELS={models!r} names {', '.join(missing) or 'nothing'}, not baked in "
                f"{directory} (it holds: {', '.join(index.models) or 'nothing'}). "
                f"Add them with: {fix_command(','.join(missing) or 'v1', directory)}"
            )
        return ids

    def _listed(self, index: BundleIndex, listed: str | None) -> list[str]:
        """GET /models: this service's models, or (v3) every model behind the gateway."""
        if listed is None:
            return self.ordered_ids()
        try:
            ids = index.select(listed)
        except SelectionError as exc:
            raise BundleError(f"LISTED_MODELS={listed!r}: {exc}") from exc
        # The catalog's default first, not this service's: every v3 service lists the same.
        first = index.default if index.default in ids else ids[0]
        return [first, *[i for i in ids if i != first]]

    def _fix(self, model_id: str) -> str:
        return fix_command(model_id, self.settings.bundles_dir) + " (in an image: rebuild its base)"

    def _checked(self, model_id: str) -> Bundle:
        """The bundle, after the cheap checks a server runs before it binds its port."""
        bundle = Bundle.read(self.settings.bundles_dir / model_id, fix=self._fix(model_id))
        if bundle.manifest.untrained and not self.settings.allow_untrained:
            raise BundleError(
                f"bundle {bundle.directory} was compiled from untrained demo weights; images "
                "never serve them (ALLOW_UNTRAINED_WEIGHTS=1 is for a local demo only). Build "
                f"it from the real weights: {self._fix(model_id)}"
            )
        bundle.check(fix=self._fix(model_id))
        return bundle

    # --- loading -----------------------------------------------------------------------

    def start(self) -> None:
        """Load now, or in a background thread if configured (then /ready says when).

        Once: a second call (the app factory's, after `python -m backend` started it) does
        nothing.
        """
        if self._started:
            return
        self._started = True
        log.info(
            "loading models: %s",
            ", ".join(self.ids),
            extra={"event": "loading", "inference_threads": self.settings.session.threads},
        )
        if not self.settings.background_load:
            self._load_all()
            return
        # Not a daemon: at exit the interpreter joins it, after `stop` has told it to end.
        threading.Thread(target=self._load_in_background, name="model-loader").start()

    def stop(self) -> None:
        """Make a load in progress end at its next step (the process is exiting)."""
        self._stop.set()
        self._settled.set()

    def _load_in_background(self) -> None:
        try:
            self._load_all()
        except Exception as exc:  # a thread's top: whatever fails must be told
            self.failure = str(exc)
            self._ready.clear()  # a failed reference check comes after ready: serve no more
            self._settled.set()
            log.critical(
                "model loading failed: %s",
                exc,
                exc_info=not isinstance(exc, BundleError),
                extra={"event": "load_failed"},
            )
            if self.settings.exit_on_load_failure:
                logging.shutdown()
                os._exit(LOAD_FAILED_EXIT)

    def _load_all(self) -> None:
        """Verify and open every bundle, side by side; serve once every digest matched; then
        check each model against its reference image.

        What ONNX Runtime and Pillow parse (the graph, the reference image) is verified before
        it is read. The weights data, raw tensor bytes at offsets the verified graph gives, is
        hashed on other threads while the sessions open, each one per inference thread (the
        cores by default) in the order the models open: ONNX Runtime releases the GIL while it
        opens a session (benchmarks/RESULTS.md, "Cold start"). A model is served once its
        weights' digest matched, the instance is ready once every model is.
        """
        start, began = time.perf_counter(), since_start()
        workers = min(len(self.ids), self.settings.session.threads)
        hashing = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")
        opening = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="open")
        allocator_for_loading()  # until every session is open (backend/process.py says why)
        try:
            data = {i: hashing.submit(self._verify, i, (GRAPH_DATA,)) for i in self.ids}
            sessions = {i: opening.submit(self._open, i) for i in self.ids}
            for model_id in self.ids:
                session = sessions[model_id].result()
                if session is None or self._stop.is_set():
                    break
                if not self._serve(session, weights_verified=data[model_id].result):
                    break
        except BaseException:
            self._stop.set()  # the hashing and opening still running end at their next step
            raise
        finally:
            for pool in (opening, hashing):
                pool.shutdown(wait=False, cancel_futures=True)
            allocator_for_serving()
        if len(self._sessions) < len(self.ids):
            log.info("loading stopped", extra={"event": "loading_stopped"})
            return
        log_phase("load", began, models=len(self.ids))
        if not self.settings.background_load:  # nothing is served before this returns
            self._check_references(quiet_s=0.0)
        self.runner.idle_from_now()
        self._ready.set()
        self._settled.set()
        log.info(
            "ready: %s",
            ", ".join(self.ids),
            extra={"event": "ready", "load_ms": round((time.perf_counter() - start) * 1000)},
        )
        self._check_references(quiet_s=REFERENCE_CHECK_AFTER_IDLE_S)

    def _check_references(self, quiet_s: float) -> None:
        """The reference check of every model not checked yet, each once the forward passes
        have been idle for `quiet_s` (or REFERENCE_CHECK_WITHIN_S after ready, whatever the
        load); BundleError if one answers differently.

        The check is a forward pass: before readiness it delayed every cold start's first
        answer by one (resnet152 0.1 s, v2 four of them), while the digests alone already
        refuse every altered byte and an fp32 model's kernels agree across x86 CPUs far inside
        the check's 1e-4 (the bake and the image install the same locked onnxruntime). So an
        fp32 model answers its first requests before it is checked, and one this machine or
        runtime computes differently ends the instance a moment later (the requests in flight
        then end with it: they were being answered by that model). The price: a deploy whose
        image computes an fp32 model differently passes the startup probe, and each instance
        of it answers a few requests before it ends.
        """
        deadline = time.monotonic() + REFERENCE_CHECK_WITHIN_S
        for model_id in self.ids:
            if model_id in self._reference_checked:
                continue
            if not self.runner.wait_idle(quiet_s, self._stop, deadline):
                return
            try:
                checking = self.runner.submit(lambda m=model_id: self._check_reference(m))
            except RuntimeError:  # the interpreter is exiting: its thread pools take no work
                return
            checking.result()

    def _check_reference(self, model_id: str) -> None:
        """One model's reference check (BundleError if it answers differently), logged."""
        began = since_start()
        self._sessions[model_id].check_reference()
        log_phase("reference_check", began, model=model_id)
        self._reference_checked.add(model_id)
        log.info(
            "model %s answered its reference image as built",
            model_id,
            extra={
                "event": "reference_checked",
                "model": model_id,
                "check_ms": round((since_start() - began) * 1000, 1),
            },
        )

    def _verify(self, model_id: str, files: tuple[str, ...]) -> bool:
        """Some files' digests (BundleError if one differs); False if a stop came first."""
        started, began = time.perf_counter(), since_start()
        done = self.bundles[model_id].verify(
            fix=self._fix(model_id), should_stop=self._stop.is_set, files=files
        )
        if done:
            kind = "digest_data" if files == (GRAPH_DATA,) else "digest_graph"
            log_phase(kind, began, model=model_id, files=list(files))
            log.info(
                "verified %s of bundle %s",
                ", ".join(files),
                model_id,
                extra={
                    "event": "bundle_verified",
                    "model": model_id,
                    "files": list(files),
                    "verify_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        return done

    def _open(self, model_id: str) -> ModelSession | None:
        """The bundle's session, its graph and reference image verified first; None if a stop
        came first."""
        if self._stop.is_set() or not self._verify(model_id, PARSED):
            return None
        began = since_start()
        session = ModelSession(self.bundles[model_id], self.settings.session)
        log_phase("open", began, model=model_id)
        return session

    def _serve(self, session: ModelSession, *, weights_verified: Callable[[], bool]) -> bool:
        """Serve the session once its weights' digest matched (an int8 model once it also
        answered its reference image); False if stopped first.

        `weights_verified()` waits for the weights data's digest (raising BundleError if it
        differs): the session may map bytes not yet verified, but no answer is computed from
        them.
        """
        model_id, bundle = session.id, session.bundle
        waited = since_start()
        if not weights_verified():
            return False
        timings = {"wait_for_digest": round((since_start() - waited) * 1000, 1)}
        self._sessions[model_id] = session
        if bundle.manifest.precision == "int8":  # CPU-dependent kernels: checked before serving
            self._check_reference(model_id)
        log.info(
            "loaded model %s",
            model_id,
            extra={
                "event": "model_loaded",
                "model": model_id,
                "timings_ms": timings,
                "untrained": bundle.manifest.untrained,
                "num_classes": len(bundle.manifest.categories),
                "labels": bundle.manifest.categories[:10],  # the first ten: which model this is
            },
        )
        if bundle.manifest.untrained:
            log.warning(
                "model %s serves UNTRAINED demo weights: its predictions are meaningless",
                model_id,
                extra={"event": "untrained_weights", "model": model_id},
            )
        return True

    # --- serving -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Whether the models are ready, waiting up to `timeout` for it; at once if the load
        failed or was stopped."""
        self._settled.wait(timeout)
        return self.ready

    def loaded_count(self) -> int:
        return len(self._sessions)

    def ordered_ids(self) -> list[str]:
        """Model ids, the default first (the frontend's picker shows them in this order)."""
        return [self.default_id, *[i for i in self.ids if i != self.default_id]]

    def get(self, model_id: str | None, wait: float = 0) -> ModelSession:
        """The session of `model_id` (the default if None): UnknownModel at once for an id not
        served here; NotReady if the models are not ready after waiting up to `wait` seconds
        (at once when as many requests as it allows already wait)."""
        model_id = model_id or self.default_id
        if model_id not in self.ids:
            raise self._unknown(model_id)
        if not self.ready and wait > 0 and self._holds.acquire(blocking=False):
            try:
                self.wait_ready(wait)
            finally:
                self._holds.release()
        if not self.ready:
            raise NotReady(self.status_message())
        return self._sessions[model_id]

    def _unknown(self, model_id: str) -> UnknownModel:
        model_id = model_id[:100]  # a client's string, echoed back: keep it short
        if model_id in self.listed_ids:
            return UnknownModel(
                f"model {model_id!r} has its own service behind the gateway; this one serves "
                f"{', '.join(self.ids)} (call /model/{model_id}/predict on the gateway)"
            )
        return UnknownModel(f"unknown model {model_id!r}; valid ids: {', '.join(self.listed_ids)}")

    def status_message(self) -> str:
        if self.failure:
            return f"model loading failed: {self.failure}"
        if self._stop.is_set():
            return "the server is stopping; retry (another instance will answer)"
        return f"loading models: {self.loaded_count()} of {len(self.ids)} ready"

    def describe(self, model_id: str) -> dict:
        """Metadata of one served model, from its bundle's manifest."""
        if model_id not in self.ids:
            raise self._unknown(model_id)
        manifest = self.bundles[model_id].manifest
        return {
            "id": model_id,
            "architecture": manifest.architecture,
            "weights": manifest.weights,
            "source": manifest.source.url,
            "parameters": manifest.parameters,
            "imagenet_acc1": manifest.imagenet_acc1,
            "imagenet_acc5": manifest.imagenet_acc5,
            "input_size": manifest.input_size,
            "num_classes": len(manifest.categories),
            "labels": manifest.categories,  # in output order; a top_k above their count is clamped
            "sha256": manifest.source.sha256,
            "file": manifest.source.file,
            "file_size_bytes": manifest.source.size,
            "untrained": manifest.untrained,
            # "int8": served by the int8 graph the bake's gate accepted; `quantization` has its
            # figures (top-1 fp32 and int8 on the validation set, its size, the allowed drop,
            # forward times and the speed-up on the build machine). None for fp32.
            "precision": manifest.precision,
            "quantization": manifest.quantization,
            "default": model_id == self.default_id,
            "loaded": model_id in self._sessions,
            # True once it answered its reference image as the build did, here (a moment
            # after the instance's first answers: the check waits for the forward passes to
            # pause, so it never delays them).
            "reference_checked": model_id in self._reference_checked,
            "compiled": {
                "format": "onnx",
                "graph_xxh3_128": manifest.artifacts[GRAPH].xxh3_128,
                "versions": manifest.versions,
                "verification": manifest.verification,
            },
        }
