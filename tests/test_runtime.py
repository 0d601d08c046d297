"""The runtime on its own: bundles checked and verified, sessions, the start-time self-check."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from runtime.bundle import (
    GRAPH_DATA,
    MANIFEST,
    REFERENCE_IMAGE,
    Bundle,
    BundleError,
    Reference,
    read_index,
)
from runtime.selection import SelectionError, select
from runtime.session import ModelSession, softmax, top_classes
from runtime.settings import SessionSettings

FIX = "python -m bake --models resnet18 --weights W --dest D"


@pytest.fixture
def copy(bundles_dir, tmp_path):
    dest = tmp_path / "bundles"
    shutil.copytree(bundles_dir, dest)
    return dest


def test_a_good_bundle_checks_verifies_and_answers_its_reference(bundles_dir):
    bundle = Bundle.read(bundles_dir / "resnet18", fix=FIX)
    bundle.check(fix=FIX)
    assert bundle.verify(fix=FIX)
    session = ModelSession(bundle, SessionSettings(threads=2))
    session.check_reference()  # as built
    assert session.id == "resnet18" and len(session.categories) == 1000


def test_a_missing_file_is_named_with_the_fix(copy):
    (copy / "resnet18" / REFERENCE_IMAGE).unlink()
    bundle = Bundle.read(copy / "resnet18", fix=FIX)
    with pytest.raises(BundleError) as failure:
        bundle.check(fix=FIX)
    assert str(copy / "resnet18" / REFERENCE_IMAGE) in str(failure.value)
    assert "missing" in str(failure.value) and FIX in str(failure.value)


def test_an_altered_file_of_the_same_size_fails_verification_only(copy):
    data = copy / "resnet18" / GRAPH_DATA
    content = bytearray(data.read_bytes())
    content[-1] ^= 0x01
    data.write_bytes(bytes(content))
    bundle = Bundle.read(copy / "resnet18", fix=FIX)
    bundle.check(fix=FIX)  # sizes agree: only the digest can tell
    with pytest.raises(BundleError, match="altered"):
        bundle.verify(fix=FIX)


def test_verification_stops_when_asked(bundles_dir):
    bundle = Bundle.read(bundles_dir / "resnet18", fix=FIX)
    assert bundle.verify(fix=FIX, should_stop=lambda: True) is False


def test_a_manifest_of_another_format_is_refused_with_the_fix(copy):
    path = copy / "resnet18" / MANIFEST
    data = json.loads(path.read_text())
    data["format"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="format 99") as failure:
        Bundle.read(copy / "resnet18", fix=FIX)
    assert FIX in str(failure.value)


def test_an_index_of_another_format_is_refused_with_the_fix(copy):
    path = copy / "index.json"
    data = json.loads(path.read_text())
    data["format"] = 2  # what the bake wrote before the digests were XXH3-128
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="index format 2, this runtime reads format") as failure:
        read_index(copy)
    assert f"python -m bake --models {','.join(data['models'])} " in str(failure.value)


@pytest.mark.parametrize("text", ["[]", '{"models": ["resnet18"]}', "{"])
def test_a_file_that_is_no_index_is_refused_with_the_fix(copy, text):
    (copy / "index.json").write_text(text)
    with pytest.raises(BundleError, match="cannot be used") as failure:
        read_index(copy)
    assert "python -m bake --models" in str(failure.value)
    assert "another version" not in str(failure.value)


def test_a_directory_without_an_index_says_how_to_make_one(tmp_path):
    with pytest.raises(BundleError, match="python -m bake --models v1"):
        read_index(tmp_path)


def test_an_answer_unlike_the_builds_is_refused(copy):
    """The start-time self-check: a bundle whose reference answer does not reproduce here."""
    bundle = Bundle.read(copy / "resnet18", fix=FIX)
    top = bundle.manifest.reference.top
    shifted = [(index, p + 0.01) for index, p in top]  # what another runtime might answer
    wrong = replace(bundle, manifest=replace(bundle.manifest, reference=Reference(shifted, 1e-4)))
    session = ModelSession(wrong, SessionSettings(threads=2))
    with pytest.raises(BundleError, match="answers its reference image differently") as failure:
        session.check_reference()
    assert "resnet18" in str(failure.value) and "rebuild the image" in str(failure.value)


def test_a_graph_onnx_runtime_cannot_load_is_a_bundle_error(copy):
    (copy / "resnet18" / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(BundleError, match="ONNX Runtime cannot open the graph of 'resnet18'"):
        ModelSession(Bundle.read(copy / "resnet18", fix=FIX), SessionSettings())


def test_softmax_and_top_classes():
    logits = np.array([[1.0, 3.0, 2.0, 3.0]], dtype=np.float32)
    probabilities = softmax(logits)[0]
    assert probabilities.sum() == pytest.approx(1.0)
    assert top_classes(probabilities, 3) == [
        (1, pytest.approx(probabilities[1])),
        (3, pytest.approx(probabilities[3])),
        (2, pytest.approx(probabilities[2])),
    ]
    assert len(top_classes(probabilities, 20)) == 4


def test_selection_resolves_sets_and_names_what_exists():
    assert select("small,c", ["a", "b", "c"], {"small": ["a", "b"]}) == ["a", "b", "c"]
    assert select(["b", "b"], ["a", "b"], {}) == ["b"]
    with pytest.raises(SelectionError, match="unknown model 'z'; valid ids: a, b; sets: small"):
        select("z", ["a", "b"], {"small": ["a"]})
    with pytest.raises(SelectionError, match="no model selected"):
        select(" , ", ["a"], {})


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [({"threads": 0}, "threads"), ({"optimization": "max"}, "optimization")],
)
def test_impossible_session_settings_are_refused(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        SessionSettings(**kwargs)


def test_a_manifest_that_does_not_list_every_file_is_refused_with_the_fix(copy):
    path = copy / "resnet18" / MANIFEST
    data = json.loads(path.read_text())
    del data["artifacts"][GRAPH_DATA]  # the weights would go unverified
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=f"lacks {GRAPH_DATA}") as failure:
        Bundle.read(copy / "resnet18", fix=FIX)
    assert FIX in str(failure.value)


def test_non_finite_answers_to_the_reference_are_refused(bundles_dir, monkeypatch):
    session = ModelSession(Bundle.read(bundles_dir / "resnet18", fix=FIX), SessionSettings())
    monkeypatch.setattr(
        ModelSession, "probabilities", lambda self, batch: np.full((1, 1000), np.nan)
    )
    with pytest.raises(BundleError, match="answers its reference image differently"):
        session.check_reference()
