"""The catalog's lock: the full sha256 and size each model's file is pinned to, committed.

The catalog pins a file itself where its digest is known from independent sources (`sha256`
and `size` of a torchvision entry, or a hub entry's). Every other file is pinned here, as
`uv.lock` pins packages: the first `python -m weights fetch` on a machine with network
downloads it, checks torchvision's hash prefix, and records the full digest in this file, which
sits beside the catalog (`weights/catalog.lock` for `weights/catalog.toml`) and is meant to be
committed. From then on every fetch verifies against it, and `--frozen` (the image builds)
refuses any file not pinned by the catalog or the lock: nothing is trusted on first use there.

Not the weights directory's `weights.lock` (weights/lock.py), which says what one directory
holds; this one says what any directory may hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from runtime.files import write_atomically
from weights.catalog import Catalog, CatalogEntry

PINS_FORMAT = 1


@dataclass(frozen=True)
class Pin:
    file: str
    sha256: str
    size: int | None
    where: str  # "the catalog" or the lock's path, for messages


def pins_path(catalog: Catalog) -> Path:
    """Where a catalog's lock lives: beside it, same name, `.lock`."""
    if catalog.path is None:
        raise ValueError("a catalog read from no file has no lock")
    return catalog.path.with_suffix(".lock")


def read_pins(path: Path) -> dict[str, Pin]:
    """The lock's pins by model id; {} if there is no lock yet."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if data.get("format") != PINS_FORMAT:
        raise ValueError(f"{path}: unsupported lock format {data.get('format')!r}")
    return {
        model_id: Pin(record["file"], record["sha256"], record.get("size"), str(path))
        for model_id, record in data["models"].items()
    }


def write_pins(path: Path, pins: dict[str, Pin]) -> None:
    body = {
        "format": PINS_FORMAT,
        "comment": "written by `python -m weights fetch`; commit it (README, Weights)",
        "models": {
            model_id: {"file": pin.file, "sha256": pin.sha256, "size": pin.size}
            for model_id, pin in sorted(pins.items())
        },
    }
    write_atomically(path, json.dumps(body, indent=2) + "\n")


def pin_for(entry: CatalogEntry, locked: dict[str, Pin]) -> Pin | None:
    """The catalog's own pin of the entry's file, else the lock's (for the same file name)."""
    if entry.pin is not None:
        sha256, size = entry.pin
        return Pin(entry.file_name, sha256, size, "the catalog")
    pin = locked.get(entry.id)
    if pin is not None and pin.file == entry.file_name:
        return pin
    return None
