"""Untrained demo weights: real architectures, real file format, random values.

For two uses only: tests (which cannot download real weights here) and the local run
command on a machine with no route to the weights' hosts. Files are named the way
torchvision names its own ("<stem>-<sha256 prefix>.pth"), and a lock written by
`bake_untrained` marks them `untrained`, which the backend refuses unless told otherwise.

A plain random initialisation answers every image with one class at probability 1.0 (deep
residual networks multiply their activations into the 1e8s), which would make every check of
probabilities pass trivially. So the BatchNorm statistics are measured on random scenes, from flat
to busy (white noise, or too narrow a set, leaves a ResNet-152 saturated or ill-conditioned on
pictures), and the classifier is scaled to give logits of a fixed spread: answers differ from
image to image and no class is certain, as with a trained model (they are still meaningless).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from runtime.files import sha256_of
from weights import architectures
from weights.catalog import Catalog, CatalogEntry
from weights.lock import FetchedFile, read_lock, write_lock

LOGIT_SPREAD = 3.0  # standard deviation of the demo models' logits on the calibration scenes


# Calibration scenes: (coarseness, grain) from flat colour fields to busy textures. Measured
# on too narrow a set, BatchNorm statistics leave a deep network's logits in the thousands on
# other pictures, where float32 rounding alone moves probabilities by 1e-4.
_CALIBRATION = ((2, 0.05), (7, 0.3), (28, 0.6), (7, 0.1))


def _scenes(count: int, generator: torch.Generator, coarse: int, grain: float) -> torch.Tensor:
    """Smooth random pictures, already normalised: the statistics a model meets in use."""
    low = torch.randn(count, 3, coarse, coarse, generator=generator)
    smooth = torch.nn.functional.interpolate(low, size=224, mode="bicubic", align_corners=False)
    return smooth + grain * torch.randn(count, 3, 224, 224, generator=generator)


def untrained_state_dict(
    architecture: str, seed: int = 0, num_classes: int = 1000
) -> dict[str, torch.Tensor]:
    """A random state dict of torchvision's `architecture` with spread answers (reproducible)."""
    torch.manual_seed(seed)
    module = architectures.build(architecture, num_classes)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norms = [
            m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        ]
        if norms:
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None  # a plain average over the calibration batches
            module.train()
            for coarse, grain in _CALIBRATION:
                module(_scenes(6, generator, coarse, grain))
        module.eval()
        check = torch.cat([_scenes(3, generator, c, g) for c, g in _CALIBRATION])
        logits = module(check)
        classifier = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
        scale = LOGIT_SPREAD / max(float(logits.std()), 1e-12)
        classifier.weight.mul_(scale)
        if classifier.bias is not None:
            classifier.bias.mul_(scale)
    return module.state_dict()


def write_untrained(
    architecture: str,
    directory: Path,
    *,
    stem: str | None = None,
    fmt: str = "pickle",
    seed: int = 0,
    num_classes: int = 1000,
) -> tuple[Path, str]:
    """Write random weights as torchvision (`.pth`) or the Hub (`.safetensors`) would.

    Returns the path and its full sha256. A `.pth` file is named with its own hash
    prefix, exactly like torchvision's files, so the fetch code's check applies to it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = untrained_state_dict(architecture, seed, num_classes)
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


def bake_untrained(ids: Iterable[str], dest: Path, *, catalog: Catalog) -> list[FetchedFile]:
    """Write untrained weights for `ids` into `dest` with a lock that marks them untrained."""
    dest = Path(dest)
    records = read_lock(dest)
    baked = []
    for model_id in ids:
        entry: CatalogEntry = catalog.entry(model_id)
        old = records.get(model_id)
        if old is not None and (dest / old.file).is_file():
            baked.append(old)  # real or demo, keep what is there
            continue
        path, digest = write_untrained(
            entry.architecture,
            dest,
            stem=f"{model_id}-untrained",
            fmt=entry.file_format,
            num_classes=len(entry.categories),  # a user's own model: one output per label
        )
        record = FetchedFile(
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
