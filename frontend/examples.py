"""The example photos shipped with the page (frontend/examples/, licences in LICENSES.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DIRECTORY = Path(__file__).resolve().with_name("examples")


@dataclass(frozen=True)
class Example:
    key: str  # the file's stem, and the button's key: example_<key>
    title: str

    @property
    def path(self) -> Path:
        return DIRECTORY / f"{self.key}.jpg"

    def read(self) -> bytes:
        return self.path.read_bytes()


# CC0 or public domain, all four from scikit-image's sample data (see LICENSES.md).
EXAMPLES = (
    Example("chelsea", "A cat"),
    Example("coffee", "Coffee"),
    Example("astronaut", "An astronaut"),
    Example("rocket", "A rocket"),
)


def by_key(key: str) -> Example:
    """The example called `key`; KeyError for any other (e.g. a link edited by hand)."""
    for example in EXAMPLES:
        if example.key == key:
            return example
    raise KeyError(key)
