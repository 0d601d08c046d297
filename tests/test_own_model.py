"""A user's own classifier, end to end: a resnet18 trained here on four generated classes,
given as a local file, an https URL (real TLS), a Hub file and a gs:// object (a real storage
emulator), fetched, verified, baked, served with its own labels, and right on held-out images.
"""

from __future__ import annotations

import io
import json
import os
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import torch
import trustme
from torchvision.models import get_model

from bake.pipeline import bake
from runtime.bundle import MANIFEST
from runtime.files import sha256_of
from tests.backend_process import BackendProcess, start_backend
from tests.gcs import storage_emulator, upload
from tests.origin import OriginServer, Route
from tests.trained import LABELS, PREPROCESSING, fitted, pictures, save
from weights.catalog import CatalogError, load_catalog
from weights.fetch import FetchError, fetch
from weights.store import WeightsError, WeightsStore, state_dict_of

ROOT = Path(__file__).resolve().parents[1]
HUB_REPO, HUB_REVISION = "acme/shapes", "89abcdef0123456789abcdef0123456789abcdef"
SOURCES = ("shapes", "shapes_https", "shapes_hub", "shapes_gcs")
HELD_OUT = 200


@dataclass
class Own:
    root: Path
    checkpoint: Path
    sha256: str
    catalog_path: Path
    fetched: Path
    bundles: Path
    records: dict
    https_gets: list[str]
    hub_gets: list[str]


def _entry(model_id: str, file: str, digest: str, labels: str) -> str:
    prep = ", ".join(f"{k} = {json.dumps(v)}" for k, v in PREPROCESSING.items())
    return (
        f'[models.{model_id}]\narchitecture = "resnet18"\nfile = "{file}"\n'
        f'sha256 = "{digest}"\nlabels = {labels}\npreprocessing = {{ {prep} }}\n'
    )


def _tls_server(root: Path) -> tuple[OriginServer, Path]:
    """An OriginServer speaking TLS with a certificate of a throw-away CA; the CA's file."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = OriginServer()
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server, ca_file


@pytest.fixture(scope="session")
def own(tmp_path_factory) -> Own:
    root = tmp_path_factory.mktemp("own")
    trained = fitted()
    print(f"\ntrained resnet18 on {len(LABELS)} generated classes in {trained.seconds:.1f} s")
    checkpoint = save(trained, root / "shapes.pt")
    digest = sha256_of(checkpoint)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    tls, ca_file = _tls_server(root)
    tls.routes["/files/shapes.pt"] = Route(checkpoint)
    with tls, OriginServer() as hub, storage_emulator(root / "gcs.log") as gcs:
        hub.routes[f"/{HUB_REPO}/resolve/{HUB_REVISION}/shapes.pt"] = Route(
            checkpoint, headers={"X-Repo-Commit": HUB_REVISION, "ETag": f'"{digest}"'}
        )
        with pytest.MonkeyPatch.context() as env:
            env.setenv("REQUESTS_CA_BUNDLE", str(ca_file))  # requests trusts the test CA only here
            gs_url = upload(gcs, "shapes-bucket", "models/shapes.pt", checkpoint, env)
            labels = json.dumps(LABELS)
            catalog_path = root / "catalog.toml"
            catalog_path.write_text(
                'default = "shapes"\n[sets]\nshapes = ' + json.dumps(list(SOURCES)) + "\n"
                + _entry("shapes", "shapes.pt", digest, '"labels.txt"')
                + _entry("shapes_https", f"https://127.0.0.1:{tls.httpd.server_address[1]}"
                         "/files/shapes.pt", digest, labels)
                + _entry("shapes_hub", f"hf://{HUB_REPO}@{HUB_REVISION}/shapes.pt", digest, labels)
                + _entry("shapes_gcs", gs_url, digest, labels)
            )  # fmt: skip
            catalog = load_catalog(catalog_path)
            fetched = root / "fetched"
            records = fetch(
                SOURCES, fetched, catalog=catalog, hub_endpoint=hub.base_url, progress=False
            )
        bundles = root / "bundles"
        bake(list(SOURCES), fetched, bundles, catalog=catalog, say=lambda _: None)
        return Own(
            root, checkpoint, digest, catalog_path, fetched, bundles,
            {r.id: r for r in records}, tls.gets(), hub.gets(),
        )  # fmt: skip


@pytest.fixture(scope="session")
def own_backend(own: Own, tmp_path_factory):
    backend: BackendProcess = start_backend(
        own.bundles, tmp_path_factory.mktemp("own-backend") / "backend.log"
    )
    try:
        backend.wait_ready()
        yield backend
    finally:
        backend.stop()


def _png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _predict(backend: BackendProcess, image, **fields) -> dict:
    answer = requests.post(
        f"{backend.url}/predict",
        files={"image": ("x.png", _png(image), "image/png")},
        data={k: str(v) for k, v in fields.items()},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


# --- the four sources, one verified file --------------------------------------------------


def test_every_source_ends_in_the_same_verified_file(own: Own):
    assert {i: r.sha256 for i, r in own.records.items()} == dict.fromkeys(SOURCES, own.sha256)
    for model_id, record in own.records.items():
        assert sha256_of(own.fetched / record.file) == own.sha256, model_id
    assert own.records["shapes"].source == str(own.root / "shapes.pt")
    assert own.records["shapes_https"].source.startswith("https://127.0.0.1:")
    assert own.https_gets == ["/files/shapes.pt"]  # over TLS, verified against the test CA
    assert f"/{HUB_REPO}/resolve/{HUB_REVISION}/shapes.pt" in own.hub_gets
    assert own.records["shapes_gcs"].source == "gs://shapes-bucket/models/shapes.pt"
    assert not [p for p in own.fetched.iterdir() if p.name.startswith(".")]  # no leftovers


def test_https_with_an_untrusted_certificate_is_refused(own: Own, tmp_path):
    tls, _ = _tls_server(tmp_path)  # a CA nobody was told about
    tls.routes["/files/shapes.pt"] = Route(own.checkpoint)
    url = f"https://127.0.0.1:{tls.httpd.server_address[1]}/files/shapes.pt"
    path = tmp_path / "catalog.toml"
    path.write_text(_entry("mine", url, own.sha256, json.dumps(LABELS)))
    with tls, pytest.raises(FetchError, match=r"mine: could not download .*SSLError"):
        fetch(["mine"], tmp_path / "dest", catalog=load_catalog(path), progress=False)
    assert list((tmp_path / "dest").iterdir()) == []


def test_the_bundle_carries_the_labels(own: Own):
    manifest = json.loads((own.bundles / "shapes" / MANIFEST).read_text())
    assert manifest["categories"] == LABELS and manifest["weights"] is None
    assert manifest["imagenet_acc1"] is None
    assert manifest["source"]["sha256"] == own.sha256
    assert manifest["preprocessing"]["crop"] == PREPROCESSING["crop"]
    assert manifest["parameters"] == sum(
        p.numel() for p in get_model("resnet18", num_classes=4).parameters()
    )


# --- served -----------------------------------------------------------------------------


def test_served_with_its_labels_and_right_on_held_out_images(own_backend):
    held_out = pictures(HELD_OUT, seed=1)  # the training pictures came from seed 0
    right = 0
    for image, label in held_out:
        answer = _predict(own_backend, image)
        assert answer["model"] == "shapes"
        assert {p["label"] for p in answer["predictions"]} <= set(LABELS)
        right += answer["category"] == LABELS[label]
    print(f"\nheld-out accuracy through the served bundle: {right}/{HELD_OUT}")
    assert right / HELD_OUT >= 0.95


def test_each_source_serves_the_same_answers(own_backend):
    for image, _ in pictures(6, seed=2):
        answers = {_predict(own_backend, image, model=m)["category"] for m in SOURCES}
        assert len(answers) == 1 and answers <= set(LABELS)


def test_models_endpoint_gives_the_labels(own_backend):
    assert requests.get(f"{own_backend.url}/models", timeout=10).json() == list(SOURCES)
    meta = requests.get(f"{own_backend.url}/models/shapes_gcs", timeout=10).json()
    assert meta["labels"] == LABELS and meta["num_classes"] == 4
    assert meta["weights"] is None and meta["source"] == "gs://shapes-bucket/models/shapes.pt"


def test_top_k_above_the_number_of_classes_is_clamped(own_backend):
    image, _ = pictures(1, seed=3)[0]
    answer = _predict(own_backend, image, top_k=10)
    predictions = answer["predictions"]
    assert sorted(p["label"] for p in predictions) == sorted(LABELS)
    assert [p["probability"] for p in predictions] == sorted(
        (p["probability"] for p in predictions), reverse=True
    )


# --- refused, naming the entry, the file and what differs ---------------------------------


def _catalog(tmp_path: Path, file: str, digest: str, labels: list[str] = LABELS) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text('default = "mine"\n' + _entry("mine", file, digest, json.dumps(labels)))
    return path


def test_a_wrong_sha256_is_refused_and_the_file_removed(own: Own, tmp_path):
    wrong = "ab" * 32
    catalog = load_catalog(_catalog(tmp_path, str(own.checkpoint), wrong))
    with pytest.raises(FetchError) as err:
        fetch(["mine"], tmp_path / "dest", catalog=catalog, progress=False)
    message = str(err.value)
    assert message.startswith("mine: sha256 mismatch for ") and str(own.checkpoint) in message
    assert wrong in message and own.sha256 in message and "file was removed" in message
    assert list((tmp_path / "dest").iterdir()) == []


def _bake_refused(own: Own, tmp_path: Path, checkpoint: Path, labels: list[str]) -> str:
    catalog = load_catalog(_catalog(tmp_path, str(checkpoint), sha256_of(checkpoint), labels))
    fetch(["mine"], tmp_path / "fetched", catalog=catalog, progress=False)
    dest = tmp_path / "bundles"
    with pytest.raises(WeightsError) as err:
        bake(["mine"], tmp_path / "fetched", dest, catalog=catalog, say=lambda _: None)
    assert [p.name for p in dest.iterdir()] == []  # nothing half-written, not even hidden
    message = str(err.value)
    assert message.startswith("model 'mine', file ") and "mine-" in message
    return message


def test_a_checkpoint_of_another_architecture_is_refused_at_bake(own: Own, tmp_path):
    other = tmp_path / "other.pt"
    torch.save(get_model("resnet34", weights=None, num_classes=4).state_dict(), other)
    message = _bake_refused(own, tmp_path, other, LABELS)
    assert "not a checkpoint of this architecture (ResNet)" in message
    assert "unexpected" in message and "layer1.2." in message


def test_a_label_count_that_does_not_match_the_head_is_refused_at_bake(own: Own, tmp_path):
    message = _bake_refused(own, tmp_path, own.checkpoint, [*LABELS, "triangle"])
    assert "the labels name 5 classes" in message and "has 4 outputs" in message


# --- checkpoint shapes users have -----------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    ],
    ids=["plain", "state_dict", "model", "data_parallel", "wrapped_data_parallel"],
)
def test_checkpoint_shapes_users_have_are_read(wrap):
    state = {"fc.weight": torch.ones(4, 2), "fc.bias": torch.zeros(4)}
    assert state_dict_of(wrap(state), where="x").keys() == state.keys()


@pytest.mark.parametrize(
    ("checkpoint", "found"),
    [
        ({"epoch": 3, "optimizer": {"lr": 0.1}}, "{'epoch': int, 'optimizer': dict}"),
        ([torch.ones(1)], "a list"),
        ({"fc.weight": torch.ones(1), "step": 3}, "'step': int"),
    ],
)
def test_anything_else_is_refused_naming_what_was_found(checkpoint, found):
    with pytest.raises(WeightsError, match="x: not a state dict of tensors") as err:
        state_dict_of(checkpoint, where="x")
    assert found in str(err.value)


def test_a_wrapped_data_parallel_checkpoint_loads_as_the_plain_one(own: Own, tmp_path):
    plain = torch.load(own.checkpoint, weights_only=True)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": {f"module.{k}": v for k, v in plain.items()}, "epoch": 9}, wrapped)
    catalog = load_catalog(_catalog(tmp_path, str(wrapped), sha256_of(wrapped)))
    fetch(["mine"], tmp_path / "fetched", catalog=catalog, progress=False)
    loaded = WeightsStore(tmp_path / "fetched").load("mine")
    direct = get_model("resnet18", weights=None, num_classes=4)
    direct.load_state_dict(plain)
    x = torch.randn(2, 3, 48, 48)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), direct.eval()(x))


# --- the catalog ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ('file = "x.pt"\nlabels = ["a", "b"]', "`sha256` .* is required"),
        (f'file = "x.pt"\nsha256 = "{"0" * 64}"', "`labels` must name at least two"),
        (f'file = "x.pt"\nsha256 = "{"0" * 64}"\nlabels = ["a", "a"]', "labels repeated"),
        (f'file = "ftp://h/x.pt"\nsha256 = "{"0" * 64}"\nlabels = ["a", "b"]', "use a path"),
        (f'file = "hf://x.pt"\nsha256 = "{"0" * 64}"\nlabels = ["a", "b"]', "hf://<owner>"),
        (f'file = "x.pt"\nsha256 = "{"0" * 64}"\nlabels = "none.txt"', "labels file"),
        ('weights = "ResNet18_Weights.IMAGENET1K_V1"\nlabels = ["a", "b"]', "bring their own"),
        ('file = "x.pt"\nweights = "ResNet18_Weights.IMAGENET1K_V1"', "takes no weights"),
    ],
)
def test_own_entry_mistakes_are_named(tmp_path, spec, complaint):
    path = tmp_path / "catalog.toml"
    path.write_text(f'[models.mine]\narchitecture = "resnet18"\n{spec}\n')
    with pytest.raises(CatalogError, match=f"model 'mine': .*{complaint}"):
        load_catalog(path)


def test_cli_list_shows_user_entries_next_to_the_builtin_ones(own: Own):
    result = subprocess.run(
        [sys.executable, "-m", "weights", "--catalog", str(own.catalog_path), "list"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "torchvision" in rows["resnet152"] and "yours (catalog.toml)" in rows["shapes"]
    assert rows["shapes"].split()[1] == "(default)" and " 4 " in rows["shapes"]
    assert "set shapes: shapes, shapes_https, shapes_hub, shapes_gcs" in result.stdout


def test_offline_demo_weights_of_an_own_model_have_its_head(own: Own, tmp_path):
    """scripts/run --offline writes untrained weights: for your model, one output per label."""
    from weights.demo import bake_untrained

    catalog = load_catalog(own.catalog_path)
    bake_untrained(["shapes"], tmp_path, catalog=catalog)
    module = WeightsStore(tmp_path).load("shapes", allow_untrained=True)
    with torch.inference_mode():
        assert tuple(module(torch.randn(1, 3, 48, 48)).shape) == (1, len(LABELS))


@pytest.mark.slow
def test_a_timm_architecture_is_baked_with_timms_preprocessing(tmp_path):
    """timm at build time only: `timm/<name>` builds the model, and its eval transforms are
    the default preprocessing (resnet10t: 176 px, crop_pct 0.875, bicubic)."""
    from weights.demo import write_untrained

    labels = ["cat", "dog", "fox"]
    checkpoint, digest = write_untrained(
        "timm/resnet10t", tmp_path / "files", stem="fox", num_classes=len(labels)
    )
    path = tmp_path / "catalog.toml"
    path.write_text(
        f'[models.fox]\narchitecture = "timm/resnet10t"\nfile = "{checkpoint}"\n'
        f'sha256 = "{digest}"\nlabels = {json.dumps(labels)}\n'
    )
    catalog = load_catalog(path)
    fetch(["fox"], tmp_path / "fetched", catalog=catalog, progress=False)
    [manifest] = bake(
        ["fox"], tmp_path / "fetched", tmp_path / "bundles", catalog=catalog, say=lambda _: None
    )
    assert manifest.architecture == "timm/resnet10t" and manifest.categories == labels
    prep = manifest.preprocessing
    assert (prep.resize, prep.crop, prep.interpolation) == (201, 176, "bicubic")
    assert manifest.verification["worst_probability_difference"] <= 1e-4


def test_an_unknown_timm_name_is_named(tmp_path):
    path = tmp_path / "catalog.toml"
    path.write_text(
        '[models.m]\narchitecture = "timm/resnet9000"\nfile = "x.pt"\n'
        f'sha256 = "{"0" * 64}"\nlabels = ["a", "b"]\n'
    )
    with pytest.raises(CatalogError, match="unknown architecture 'timm/resnet9000'"):
        load_catalog(path)


def test_the_log_names_the_models_labels(own_backend):
    loaded = [
        json.loads(line.removeprefix("[backend] "))
        for line in own_backend.log().splitlines()
        if '"event": "model_loaded"' in line
    ]
    assert {entry["model"]: entry["labels"] for entry in loaded}["shapes"] == LABELS


def test_the_page_shows_the_models_own_labels(own_backend, monkeypatch):
    from tests.frontend_page import chart_rows, classify_upload, open_page, reset_page, texts

    reset_page(monkeypatch)
    monkeypatch.setenv("SERVING_URL", own_backend.url)
    monkeypatch.setenv("MODEL_PICKER", "off")
    image, _ = pictures(1, seed=3)[0]
    expected = _predict(own_backend, image)
    at = classify_upload(open_page(), "mine.png", _png(image), "image/png")
    assert not at.exception and not at.error
    assert any("one of 4 categories" in m for m in texts(at.markdown) + texts(at.caption))
    assert [row for row, _ in chart_rows(at)] == [p["label"] for p in expected["predictions"]]
    assert {row for row, _ in chart_rows(at)} == set(LABELS)  # top_k clamped to its 4 classes
    assert any(f"**{expected['category']}**" in m for m in texts(at.markdown))
