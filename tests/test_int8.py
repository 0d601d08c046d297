"""int8 per catalog entry, gated: the trained resnet18 quantised, measured and served, a bad
quantisation refused with its figures, and the catalog's mistakes named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.trained import LABELS
from weights.catalog import CatalogError, load_catalog

# --- the catalog ----------------------------------------------------------------------------


def _sets(root: Path, classes: list[str] = LABELS[:2]) -> None:
    """A calibration folder and a validation folder (one sub-folder per class), one image each."""
    for folder in ["calibration", *(f"validation/{c}" for c in classes)]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / folder / "x.png")


def _int8_catalog(root: Path, extra: str) -> Path:
    path = root / "catalog.toml"
    path.write_text(
        f'[models.mine]\narchitecture = "resnet18"\nfile = "x.pt"\nsha256 = "{"0" * 64}"\n'
        f"labels = {json.dumps(LABELS)}\n{extra}\n"
    )
    return path


def test_an_int8_entry_reads_its_sets_relative_to_the_catalog(tmp_path):
    _sets(tmp_path)
    catalog = load_catalog(
        _int8_catalog(
            tmp_path,
            'precision = "int8"\ncalibration = "calibration"\nvalidation = "validation"\n'
            "max_top1_drop = 0.5",
        )
    )
    entry = catalog.entry("mine")
    assert entry.calibration_images() == [tmp_path / "calibration" / "x.png"]
    assert entry.validation_images() == [
        (tmp_path / "validation" / "disc" / "x.png", 0),
        (tmp_path / "validation" / "square" / "x.png", 1),
    ]
    assert entry.allowed_top1_drop == 0.5
    assert "precision" not in entry.to_dict()  # how to bake stays out of the weights lock


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ('precision = "int8"\ncalibration = "calibration"', "needs a labelled validation set"),
        ('precision = "int8"\nvalidation = "validation"', "needs calibration images"),
        ('precision = "int4"', "precision 'int4' is not one of fp32, int8"),
        ('validation = "validation"', 'validation go with precision = "int8"'),
        (
            'precision = "int8"\ncalibration = "calibration"\nvalidation = "validation"\n'
            "max_top1_drop = -1",
            "max_top1_drop must be 0 to 100 points",
        ),
        (
            'precision = "int8"\ncalibration = "nowhere"\nvalidation = "validation"',
            "calibration set .*nowhere is not a directory",
        ),
        (
            'precision = "int8"\ncalibration = "calibration/*.jpg"\nvalidation = "validation"',
            r"calibration set the pattern .*\*\.jpg holds no images",
        ),
        (
            'precision = "int8"\ncalibration = "calibration"\nvalidation = "nowhere"',
            "validation set .*nowhere is not a directory",
        ),
        (
            'precision = "int8"\ncalibration = "calibration"\nvalidation = "calibration"',
            "validation set .*calibration has no sub-directories",
        ),
        (
            'precision = "int8"\ncalibration = "calibration"\nvalidation = "empty"',
            r"validation set .*empty holds no images .* in its sub-directories \['disc'\]",
        ),
        (
            'precision = "int8"\ncalibration = "calibration"\nvalidation = "validation"',
            r"sub-directories \['triangle'\] that are not labels of this model",
        ),
    ],
)
def test_int8_entry_mistakes_are_named(tmp_path, spec, complaint):
    _sets(tmp_path, [*LABELS[:2], "triangle"] if "triangle" in complaint else LABELS[:2])
    (tmp_path / "empty" / "disc").mkdir(parents=True)
    (tmp_path / "empty" / "disc" / "notes.txt").write_text("not an image")
    with pytest.raises(CatalogError, match=f"model 'mine': .*{complaint}"):
        load_catalog(_int8_catalog(tmp_path, spec))
