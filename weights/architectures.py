"""Architectures by name: torchvision's builders, and timm's as `timm/<model name>`.

timm is a build-time dependency only (the bake group): a timm model is exported to ONNX like
any other, and the serving image never imports it. Imported lazily, so a catalog of
torchvision models never pays for it.
"""

from __future__ import annotations

import math

import torch
from torchvision.models import get_model, get_model_builder

from runtime.preprocess import INTERPOLATIONS, Preprocessing

TIMM_PREFIX = "timm/"


def timm_name(architecture: str) -> str | None:
    """The timm model name of `timm/<name>`; None for a torchvision architecture."""
    return architecture.removeprefix(TIMM_PREFIX) if architecture.startswith(TIMM_PREFIX) else None


def known(architecture: str) -> bool:
    """Whether torchvision (or timm, for `timm/<name>`) can build `architecture`."""
    name = timm_name(architecture)
    if name is not None:
        import timm

        return timm.is_model(name)
    try:
        get_model_builder(architecture)
    except ValueError:
        return False
    return True


def build(architecture: str, num_classes: int | None = None) -> torch.nn.Module:
    """An untrained module of `architecture` (on the current default device), head sized."""
    sized = {} if num_classes is None else {"num_classes": num_classes}
    name = timm_name(architecture)
    if name is None:
        return get_model(architecture, weights=None, **sized)
    import timm

    return timm.create_model(name, pretrained=False, **sized)


def timm_preprocessing(architecture: str) -> Preprocessing:
    """timm's eval transforms for the model (its pretrained config), as the runtime's data."""
    import timm
    from timm.data import resolve_data_config

    with torch.device("meta"):
        module = timm.create_model(timm_name(architecture), pretrained=False)
    config = resolve_data_config({}, model=module)
    size = int(config["input_size"][-1])
    if config.get("crop_mode", "center") != "center" or config["interpolation"] not in (
        INTERPOLATIONS
    ):
        raise ValueError(
            f"timm's transforms for {architecture} ({config}) are not a resize and centre crop "
            "the runtime does: give `preprocessing` in the catalog entry"
        )
    return Preprocessing(
        resize=math.floor(size / config["crop_pct"]),  # as timm's transforms_factory
        crop=size,
        interpolation=config["interpolation"],
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
    )
