"""The lock file: what a weights directory holds, with each file's full sha256 and size.

`python -m weights fetch` writes it next to the files; the bake step (`python -m bake`) reads
no file it does not list. Each entry also keeps the catalog entry the file was fetched for, so
a weights directory describes itself even if the code's catalog later changes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runtime.files import write_atomically
from weights.catalog import CatalogEntry

LOCK_NAME = "weights.lock"
LOCK_FORMAT = 1


@dataclass(frozen=True)
class FetchedFile:
    """One fetched weights file: the second stage of a model's life, after its catalog entry."""

    id: str
    file: str
    sha256: str
    size: int
    source: str
    entry: dict[str, Any]
    untrained: bool = False  # generated demo weights, never served unless allowed

    def catalog_entry(self) -> CatalogEntry:
        return CatalogEntry.from_dict(self.id, dict(self.entry))


def read_lock(directory: Path) -> dict[str, FetchedFile]:
    """The records of `directory`'s lock file, by model id; {} if there is none."""
    path = Path(directory) / LOCK_NAME
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if data.get("format") != LOCK_FORMAT:
        raise ValueError(f"{path}: unsupported lock format {data.get('format')!r}")
    return {mid: FetchedFile(id=mid, **rec) for mid, rec in data["models"].items()}


def write_lock(directory: Path, records: dict[str, FetchedFile]) -> Path:
    """Write the lock atomically, so an interrupted build never leaves half a lock."""
    directory = Path(directory)
    body = {
        "format": LOCK_FORMAT,
        "models": {
            mid: {k: v for k, v in asdict(rec).items() if k != "id"}
            for mid, rec in sorted(records.items())
        },
    }
    write_atomically(directory / LOCK_NAME, json.dumps(body, indent=2) + "\n")
    return directory / LOCK_NAME
