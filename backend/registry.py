"""The models this instance serves: loaded once at start, read-only afterwards.

Requests only ever look models up; nothing a request does can change which model another
request gets (the assignment's `PUT /model/<id>` bug is impossible by construction).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from backend.errors import NotReady, UnknownModel
from backend.inference import ServedModel, warm_up
from backend.settings import Settings
from weights.catalog import Catalog, CatalogError, load_catalog
from weights.store import WeightsError, WeightsStore

log = logging.getLogger(__name__)

# gunicorn halts the whole server (and exits non-zero) when a worker exits with this code.
WORKER_BOOT_ERROR = 3


class ModelRegistry:
    """Loads every configured model from the baked directory, warms each up, then serves."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = WeightsStore(settings.weights_dir)
        try:
            catalog: Catalog = load_catalog(settings.catalog_path)
            self.ids = catalog.select(settings.models)
        except CatalogError as exc:
            raise WeightsError(f"MODELS={settings.models!r}: {exc}") from exc
        self.default_id = settings.default_model or (
            catalog.default if catalog.default in self.ids else self.ids[0]
        )
        if self.default_id not in self.ids:
            raise WeightsError(
                f"DEFAULT_MODEL={self.default_id!r} is not among MODELS ({', '.join(self.ids)})"
            )
        self.listed_ids = self._listed(catalog, settings.listed_models)
        self._models: dict[str, ServedModel] = {}
        self._runner = ThreadPoolExecutor(
            max_workers=settings.inference_concurrency, thread_name_prefix="inference"
        )
        self._ready = threading.Event()
        self.failure: str | None = None
        self._check_baked()

    def _listed(self, catalog: Catalog, listed: str | None) -> list[str]:
        """GET /models: this service's models, or (v3) every model behind the gateway."""
        if listed is None:
            return self.ordered_ids()
        try:
            ids = catalog.select(listed)
        except CatalogError as exc:
            raise WeightsError(f"LISTED_MODELS={listed!r}: {exc}") from exc
        first = catalog.default if catalog.default in ids else ids[0]
        return [first, *[i for i in ids if i != first]]

    def _check_baked(self) -> None:
        """Cheap checks before the server binds: every model baked, allowed, present."""
        self.records = {
            model_id: self.store.check(model_id, allow_untrained=self.settings.allow_untrained)[0]
            for model_id in self.ids
        }

    # --- loading -----------------------------------------------------------------------

    def start(self) -> None:
        """Load now, or in a background thread if configured (then /readyz says when)."""
        torch.set_num_threads(self.settings.torch_threads)
        log.info(
            "loading models: %s",
            ", ".join(self.ids),
            extra={"event": "loading", "torch_threads": self.settings.torch_threads},
        )
        if not self.settings.background_load:
            self._load_all()
            return
        threading.Thread(target=self._load_in_background, name="model-loader", daemon=True).start()

    def _load_in_background(self) -> None:
        try:
            self._load_all()
        except Exception as exc:  # a thread's top: whatever fails must be told
            self.failure = str(exc)
            log.critical(
                "model loading failed: %s",
                exc,
                exc_info=not isinstance(exc, WeightsError),
                extra={"event": "load_failed"},
            )
            if self.settings.exit_on_load_failure:
                logging.shutdown()
                os._exit(WORKER_BOOT_ERROR)

    def _load_all(self) -> None:
        start = time.perf_counter()
        # Hash every file at once first: hashlib releases the GIL, so on N cores the
        # files are checked N at a time (the largest share of a v2 start after imports).
        with ThreadPoolExecutor(max_workers=self.settings.torch_threads) as pool:
            list(pool.map(self.store.verify, self.ids))
        log.info(
            "verified %d weights files",
            len(self.ids),
            extra={"event": "verified", "verify_ms": round((time.perf_counter() - start) * 1000)},
        )
        for model_id in self.ids:
            loaded = self.store.load(model_id, allow_untrained=self.settings.allow_untrained)
            served = ServedModel(loaded, self._runner, channels_last=self.settings.channels_last)
            loaded.timings_ms["warm_up"] = warm_up(served)
            self._models[model_id] = served
            log.info(
                "loaded model %s in %.0f ms",
                model_id,
                sum(loaded.timings_ms.values()),
                extra={
                    "event": "model_loaded",
                    "model": model_id,
                    "timings_ms": loaded.timings_ms,
                    "untrained": loaded.record.untrained,
                },
            )
            if loaded.record.untrained:
                log.warning(
                    "model %s serves UNTRAINED demo weights: its predictions are meaningless",
                    model_id,
                    extra={"event": "untrained_weights", "model": model_id},
                )
        self._ready.set()
        log.info(
            "ready: %s",
            ", ".join(self.ids),
            extra={"event": "ready", "load_ms": round((time.perf_counter() - start) * 1000)},
        )

    # --- serving -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def loaded_count(self) -> int:
        return len(self._models)

    def ordered_ids(self) -> list[str]:
        """Model ids, the default first (the frontend's picker shows them in this order)."""
        return [self.default_id, *[i for i in self.ids if i != self.default_id]]

    def get(self, model_id: str | None) -> ServedModel:
        model_id = model_id or self.default_id
        if model_id not in self.ids:
            raise self._unknown(model_id)
        if not self.ready:
            raise NotReady(self.status_message())
        return self._models[model_id]

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
        return f"loading models: {self.loaded_count()} of {len(self.ids)} ready"

    def describe(self, model_id: str) -> dict:
        """Metadata of one served model (from the lock and torchvision's metadata)."""
        if model_id not in self.ids:
            raise self._unknown(model_id)
        record = self.records[model_id]
        facts = record.model_entry().metadata()
        facts.update(
            sha256=record.sha256,
            file=record.file,
            file_size_bytes=record.size,
            untrained=record.untrained,
            default=model_id == self.default_id,
            loaded=model_id in self._models,
        )
        return facts
