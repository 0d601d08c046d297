"""A fetched weights directory, read at build time: what it holds, and torchvision modules.

Nothing here downloads. Every file is checked against the lock's sha256 before it is
deserialised; pickles are read with `weights_only=True` (no code runs), safetensors with
the safetensors reader; `load_state_dict(strict=True)` refuses missing or extra keys. The bake
step builds its reference (eager) models here; the backend never imports this module.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from torchvision.models import get_model

from runtime.files import sha256_of, size_problem
from weights.catalog import CatalogEntry, CatalogError
from weights.lock import LOCK_NAME, FetchedFile, read_lock


class WeightsError(RuntimeError):
    """A fetched weights file is missing, corrupt or unsafe; the message says what to do."""


class WeightsStore:
    """A weights directory written by `python -m weights fetch` (or `demo`)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._fetched: dict[str, FetchedFile] | None = None
        self._hashed: set[str] = set()  # ids whose file's sha256 matched (files don't change)

    def fetch_hint(self, model_id: str) -> str:
        return f"python -m weights fetch --models {model_id} --dest {self.directory}"

    def all_fetched(self) -> dict[str, FetchedFile]:
        """What this directory holds, by model id (raises WeightsError if there is no lock)."""
        if self._fetched is None:
            lock = self.directory / LOCK_NAME
            if not lock.is_file():
                raise WeightsError(
                    f"no {LOCK_NAME} in {self.directory}: this is not a weights directory. "
                    f"Create it with: python -m weights fetch --models v1 --dest {self.directory}"
                )
            try:
                self._fetched = read_lock(self.directory)
            except (ValueError, TypeError, KeyError) as exc:
                raise WeightsError(
                    f"{lock} is unreadable ({exc!r}); fetch the weights again"
                ) from exc
        return self._fetched

    def fetched(self, model_id: str) -> FetchedFile:
        everything = self.all_fetched()
        if model_id not in everything:
            raise WeightsError(
                f"model {model_id!r} is not fetched in {self.directory} "
                f"(it holds: {', '.join(everything) or 'nothing'}). "
                f"Add it with: {self.fetch_hint(model_id)}"
            )
        return everything[model_id]

    def check(
        self, model_id: str, *, allow_untrained: bool = False
    ) -> tuple[FetchedFile, CatalogEntry]:
        """Cheap checks, no hashing: fetched, allowed, its entry known to torchvision, file
        present with the locked size."""
        fetched = self.fetched(model_id)
        if fetched.untrained and not allow_untrained:
            raise WeightsError(
                f"{fetched.file} in {self.directory} holds untrained demo weights for "
                f"{model_id!r}; images never serve them (ALLOW_UNTRAINED_WEIGHTS=1 is for a "
                f"local demo only). Fetch the real ones with: {self.fetch_hint(model_id)}"
            )
        try:
            entry = fetched.catalog_entry()
            entry.validate()
        except (CatalogError, KeyError, ValueError, TypeError) as exc:
            raise WeightsError(
                f"the lock's entry for {model_id!r} in {self.directory} does not fit this "
                f"torchvision ({exc}); fetch it again with: {self.fetch_hint(model_id)}"
            ) from exc
        path = self.directory / fetched.file
        if problem := size_problem(path, fetched.size):
            raise WeightsError(
                f"weights file {path} for model {model_id!r} is {problem}. "
                f"Recreate it with: {self.fetch_hint(model_id)}"
            )
        return fetched, entry

    def verify(
        self, model_id: str, *, allow_untrained: bool = True
    ) -> tuple[FetchedFile, CatalogEntry, Path]:
        """`check`, then the file's full sha256 against the lock; the file's path last."""
        fetched, entry = self.check(model_id, allow_untrained=allow_untrained)
        path = self.directory / fetched.file
        if model_id in self._hashed:
            return fetched, entry, path
        digest = sha256_of(path)
        if digest != fetched.sha256:
            raise WeightsError(
                f"weights file {path} has sha256 {digest}, the lock says {fetched.sha256}: "
                f"it is corrupt or was replaced. Recreate it with: {self.fetch_hint(model_id)}"
            )
        self._hashed.add(model_id)
        return fetched, entry, path

    def load(self, model_id: str, *, allow_untrained: bool = False) -> torch.nn.Module:
        """The verified file, deserialised safely, in torchvision's architecture, eval mode.

        Untrained demo weights (`python -m weights demo`) are refused unless allowed.
        """
        _, entry, path = self.verify(model_id, allow_untrained=allow_untrained)
        state_dict = self._read_state_dict(path, entry, model_id)
        return build_model(entry.architecture, state_dict, where=f"{path} ({model_id})")

    @staticmethod
    def _read_state_dict(path: Path, entry: CatalogEntry, model_id: str) -> dict:
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
