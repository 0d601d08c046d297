"""docs/bad-inputs.md is the project's list of bad inputs, and every entry in it is a test.

Each table row's last column names a test as `tests/<file>.py::<function>`; this checks that
every row names one and that the function exists in that file (so renaming or deleting a test
without updating the list fails here).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad-inputs.md"
_TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def _rows() -> list[tuple[int, str]]:
    rows = []
    for number, line in enumerate(DOC.read_text().splitlines(), start=1):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or set(line) <= set("|-: ") or cells[0] == "case":
            continue
        rows.append((number, line))
    return rows


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def test_the_list_has_entries_in_every_section():
    assert len(_rows()) >= 60
    headings = [line for line in DOC.read_text().splitlines() if line.startswith("## ")]
    assert len(headings) >= 8


@pytest.mark.parametrize(("line_number", "row"), _rows(), ids=lambda value: str(value)[:40])
def test_every_entry_names_an_existing_test(line_number: int, row: str):
    last_cell = row.strip().strip("|").split("|")[-1]
    found = _TEST_REF.findall(last_cell)
    assert found, f"docs/bad-inputs.md:{line_number} names no test: {row}"
    for file, function in found:
        path = ROOT / file
        assert path.is_file(), f"docs/bad-inputs.md:{line_number}: no file {file}"
        assert function in _test_functions(path), (
            f"docs/bad-inputs.md:{line_number}: {file} has no test {function}"
        )
