"""The bake step: fetched file -> ONNX export -> verification -> bundle; skip when unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torchvision.models import get_model, get_weight

import bake.pipeline
import runtime.bundle
from bake.export import export_onnx
from bake.pipeline import bake as bake_bundles
from bake.verify import VerificationError
from runtime.bundle import (
    GRAPH,
    GRAPH_DATA,
    INDEX,
    MANIFEST,
    REFERENCE_IMAGE,
    Bundle,
    BundleIndex,
    xxh3_of,
)
from runtime.session import ModelSession
from runtime.settings import SessionSettings
from weights.lock import read_lock

ROOT = Path(__file__).resolve().parents[1]


def _manifest(bundles_dir: Path, model_id: str):
    return Bundle.read(bundles_dir / model_id, fix="-").manifest


def test_a_bundle_holds_the_graph_its_weights_and_a_full_manifest(bundles_dir, baked_dir):
    directory = bundles_dir / "resnet18"
    assert {p.name for p in directory.iterdir()} == {GRAPH, GRAPH_DATA, REFERENCE_IMAGE, MANIFEST}
    manifest = _manifest(bundles_dir, "resnet18")
    meta = get_weight("ResNet18_Weights.IMAGENET1K_V1").meta
    assert (manifest.id, manifest.architecture) == ("resnet18", "resnet18")
    assert manifest.weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert manifest.categories == meta["categories"]
    assert manifest.parameters == meta["num_params"]
    assert manifest.imagenet_acc1 == meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert (manifest.preprocessing.resize, manifest.input_size) == (256, 224)
    fetched = read_lock(baked_dir)["resnet18"]
    assert (manifest.source.sha256, manifest.source.size) == (fetched.sha256, fetched.size)
    for name, artifact in manifest.artifacts.items():  # every file, digest and size
        assert xxh3_of(directory / name) == artifact.xxh3_128
        assert (directory / name).stat().st_size == artifact.size
    assert set(manifest.versions) == {
        "torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "numpy", "pillow", "opset",
    }  # fmt: skip
    assert manifest.versions["torch"] == torch.__version__.split("+")[0]
    checked = manifest.verification
    assert checked["images"] >= 8 and checked["top5_positions_checked"] > 0
    assert 0 <= checked["worst_probability_difference"] <= checked["tolerance"] == 1e-4
    assert manifest.untrained is False and manifest.export_seconds > 0
    assert len(manifest.reference.top) == 5


def test_the_graph_has_a_dynamic_batch_and_external_weights(bundles_dir):
    directory = bundles_dir / "mobilenet_v3_large"
    graph = onnx.load(str(directory / GRAPH), load_external_data=False)
    batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")
    external = [t for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) > 50  # every weight tensor, read from the data file
    assert (directory / GRAPH).stat().st_size < (directory / GRAPH_DATA).stat().st_size / 20


def test_every_batch_size_answers_as_one_image_at_a_time(bundles_dir):
    bundle = Bundle.read(bundles_dir / "resnet18", fix="-")
    session = ModelSession(bundle, SessionSettings(threads=2))
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((5, 3, 224, 224)).astype(np.float32)
    together = session.probabilities(batch)
    apart = np.concatenate([session.probabilities(batch[i : i + 1]) for i in range(5)])
    assert np.abs(together - apart).max() < 1e-5


def test_the_index_lists_the_bundles_with_the_catalogs_default_and_sets(bundles_dir):
    index = BundleIndex.from_json((bundles_dir / INDEX).read_text())
    assert index.models == ["resnet18", "mobilenet_v3_large"]
    assert index.default == "resnet18" and index.sets["small"] == index.models
    assert index.select("small") == index.models and index.select(None) == index.models


def _copies(bundles_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "bundles"
    shutil.copytree(bundles_dir, dest)
    return dest


def _count_exports(monkeypatch) -> list[str]:
    exported: list[str] = []
    real = bake.pipeline.export_onnx

    def counted(module, input_size, directory, *, model_id):
        exported.append(model_id)
        return real(module, input_size, directory, model_id=model_id)

    monkeypatch.setattr(bake.pipeline, "export_onnx", counted)
    return exported


def test_unchanged_inputs_are_verified_and_kept(
    bundles_dir, baked_dir, weights_origin, tmp_path, monkeypatch
):
    dest = _copies(bundles_dir, tmp_path)
    exported = _count_exports(monkeypatch)
    hashed: list[str] = []
    real_digest = runtime.bundle.xxh3_of
    monkeypatch.setattr(
        runtime.bundle,
        "xxh3_of",
        lambda path, *a: hashed.append(path.name) or real_digest(path, *a),
    )
    said: list[str] = []
    manifests = bake_bundles(
        ["resnet18", "mobilenet_v3_large"], baked_dir, dest, catalog=weights_origin.catalog,
        say=said.append,
    )  # fmt: skip
    assert exported == []
    assert sorted(hashed) == sorted([GRAPH, GRAPH_DATA, REFERENCE_IMAGE] * 2)  # kept: verified
    assert [m.id for m in manifests] == ["resnet18", "mobilenet_v3_large"]
    assert all("bundle present, verified, inputs unchanged; skipping" in line for line in said)


@pytest.mark.slow
def test_an_altered_bundle_is_built_again(
    bundles_dir, baked_dir, weights_origin, tmp_path, monkeypatch
):
    dest = _copies(bundles_dir, tmp_path)
    data = dest / "resnet18" / GRAPH_DATA
    content = bytearray(data.read_bytes())
    content[1000] ^= 0xFF
    data.write_bytes(bytes(content))
    exported = _count_exports(monkeypatch)
    bake_bundles(["resnet18"], baked_dir, dest, catalog=weights_origin.catalog, say=print)
    assert exported == ["resnet18"]
    Bundle.read(dest / "resnet18", fix="-").verify(fix="-")  # whole again
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no leftovers


@pytest.mark.slow
def test_new_weights_make_a_new_bundle(baked_dir, weights_origin, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(baked_dir, weights)
    dest = tmp_path / "bundles"
    bake_bundles(["resnet18"], weights, dest, catalog=weights_origin.catalog, say=print)
    first = _manifest(dest, "resnet18")
    # Other weights for the same model: a new fetched file, so a new bundle.
    from weights.demo import bake_untrained

    (weights / read_lock(weights)["resnet18"].file).unlink()
    bake_untrained(["resnet18"], weights, catalog=weights_origin.catalog)
    exported = _count_exports(monkeypatch)
    bake_bundles(["resnet18"], weights, dest, catalog=weights_origin.catalog, say=print)
    second = _manifest(dest, "resnet18")
    assert exported == ["resnet18"]
    assert second.inputs != first.inputs and second.untrained
    assert second.artifacts[GRAPH_DATA].xxh3_128 != first.artifacts[GRAPH_DATA].xxh3_128


def test_leftovers_of_a_killed_bake_are_cleared_and_never_indexed(
    bundles_dir, baked_dir, weights_origin, tmp_path
):
    dest = _copies(bundles_dir, tmp_path)
    half_made = dest / ".resnet18.baking-abc"
    shutil.copytree(dest / "resnet18", half_made)  # killed after its manifest was written
    replaced = dest / ".mobilenet_v3_large.old-1"
    (dest / "mobilenet_v3_large").rename(replaced)  # killed between the two renames
    said: list[str] = []
    bake_bundles(
        ["resnet18", "mobilenet_v3_large"], baked_dir, dest, catalog=weights_origin.catalog,
        say=said.append,
    )  # fmt: skip
    assert sorted(p.name for p in dest.iterdir()) == [INDEX, "mobilenet_v3_large", "resnet18"]
    assert any("restoring mobilenet_v3_large" in line for line in said)  # the only copy: kept
    assert json.loads((dest / INDEX).read_text())["models"] == ["resnet18", "mobilenet_v3_large"]
    Bundle.read(dest / "mobilenet_v3_large", fix="-").verify(fix="-")


def test_the_inputs_digest_covers_the_code_that_shapes_a_bundle(tmp_path):
    """The catalog's preprocessing and metadata (weights/) shape a bundle as much as bake/."""
    assert {p.name for p in bake.pipeline.CODE} == {"weights", "bake", "runtime"}
    assert {"numpy", "pillow", "onnxruntime", "torch"} <= set(bake.pipeline.PACKAGES)
    copies = []
    for package in bake.pipeline.CODE:
        copies.append(tmp_path / package.name)
        shutil.copytree(package, copies[-1], ignore=shutil.ignore_patterns("__pycache__"))
    before = bake.pipeline.code_digest(tuple(copies))
    catalog = tmp_path / "weights" / "catalog.py"
    catalog.write_text(catalog.read_text() + "\n# a change\n")
    assert bake.pipeline.code_digest(tuple(copies)) != before


def _export_nan_weights(module, input_size, directory, *, model_id):
    """Weights that make both the eager model and the graph answer NaN."""
    with torch.no_grad():
        module.fc.weight.fill_(float("nan"))
    return export_onnx(module, input_size, directory, model_id=model_id)


@pytest.mark.slow
def test_non_finite_answers_fail_the_build(baked_dir, weights_origin, tmp_path, monkeypatch):
    """NaN differs from NaN by NaN, which is not above any tolerance: it must still fail."""
    monkeypatch.setattr(bake.pipeline, "export_onnx", _export_nan_weights)
    with pytest.raises(VerificationError, match=r"resnet18: .* non-finite values"):
        bake_bundles(
            ["resnet18"], baked_dir, tmp_path / "bundles", catalog=weights_origin.catalog,
            say=print,
        )  # fmt: skip
    assert not (tmp_path / "bundles" / "resnet18").exists()


def _export_other_weights(module, input_size, directory, *, model_id):
    """An export of the wrong weights: what a broken exporter would write."""
    torch.manual_seed(12345)
    wrong = get_model("resnet18", weights=None).eval()
    return export_onnx(wrong, input_size, directory, model_id=model_id)


@pytest.mark.slow
def test_a_graph_that_answers_otherwise_fails_the_build_and_writes_nothing(
    baked_dir, weights_origin, tmp_path, monkeypatch
):
    dest = tmp_path / "bundles"
    monkeypatch.setattr(bake.pipeline, "export_onnx", _export_other_weights)
    with pytest.raises(VerificationError) as failure:
        bake_bundles(["resnet18"], baked_dir, dest, catalog=weights_origin.catalog, say=print)
    message = str(failure.value)
    assert message.startswith("resnet18: the compiled model does not answer as torchvision's")
    assert "worst probability difference" in message and "tolerance 0.0001" in message
    assert "No bundle was written" in message
    assert list(dest.iterdir()) == [] or [p.name for p in dest.iterdir()] == [INDEX]


@pytest.mark.slow
def test_preprocessing_that_is_not_torchvisions_fails_the_build(
    baked_dir, weights_origin, tmp_path, monkeypatch
):
    """The verification runs each side's whole pipeline: a wrong resize is caught too."""
    from weights.catalog import CatalogEntry

    real = CatalogEntry.runtime_preprocessing

    def off_by_a_little(self):
        return replace(real(self), interpolation="bicubic")  # torchvision's is bilinear

    monkeypatch.setattr(CatalogEntry, "runtime_preprocessing", off_by_a_little)
    with pytest.raises(VerificationError, match="resnet18: the compiled model does not answer"):
        bake_bundles(
            ["resnet18"], baked_dir, tmp_path / "bundles", catalog=weights_origin.catalog,
            say=print,
        )  # fmt: skip
    assert not (tmp_path / "bundles" / "resnet18").exists()


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bake", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.slow
def test_the_command_shows_its_progress(baked_dir, weights_origin, tmp_path):
    env = {"WEIGHTS_CATALOG": str(weights_origin.catalog_path)}
    args = ("--models", "resnet18", "--weights", str(baked_dir), "--dest", str(tmp_path))
    first = _cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert (
        lines[0]
        == "resnet18 (1/1): exporting resnet18 from "
        + read_lock(baked_dir)["resnet18"].file
        + " to ONNX"
    )
    assert any(line.startswith("resnet18: exported in ") for line in lines)
    assert any("verified against torchvision on 10 images" in line for line in lines)
    assert any(
        line.startswith(f"resnet18: bundle written to {tmp_path / 'resnet18'}") for line in lines
    )
    again = _cli(*args, env=env)
    assert again.returncode == 0
    assert "resnet18 (1/1): bundle present, verified, inputs unchanged; skipping" in again.stdout
    index = json.loads((tmp_path / INDEX).read_text())
    assert index["models"] == ["resnet18"]


def test_the_command_names_what_is_wrong(baked_dir, tmp_path):
    unknown = _cli("--models", "resnet9000", "--weights", str(baked_dir), "--dest", str(tmp_path))
    assert unknown.returncode == 1
    assert "unknown model 'resnet9000'" in unknown.stderr and "resnet152" in unknown.stderr
    nothing = _cli(
        "--models", "resnet18", "--weights", str(tmp_path / "none"), "--dest", str(tmp_path)
    )
    assert nothing.returncode == 1
    assert "python -m weights fetch" in nothing.stderr
