"""Untrained demo weights: real architectures, real file format, random values.

For two uses only: tests (which cannot download real weights here) and the local run
command on a machine with no route to the weights' hosts. Files are named the way
torchvision names its own ("<stem>-<sha256 prefix>.pth"), and a lock written by
`bake_untrained` marks them `untrained`, which the backend refuses unless told otherwise.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from torchvision.models import get_model

from weights.catalog import Catalog, ModelEntry
from weights.lock import LockedFile, read_lock, sha256_of, write_lock


def untrained_state_dict(architecture: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised state dict of torchvision's `architecture` (reproducible)."""
    torch.manual_seed(seed)
    return get_model(architecture, weights=None).state_dict()


def write_untrained(
    architecture: str,
    directory: Path,
    *,
    stem: str | None = None,
    fmt: str = "pickle",
    seed: int = 0,
) -> tuple[Path, str]:
    """Write random weights as torchvision (`.pth`) or the Hub (`.safetensors`) would.

    Returns the path and its full sha256. A `.pth` file is named with its own hash
    prefix, exactly like torchvision's files, so the fetch code's check applies to it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = untrained_state_dict(architecture, seed)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata={"format": "pt"})
        digest = sha256_of(Path(tmp))
        target = directory / f"{stem or architecture}.safetensors"
    else:
        torch.save(state, tmp)
        digest = sha256_of(Path(tmp))
        target = directory / f"{stem or architecture}-{digest[:8]}.pth"
    os.replace(tmp, target)
    return target, digest


def bake_untrained(ids: Iterable[str], dest: Path, *, catalog: Catalog) -> list[LockedFile]:
    """Write untrained weights for `ids` into `dest` with a lock that marks them untrained."""
    dest = Path(dest)
    records = read_lock(dest)
    baked = []
    for model_id in ids:
        entry: ModelEntry = catalog.entry(model_id)
        old = records.get(model_id)
        if old is not None and (dest / old.file).is_file():
            baked.append(old)  # real or demo, keep what is there
            continue
        fmt = entry.file_format
        path, digest = write_untrained(
            entry.architecture, dest, stem=f"{model_id}-untrained", fmt=fmt
        )
        record = LockedFile(
            id=model_id,
            file=path.name,
            sha256=digest,
            size=path.stat().st_size,
            source="untrained: random initialisation (python -m weights demo)",
            entry=entry.to_dict(),
            untrained=True,
        )
        records[model_id] = record
        baked.append(record)
    write_lock(dest, records)
    return baked
