"""Run-time access to a baked weights directory: what it holds, and offline loading.

Nothing here downloads. Every file is checked against the lock's sha256 before it is
deserialised; pickles are read with `weights_only=True` (no code runs), safetensors with
the safetensors reader; `load_state_dict(strict=True)` refuses missing or extra keys.
"""

from __future__ import annotations

import os
import pickle
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.models import get_model

from weights.catalog import CatalogError, ModelEntry
from weights.lock import LOCK_NAME, LockedFile, read_lock, sha256_of

# The libraries' own offline switches: even an accidental hub call must fail fast
# instead of reaching out. Set before anything imports huggingface_hub.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def go_offline() -> None:
    """Set the libraries' offline switches in this process."""
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value


class WeightsError(RuntimeError):
    """A baked weights file is missing, corrupt or unsafe; the message says what to do."""


@dataclass
class LoadedModel:
    """A model ready for inference, with where it came from and how long loading took."""

    entry: ModelEntry
    record: LockedFile
    module: torch.nn.Module
    timings_ms: dict[str, float] = field(default_factory=dict)


class WeightsStore:
    """A weights directory written by `python -m weights fetch`."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._records: dict[str, LockedFile] | None = None
        self._hashed: set[str] = set()  # ids whose file's sha256 matched (files don't change)
        go_offline()

    def _fetch_hint(self, model_id: str) -> str:
        return f"python -m weights fetch --models {model_id} --dest {self.directory}"

    def records(self) -> dict[str, LockedFile]:
        """What is baked here, by model id (raises WeightsError if there is no lock).

        Read once: a baked directory does not change while a process serves from it.
        """
        if self._records is None:
            lock = self.directory / LOCK_NAME
            if not lock.is_file():
                raise WeightsError(
                    f"no {LOCK_NAME} in {self.directory}: this is not a baked weights directory. "
                    f"Create it with: python -m weights fetch --models v1 --dest {self.directory}"
                )
            try:
                self._records = read_lock(self.directory)
            except (ValueError, TypeError, KeyError) as exc:
                raise WeightsError(
                    f"{lock} is unreadable ({exc!r}); fetch the weights again"
                ) from exc
        return self._records

    def record(self, model_id: str) -> LockedFile:
        records = self.records()
        if model_id not in records:
            raise WeightsError(
                f"model {model_id!r} is not baked in {self.directory} "
                f"(it holds: {', '.join(records) or 'nothing'}). "
                f"Add it with: {self._fetch_hint(model_id)}"
            )
        return records[model_id]

    def check(
        self, model_id: str, *, allow_untrained: bool = False
    ) -> tuple[LockedFile, ModelEntry]:
        """Cheap checks, no hashing: baked, allowed, its entry known to torchvision, file
        present with the locked size. What a server runs before it binds its port."""
        record = self.record(model_id)
        if record.untrained and not allow_untrained:
            raise WeightsError(
                f"{record.file} in {self.directory} holds untrained demo weights for "
                f"{model_id!r}; images never serve them (ALLOW_UNTRAINED_WEIGHTS=1 is for a "
                f"local demo only). Fetch the real ones with: {self._fetch_hint(model_id)}"
            )
        try:
            entry = record.model_entry()
            entry.validate()
        except (CatalogError, KeyError, ValueError, TypeError) as exc:
            raise WeightsError(
                f"the lock's entry for {model_id!r} in {self.directory} does not fit this "
                f"torchvision ({exc}); fetch it again with: {self._fetch_hint(model_id)}"
            ) from exc
        path = self.directory / record.file
        if not path.is_file():
            raise WeightsError(
                f"weights file {record.file} for model {model_id!r} is missing from "
                f"{self.directory}. Recreate it with: {self._fetch_hint(model_id)}"
            )
        size = path.stat().st_size
        if size != record.size:
            raise WeightsError(
                f"weights file {path} is {size} bytes, the lock says {record.size}: "
                f"it is truncated or replaced. Recreate it with: {self._fetch_hint(model_id)}"
            )
        return record, entry

    def verify(self, model_id: str, *, allow_untrained: bool = True) -> Path:
        """The file's path, after `check` and its full sha256 against the lock."""
        return self._verified(model_id, allow_untrained)[2]

    def _verified(
        self, model_id: str, allow_untrained: bool
    ) -> tuple[LockedFile, ModelEntry, Path]:
        record, entry = self.check(model_id, allow_untrained=allow_untrained)
        path = self.directory / record.file
        if model_id in self._hashed:
            return record, entry, path
        digest = sha256_of(path)
        if digest != record.sha256:
            raise WeightsError(
                f"weights file {path} has sha256 {digest}, the lock says {record.sha256}: "
                f"it is corrupt or was replaced. Recreate it with: {self._fetch_hint(model_id)}"
            )
        self._hashed.add(model_id)
        return record, entry, path

    def load(self, model_id: str, *, allow_untrained: bool = False) -> LoadedModel:
        """Verify, deserialise safely and build the model in eval mode, fully offline.

        Untrained demo weights (`python -m weights demo`) are refused unless allowed:
        only the local run command serves them, never an image.
        """
        timings: dict[str, float] = {}
        start = time.perf_counter()
        record, entry, path = self._verified(model_id, allow_untrained)
        timings["verify"] = _ms_since(start)

        start = time.perf_counter()
        state_dict = self._read_state_dict(path, entry, model_id)
        timings["read"] = _ms_since(start)

        start = time.perf_counter()
        module = build_model(entry.architecture, state_dict, where=f"{path} ({model_id})")
        timings["build"] = _ms_since(start)
        return LoadedModel(entry=entry, record=record, module=module, timings_ms=timings)

    @staticmethod
    def _read_state_dict(path: Path, entry: ModelEntry, model_id: str) -> dict:
        try:
            if entry.file_format == "safetensors":
                from safetensors.torch import load_file

                return load_file(path)
            # mmap needs torch's zip format; torchvision's oldest files predate it.
            return torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
        except pickle.UnpicklingError as exc:
            raise WeightsError(
                f"refusing to load {path} ({model_id}): it is not a plain tensor file and "
                f"loading it would run code ({str(exc).splitlines()[0]})"
            ) from exc
        except (RuntimeError, OSError, ValueError, EOFError) as exc:
            raise WeightsError(f"could not read weights file {path} ({model_id}): {exc}") from exc


def build_model(architecture: str, state_dict: dict, *, where: str) -> torch.nn.Module:
    """The architecture with `state_dict` loaded strictly, in eval mode.

    The module is built on the meta device and the loaded tensors are assigned in place:
    no time is spent on a random initialisation that would be overwritten at once, and
    mmap-backed tensors stay mapped instead of being copied.
    """
    with torch.device("meta"):
        module = get_model(architecture, weights=None)
    try:
        module.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"weights in {where} do not fit torchvision's {architecture}: {exc}"
        ) from exc
    left_on_meta = [
        n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta
    ]
    if left_on_meta:
        # A non-persistent buffer is not in any state dict: rebuild the slow, sure way.
        module = get_model(architecture, weights=None)
        module.load_state_dict(state_dict, strict=True)
    return module.eval()


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
