"""int8 per catalog entry, gated: the trained resnet18 quantised, measured and served, a bad
quantisation refused with its figures, and the catalog's mistakes named."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import requests
from PIL import Image

from bake.pipeline import bake
from bake.quantize import INT8_TOLERANCE, Int8Gate, QuantizationError
from runtime.bundle import GRAPH, Bundle
from runtime.files import sha256_of
from runtime.session import session_options, softmax
from runtime.settings import SessionSettings
from tests.backend_process import BackendProcess, start_backend
from tests.trained import LABELS, PREPROCESSING, fitted, pictures, save, write_image_sets
from weights.catalog import CatalogError, load_catalog
from weights.fetch import fetch

# --- the trained resnet18, quantised -----------------------------------------------------


@dataclass
class Baked:
    root: Path
    catalog: Path
    fetched: Path
    bundles: Path


def _int8_entry(model_id: str, digest: str, calibration: str) -> str:
    prep = ", ".join(f"{k} = {json.dumps(v)}" for k, v in PREPROCESSING.items())
    return (
        f'[models.{model_id}]\narchitecture = "resnet18"\nfile = "shapes.pt"\n'
        f'sha256 = "{digest}"\nlabels = {json.dumps(LABELS)}\npreprocessing = {{ {prep} }}\n'
        f'precision = "int8"\ncalibration = "{calibration}"\nvalidation = "validation"\n'
    )


@pytest.fixture(scope="session")
def baked(tmp_path_factory) -> Baked:
    """The trained model as `shapes8`, calibrated on pictures like those it serves, baked;
    `blank8` is the same entry calibrated on blank grey images (a real user's mistake)."""
    root = tmp_path_factory.mktemp("int8")
    checkpoint = save(fitted(), root / "shapes.pt")
    write_image_sets(root)
    (root / "blank").mkdir()
    for number in range(8):
        Image.new("RGB", (96, 96), (128, 128, 128)).save(root / "blank" / f"{number}.png")
    digest = sha256_of(checkpoint)
    catalog_path = root / "catalog.toml"
    catalog_path.write_text(
        'default = "shapes8"\n'
        + _int8_entry("shapes8", digest, "calibration")
        + _int8_entry("blank8", digest, "blank")
    )
    catalog = load_catalog(catalog_path)
    fetch(["shapes8", "blank8"], root / "fetched", catalog=catalog, progress=False)
    bake(["shapes8"], root / "fetched", root / "bundles", catalog=catalog, say=print)
    return Baked(root, catalog_path, root / "fetched", root / "bundles")


@pytest.fixture(scope="session")
def int8_backend(baked: Baked, tmp_path_factory):
    backend: BackendProcess = start_backend(
        baked.bundles, tmp_path_factory.mktemp("int8-backend") / "backend.log"
    )
    try:
        backend.wait_ready()
        # int8 kernels differ by CPU (VNNI or not): the reference check comes before ready
        log = backend.log()
        assert log.index('"event": "reference_checked"') < log.index('"event": "ready"')
        yield backend
    finally:
        backend.stop()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.mark.slow
def test_the_trained_model_is_served_in_int8_with_its_figures(baked: Baked, int8_backend):
    bundle = Bundle.read(baked.bundles / "shapes8", fix="")
    manifest = bundle.manifest
    gate = manifest.quantization
    assert manifest.precision == "int8" and gate is not None
    assert gate["validation_images"] == 200 and gate["max_top1_drop"] == 1.0
    assert gate["fp32_top1"] >= 95 and gate["top1_drop"] <= 1.0 and gate["speedup"] > 1
    assert gate["top1_drop"] == round(gate["fp32_top1"] - gate["int8_top1"], 2)
    assert manifest.reference.tolerance == INT8_TOLERANCE
    # The bundle's graph is the quantised one, not the float graph beside a note.
    ops = {node.op_type for node in onnx.load(str(bundle.graph)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = requests.get(f"{int8_backend.url}/models/shapes8", timeout=10).json()
    assert meta["precision"] == "int8" and meta["quantization"] == gate
    right = 0
    for image, label in pictures(200, seed=1):
        answer = requests.post(
            f"{int8_backend.url}/predict",
            files={"image": ("x.png", _png(image), "image/png")},
            timeout=30,
        ).json()
        right += answer["category"] == LABELS[label]
    # What the gate measured is what is served: the same images, the same top-1.
    assert 100 * right / 200 == gate["int8_top1"]


@pytest.mark.slow
def test_a_bad_quantisation_is_refused_with_its_figures(baked: Baked, tmp_path):
    dest = tmp_path / "bundles"
    catalog = load_catalog(baked.catalog)
    with pytest.raises(QuantizationError) as refused:
        bake(["blank8"], baked.fetched, dest, catalog=catalog, say=lambda _: None)
    message = str(refused.value)
    print(f"\n{message}")
    assert message.startswith("blank8: int8 refused: it loses more top-1 than allowed")
    for figure in ("% fp32, ", "% int8 on 200 validation images", "(a drop of ", "allowed 1)"):
        assert figure in message
    assert "x faster)" in message and "ms fp32" in message and "ms int8" in message
    assert list(dest.iterdir()) == []  # no bundle, nothing half-written


def test_the_gate_refuses_int8_that_is_not_faster():
    gate = Int8Gate(
        fp32_top1=97.5, int8_top1=97.5, validation_images=200, max_top1_drop=1.0,
        calibration_images=64, fp32_forward_ms=10.0, int8_forward_ms=10.5, timing_runs=30,
    )  # fmt: skip
    assert not gate.passed and gate.speedup == 0.95
    assert "(0.95x faster)" in gate.figures()
    for drop, passed in ((1.0, True), (1.01, False)):
        faster = replace(gate, int8_top1=97.5 - drop, int8_forward_ms=5.0)
        assert faster.passed is passed, faster.figures()


@pytest.mark.slow
def test_int8_kernels_that_round_differently_stay_within_the_start_checks_tolerance(
    baked: Baked,
):
    """The same int8 graph, QDQ fused into integer kernels and unfused in float: what a CPU
    with other kernels may answer. The reference check's tolerance must admit it."""
    graph = str(baked.bundles / "shapes8" / GRAPH)
    images = [image for image, _ in pictures(200, seed=1)]
    batch = Bundle.read(baked.bundles / "shapes8", fix="").manifest.preprocessing.batch(images)
    answers = []
    for level in ("basic", "all"):  # basic: no QDQ fusion
        options = session_options(SessionSettings(threads=2, optimization=level))
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        answers.append(softmax(session.run(None, {"image": batch})[0]))
    worst = float(np.abs(answers[0] - answers[1]).max())
    print(f"\nworst probability difference, fused vs unfused: {worst:.1e}")
    assert worst <= INT8_TOLERANCE


@pytest.mark.slow
def test_the_page_shows_the_models_precision(int8_backend, monkeypatch):
    from tests.frontend_page import open_page, reset_page, texts

    reset_page(monkeypatch)
    monkeypatch.setenv("SERVING_URL", int8_backend.url)
    monkeypatch.setenv("MODEL_PICKER", "off")
    at = open_page()
    assert not at.exception and not at.error
    [caption] = [c for c in texts(at.caption) if c.startswith("`shapes8`")]
    assert caption.startswith("`shapes8` int8 · ")
    assert "validation images" in caption and "x faster" in caption


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


def test_a_changed_image_set_or_allowed_drop_makes_a_new_bundle(tmp_path):
    """The bake's inputs digest covers the int8 recipe: same sets, same recipe; an image moved
    to another label, or another allowed drop, a different one (the bundle is rebuilt)."""
    from bake.pipeline import _recipe

    _sets(tmp_path)
    spec = 'precision = "int8"\ncalibration = "calibration"\nvalidation = "validation"'
    entry = load_catalog(_int8_catalog(tmp_path, spec)).entry("mine")
    first = _recipe(entry)
    assert _recipe(load_catalog(_int8_catalog(tmp_path, spec)).entry("mine")) == first
    assert _recipe(replace(entry, max_top1_drop=2)) != first
    (tmp_path / "validation" / "square" / "x.png").rename(
        tmp_path / "validation" / "disc" / "y.png"
    )
    assert _recipe(entry) != first
    assert _recipe(replace(entry, precision="fp32")) is None  # fp32 bundles keep their digest
