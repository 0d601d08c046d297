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

from runtime.files import sha256_of, size_problem
from weights import architectures
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
        where = f"model {model_id!r}, file {path}"
        state_dict = state_dict_of(self._read_state_dict(path, entry, model_id), where=where)
        classes = len(entry.categories) if entry.own else None
        return build_model(entry.architecture, state_dict, where=where, num_classes=classes)

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
                f"loading it would run code ({str(exc).splitlines()[0]}). A whole model saved "
                "with torch.save(model) is such a file: save model.state_dict() instead"
            ) from exc
        except (RuntimeError, OSError, ValueError, EOFError) as exc:
            raise WeightsError(f"could not read weights file {path} ({model_id}): {exc}") from exc


# Where training code puts the weights in a checkpoint: Lightning, timm, most scripts
# ({"state_dict": ...}), torchvision's reference scripts and DeiT ({"model": ...}).
_WRAPPERS = ("state_dict", "model")
_DATA_PARALLEL = "module."


def _is_state_dict(found: object) -> bool:
    return (
        isinstance(found, dict)
        and bool(found)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in found.items())
    )


def _describe(found: object) -> str:
    if not isinstance(found, dict):
        return f"a {type(found).__name__}"
    items = [f"{k!r}: {type(v).__name__}" for k, v in list(found.items())[:6]]
    more = f", ... ({len(found)} keys)" if len(found) > 6 else ""
    return "a dict {" + ", ".join(items) + more + "}"


def state_dict_of(checkpoint: object, *, where: str) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint as users save them: plain, wrapped in {"state_dict"}
    or {"model"}, keys prefixed with `module.` (DataParallel); anything else is refused."""
    found = checkpoint
    if isinstance(found, dict) and not _is_state_dict(found):
        for key in _WRAPPERS:
            if _is_state_dict(found.get(key)):
                found = found[key]
                break
    if not _is_state_dict(found):
        raise WeightsError(
            f"{where}: not a state dict of tensors: found {_describe(checkpoint)}. Save "
            "model.state_dict(), alone or as {'state_dict': ...} or {'model': ...}"
        )
    if all(k.startswith(_DATA_PARALLEL) for k in found):
        found = {k.removeprefix(_DATA_PARALLEL): v for k, v in found.items()}
    return found


def _mismatch(module: torch.nn.Module, state_dict: dict, where: str, num_classes: int | None):
    """A WeightsError saying how the file differs from the architecture, or None."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    arch = type(module).__name__
    if missing or unexpected:
        return WeightsError(
            f"{where}: not a checkpoint of this architecture ({arch}): {len(missing)} keys "
            f"missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    shapes = [
        (k, tuple(state_dict[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not shapes:
        return None
    head = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
    head_keys = {k: v for k, v in module.named_parameters() if v is head.weight or v is head.bias}
    if num_classes is not None and {k for k, _, _ in shapes} <= set(head_keys):
        name, found, _ = shapes[0]
        return WeightsError(
            f"{where}: the labels name {num_classes} classes, the checkpoint's head "
            f"({name} {list(found)}) has {found[0]} outputs: give one label per output, in order"
        )
    described = "; ".join(f"{k} is {list(f)} in the file, {list(e)} here" for k, f, e in shapes[:3])
    return WeightsError(
        f"{where}: shapes differ from {arch}'s ({len(shapes)} tensors): {described}"
    )


def build_model(
    architecture: str, state_dict: dict, *, where: str, num_classes: int | None = None
) -> torch.nn.Module:
    """The architecture with `state_dict` loaded strictly, in eval mode.

    The module is built on the meta device and the loaded tensors are assigned in place:
    no time is spent on a random initialisation that would be overwritten at once, and
    mmap-backed tensors stay mapped instead of being copied. `num_classes` sizes the head (a
    user's own model: one output per label).
    """
    with torch.device("meta"):
        module = architectures.build(architecture, num_classes)
    if (problem := _mismatch(module, state_dict, where, num_classes)) is not None:
        raise problem
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
        module = architectures.build(architecture, num_classes)
        module.load_state_dict(state_dict, strict=True)
    return module.eval()
