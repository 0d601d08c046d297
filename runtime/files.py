"""Files recorded with their size and digest: checking them, and writing records atomically.

Standard library only. Shared by the fetch step (weights.lock, sha256: the digest torchvision,
the Hub and users publish), the bake step and the backend (runtime.bundle, which brings its own
digest).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

# Hashed in slices of a memory map: no copy, and one GIL hand-over per slice (hashlib releases
# the GIL while it hashes). With 1 MB reads a start's hashing thread waited for the GIL 1,600
# times a second while the main thread imported modules, and hashed at a fifth of its speed.
_SLICE = 32 << 20


def size_problem(path: Path, size: int) -> str | None:
    """What is wrong with a file that should be `size` bytes ("missing", "N bytes..."), or None."""
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    return None if actual == size else f"{actual:,} bytes, not {size:,}: truncated or replaced"


class Digest(Protocol):
    def update(self, data: memoryview, /) -> object: ...
    def hexdigest(self) -> str: ...


def sha256_of(path: Path, should_stop: Callable[[], bool] | None = None) -> str | None:
    """The file's sha256 (hex); None if `should_stop()` turned true (checked every 32 MB)."""
    return digest_of(path, hashlib.sha256(), should_stop)


def digest_of(
    path: Path, digest: Digest, should_stop: Callable[[], bool] | None = None
) -> str | None:
    """The file's `digest` (hex), fed from a memory map in 32 MB slices; None if `should_stop()`
    turned true (checked after each slice)."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:  # an empty file cannot be mapped
            return digest.hexdigest()
        with (
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
            memoryview(mapped) as view,
        ):
            for start in range(0, len(view), _SLICE):
                digest.update(view[start : start + _SLICE])
                if should_stop is not None and should_stop():
                    return None
    return digest.hexdigest()


def write_atomically(path: Path, text: str) -> None:
    """Write a small file so that a reader sees the old one or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
