"""Cold start as containers: `podman run` to the first 200, with baked weights.

Needs the backend images built by the container tests' helpers (tests/containers.py);
filled in once those exist.
"""

from __future__ import annotations

from pathlib import Path


def run(sets: dict[str, list[str]], runs: int, work: Path) -> dict:
    return {
        name: {"skipped": "container images are not built by this command yet"} for name in sets
    }
