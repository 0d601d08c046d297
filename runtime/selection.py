"""Resolve a selection of models ('v2', 'resnet18,vgg16', a list) against ids and named sets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class SelectionError(ValueError):
    """A selection names no model, or a model or set that does not exist; says what does."""


def select(
    selection: str | Sequence[str], ids: Sequence[str], sets: Mapping[str, Sequence[str]]
) -> list[str]:
    """The ids `selection` names, in order, without repeats; a set stands for its members."""
    names = selection.split(",") if isinstance(selection, str) else list(selection)
    names = [name.strip() for name in names if name.strip()]
    valid = f"valid ids: {', '.join(ids)}; sets: {', '.join(sets) or 'none'}"
    if not names:
        raise SelectionError(f"no model selected; {valid}")
    chosen: list[str] = []
    for name in names:
        if name in sets:
            chosen.extend(sets[name])
        elif name in ids:
            chosen.append(name)
        else:
            raise SelectionError(f"unknown model {name!r}; {valid}")
    return list(dict.fromkeys(chosen))
