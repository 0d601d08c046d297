"""Weights: catalog, build-time fetch, lock, offline store."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models import get_model, get_weight

from runtime.files import sha256_of
from tests.origin import HUB_FILE, HUB_REPO, HUB_REVISION, Route
from weights.catalog import CatalogError, load_catalog
from weights.demo import bake_untrained, untrained_state_dict
from weights.fetch import FetchError, fetch
from weights.lock import LOCK_NAME, read_lock, write_lock
from weights.pins import read_pins
from weights.store import WeightsError, WeightsStore

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "weights", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


# --- catalog -------------------------------------------------------------------------


def test_builtin_catalog_names_the_assignment_models_and_small_ones():
    catalog = load_catalog()
    assert catalog.default == "resnet152"
    assert catalog.select("v1") == ["resnet152"]
    assert catalog.select("v2") == ["resnet152", "convnext_base", "swin_b", "vgg16"]
    small = [i for i in catalog.ids if catalog.entry(i).metadata()["file_size_mb"] < 50]
    assert len(small) >= 2
    assert any(catalog.entry(i).hub for i in catalog.ids)
    for entry in catalog.models.values():
        assert not entry.weights.endswith("DEFAULT")


def test_catalog_metadata_comes_from_torchvision():
    entry = load_catalog().entry("resnet152")
    meta = get_weight("ResNet152_Weights.IMAGENET1K_V2").meta
    facts = entry.metadata()
    assert facts["parameters"] == meta["num_params"]
    assert facts["imagenet_acc1"] == meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert facts["file_size_mb"] == meta["_file_size"]
    assert entry.categories == meta["categories"]
    assert entry.file_name == "resnet152-f82ba261.pth" and entry.hash_prefix == "f82ba261"


def test_unknown_id_lists_the_valid_ones():
    with pytest.raises(CatalogError) as err:
        load_catalog().select("v1,resnet9000")
    assert "resnet9000" in str(err.value)
    assert "resnet152" in str(err.value) and "v2" in str(err.value)


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ('architecture = "resnet18"\nweights = "ResNet18_Weights.DEFAULT"', "DEFAULT"),
        ('architecture = "resnet18"\nweights = "VGG16_Weights.IMAGENET1K_V1"', "not weights for"),
        ('architecture = "resnet9000"\nweights = "ResNet18_Weights.IMAGENET1K_V1"', "architecture"),
        ('architecture = "resnet18"\nweights = "ResNet18_Weights.NOPE"', "unknown torchvision"),
        (
            'architecture = "resnet18"\nweights = "ResNet18_Weights.IMAGENET1K_V1"\n'
            'preprocessing = "big"',
            "'m'",
        ),
    ],
)
def test_catalog_mistakes_are_named(tmp_path, spec, complaint):
    path = tmp_path / "catalog.toml"
    path.write_text(f'default = "m"\n[models.m]\n{spec}\n')
    with pytest.raises(CatalogError, match=complaint):
        load_catalog(path)


def test_catalog_top_level_typo_is_named(tmp_path):
    path = tmp_path / "catalog.toml"
    path.write_text('defualt = "m"\n')
    with pytest.raises(CatalogError, match="defualt"):
        load_catalog(path)


def test_empty_selection_lists_what_there_is():
    with pytest.raises(CatalogError, match="no model selected; valid ids: resnet152"):
        load_catalog().select(" , ")


def test_catalog_preprocessing_override_is_applied(weights_origin):
    entry = weights_origin.catalog.entry("resnet18_timm")
    from PIL import Image

    tensor = entry.transforms()(Image.new("RGB", (300, 200), "red"))
    assert tuple(tensor.shape) == (3, 112, 112)
    default = weights_origin.catalog.entry("resnet18").transforms()(Image.new("RGB", (300, 200)))
    assert tuple(default.shape) == (3, 224, 224)


# --- fetch, lock, load -----------------------------------------------------------------


def test_fetch_lock_load_round_trip(weights_origin, tmp_path):
    [record] = fetch(["resnet18"], tmp_path, catalog=weights_origin.catalog, progress=False)
    source, digest = weights_origin.files["resnet18"]
    lock = json.loads((tmp_path / LOCK_NAME).read_text())["models"]["resnet18"]
    assert lock["sha256"] == digest == sha256_of(tmp_path / record.file)
    assert lock["size"] == source.stat().st_size
    assert lock["source"].startswith(weights_origin.server.base_url)
    assert lock["entry"]["weights"] == "ResNet18_Weights.IMAGENET1K_V1"

    loaded = WeightsStore(tmp_path).load("resnet18")
    direct = get_model("resnet18", weights=None)
    direct.load_state_dict(torch.load(source, weights_only=True))
    direct.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(loaded(x), direct(x))
    assert not loaded.training


def test_hub_entry_downloads_with_huggingface_hub_and_loads(weights_origin, tmp_path):
    [record] = fetch(
        ["resnet18_timm"],
        tmp_path,
        catalog=weights_origin.catalog,
        hub_endpoint=weights_origin.hub_endpoint,
        progress=False,
    )
    hub_path, digest = weights_origin.files["resnet18_timm"]
    assert record.sha256 == digest
    assert f"/{HUB_REPO}/resolve/{HUB_REVISION}/{HUB_FILE}" in weights_origin.server.gets()
    assert record.file.endswith(".safetensors")
    assert {p.name for p in tmp_path.iterdir()} == {record.file, LOCK_NAME}  # no leftovers

    from safetensors.torch import load_file

    loaded = WeightsStore(tmp_path).load("resnet18_timm")
    direct = get_model("resnet18", weights=None)
    direct.load_state_dict(load_file(hub_path))
    x = torch.randn(1, 3, 112, 112)
    with torch.inference_mode():
        # mmap-backed tensors may take another kernel path: equal up to float rounding.
        torch.testing.assert_close(loaded(x), direct.eval()(x), rtol=1e-5, atol=1e-5)


def test_hub_sha256_mismatch_is_refused(weights_origin, tmp_path):
    text = weights_origin.catalog_path.read_text()
    bad = tmp_path / "catalog.toml"
    bad.write_text(text.replace(weights_origin.files["resnet18_timm"][1], "0" * 64))
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch(
            ["resnet18_timm"],
            dest,
            catalog=load_catalog(bad),
            hub_endpoint=weights_origin.hub_endpoint,
            progress=False,
        )
    assert not any(p.suffix == ".safetensors" for p in dest.rglob("*"))


def test_refetch_verifies_and_skips(weights_origin, tmp_path, capsys):
    fetch(["resnet18"], tmp_path, catalog=weights_origin.catalog, progress=False)
    before = len(weights_origin.server.gets())
    fetch(["resnet18"], tmp_path, catalog=weights_origin.catalog, progress=False)
    assert len(weights_origin.server.gets()) == before
    assert "skipping" in capsys.readouterr().out


def test_refetch_replaces_a_corrupted_file(weights_origin, tmp_path):
    [record] = fetch(["resnet18"], tmp_path, catalog=weights_origin.catalog, progress=False)
    path = tmp_path / record.file
    path.write_bytes(b"garbage")
    fetch(["resnet18"], tmp_path, catalog=weights_origin.catalog, progress=False)
    assert sha256_of(path) == weights_origin.files["resnet18"][1]


def _serve_wrong_file(weights_origin, tmp_path, **route_kwargs):
    """Point resnet18's URL at different bytes (or cut short); return a catalog for it."""
    real, _ = weights_origin.files["resnet18"]
    impostor = tmp_path / "impostor.pth"
    if route_kwargs.get("truncate_to") is None:
        torch.save(untrained_state_dict("resnet18", seed=99), impostor)
    else:
        shutil.copy(real, impostor)
    path = f"/bad/{tmp_path.name}/{real.name}"
    weights_origin.server.routes[path] = Route(impostor, **route_kwargs)
    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text(
        weights_origin.catalog_path.read_text().replace(f"/models/{real.name}", path)
    )
    return load_catalog(catalog_file)


def test_hash_mismatch_fails_and_leaves_nothing(weights_origin, tmp_path):
    catalog = _serve_wrong_file(weights_origin, tmp_path)
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match="sha256 mismatch") as err:
        fetch(["resnet18"], dest, catalog=catalog, progress=False)
    assert "file was removed" in str(err.value) and "pinned in the catalog" in str(err.value)
    assert list(dest.iterdir()) == []


def test_truncated_download_fails_and_leaves_nothing(weights_origin, tmp_path):
    catalog = _serve_wrong_file(weights_origin, tmp_path, truncate_to=1000)
    dest = tmp_path / "dest"
    with pytest.raises(FetchError):
        fetch(["resnet18"], dest, catalog=catalog, progress=False)
    assert list(dest.iterdir()) == []


def test_network_failure_names_the_url_and_the_need_for_network(weights_origin, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(FetchError) as err:
        fetch(["resnet18"], tmp_path, catalog=weights_origin.catalog, mirror=dead, progress=False)
    message = str(err.value)
    assert dead in message and "network access" in message


def test_mirror_replaces_the_origin(weights_origin, tmp_path):
    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text(
        weights_origin.catalog_path.read_text().replace(
            weights_origin.server.base_url,
            "http://127.0.0.1:9",  # discard port: never used
        )
    )
    fetch(
        ["resnet18"],
        tmp_path / "d",
        catalog=load_catalog(catalog_file),
        mirror=f"{weights_origin.server.base_url}/models/",
        progress=False,
    )
    assert (tmp_path / "d" / weights_origin.files["resnet18"][0].name).is_file()


def test_no_space_left_is_reported_and_cleaned_up(weights_origin, tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr("weights.fetch.os.fdopen", lambda *a, **k: FullDisk(real_fdopen(*a, **k)))
    with pytest.raises(FetchError, match="no space left"):
        fetch(["resnet18"], tmp_path, catalog=weights_origin.catalog, progress=False)
    assert list(tmp_path.iterdir()) == []


# --- store -------------------------------------------------------------------------------


def test_missing_file_names_file_directory_and_fetch_command(baked_dir, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(baked_dir, dest)
    record = read_lock(dest)["resnet18"]
    (dest / record.file).unlink()
    with pytest.raises(WeightsError) as err:
        WeightsStore(dest).load("resnet18")
    message = str(err.value)
    assert record.file in message and str(dest) in message
    assert f"python -m weights fetch --models resnet18 --dest {dest}" in message


def test_model_not_fetched_is_named(baked_dir):
    with pytest.raises(WeightsError, match="'vgg16' is not fetched"):
        WeightsStore(baked_dir).load("vgg16")


def test_no_lock_says_how_to_create_one(tmp_path):
    with pytest.raises(WeightsError, match="python -m weights fetch"):
        WeightsStore(tmp_path).load("resnet18")


def test_corrupt_file_is_refused(baked_dir, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(baked_dir, dest)
    path = dest / read_lock(dest)["resnet18"].file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt"):
        WeightsStore(dest).load("resnet18")


class _Exploit:
    """Unpickling this would create a file: the classic pickle code-execution payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_would_run_code_is_refused(baked_dir, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(baked_dir, dest)
    records = read_lock(dest)
    marker = tmp_path / "pwned"
    path = dest / records["resnet18"].file
    torch.save({"conv1.weight": _Exploit(marker)}, path)
    # The attacker controls the lock too: the digest check passes, weights_only must not.
    from dataclasses import replace

    records["resnet18"] = replace(
        records["resnet18"], sha256=sha256_of(path), size=path.stat().st_size
    )
    write_lock(dest, records)
    with pytest.raises(WeightsError, match="would run code"):
        WeightsStore(dest).load("resnet18")
    assert not marker.exists()


def test_load_makes_no_network_call(baked_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the store tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    loaded = WeightsStore(baked_dir).load("mobilenet_v3_large")
    assert type(loaded).__name__ == "MobileNetV3"


def test_demo_weights_answer_like_a_model_not_with_one_certain_class():
    """A check of probabilities against demo weights means something only if they spread."""
    from bake.probes import probe_images

    module = get_model("resnet18", weights=None)
    module.load_state_dict(untrained_state_dict("resnet18", seed=1))
    transforms = load_catalog().entry("resnet18").transforms()
    with torch.inference_mode():
        batch = torch.stack([transforms(image) for image in probe_images()])
        probabilities = module.eval()(batch).softmax(dim=1)
    best = probabilities.max(dim=1)
    assert (best.values < 0.9).float().mean() >= 0.7, best.values  # most images: no certainty
    assert len(set(best.indices.tolist())) >= 2  # the answer depends on the image


def test_untrained_demo_weights_are_refused_unless_allowed(tmp_path):
    catalog = load_catalog()
    [record] = bake_untrained(["resnet18"], tmp_path, catalog=catalog)
    assert record.untrained and "untrained" in record.file
    with pytest.raises(WeightsError, match="untrained"):
        WeightsStore(tmp_path).load("resnet18")
    assert WeightsStore(tmp_path).load("resnet18", allow_untrained=True) is not None
    assert WeightsStore(tmp_path).fetched("resnet18").untrained


# --- command line ---------------------------------------------------------------------------


def test_cli_list_shows_sizes_and_accuracy():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    line = next(row for row in result.stdout.splitlines() if row.startswith("resnet152"))
    assert "230.5" in line and "82.28" in line
    assert "set v2: resnet152, convnext_base, swin_b, vgg16" in result.stdout


def test_cli_fetch_and_verify(weights_origin, tmp_path):
    env = {"WEIGHTS_CATALOG": str(weights_origin.catalog_path)}
    result = run_cli(
        "fetch", "--models", "small", "--dest", str(tmp_path), "--no-progress", env=env
    )
    assert result.returncode == 0, result.stderr
    assert set(read_lock(tmp_path)) == {"resnet18", "mobilenet_v3_large"}
    result = run_cli("verify", "--dest", str(tmp_path), env=env)
    assert result.returncode == 0 and "resnet18: ok" in result.stdout


def test_cli_unknown_id_exits_non_zero_with_the_valid_ids(tmp_path):
    result = run_cli("fetch", "--models", "resnet9000", "--dest", str(tmp_path))
    assert result.returncode == 1
    assert "unknown model 'resnet9000'" in result.stderr and "resnet152" in result.stderr
    assert not (tmp_path / LOCK_NAME).exists()


# --- full pins: the catalog's, else the catalog's committed lock -------------------------------

CONFIRMED = {
    "convnext_base": (
        "6075fbad31c688f9ed013922a59daf0fc2f4dc12e6e43bc01fa840c7bd1ca2cd",
        354_486_097,
    ),
    "resnet18": ("f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec", 46_830_571),
    "vgg16": ("397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", 553_433_881),
    "mobilenet_v3_large": (
        "5c1a416349c4cf298f2a6a5e2600ed0ee55e604713578f5e74e6bc8bcaef7997",
        22_132_113,
    ),
    "efficientnet_b0": (
        "7f5810bc96def8f7552d5b7e68d53c4786f81167d28291b21c0d90e1fca14934",
        21_444_401,
    ),
}


def test_builtin_catalog_pins_the_confirmed_files_and_no_single_source_one():
    catalog = load_catalog()
    for model_id, pin in CONFIRMED.items():
        entry = catalog.entry(model_id)
        assert entry.pin == pin and pin[0].startswith(entry.hash_prefix)
    # resnet152 and swin_b: one public source each, a hint and not a pin (catalog.toml).
    assert {m for m, e in catalog.models.items() if e.pin is None} == {"resnet152", "swin_b"}


@pytest.mark.parametrize(
    ("pin", "complaint"),
    [
        ('sha256 = "' + "0" * 64 + '"', "does not start with"),
        ('sha256 = "f37072fd"', "64 lowercase hex"),
        ("size = -1", "positive number of bytes"),
    ],
)
def test_a_wrong_pin_in_the_catalog_is_named(tmp_path, pin, complaint):
    path = tmp_path / "catalog.toml"
    spec = 'architecture = "resnet18"\nweights = "ResNet18_Weights.IMAGENET1K_V1"'
    path.write_text(f'default = "m"\n[models.m]\n{spec}\n{pin}\n')
    with pytest.raises(CatalogError, match=complaint):
        load_catalog(path)


def _unpinned_catalog(weights_origin, tmp_path) -> Path:
    """The test catalog without its torchvision pins: what a user's new model looks like."""
    lines = weights_origin.catalog_path.read_text().splitlines()
    kept = [line for line in lines if not line.startswith(("sha256 = ", "size = "))]
    hub_pin = f'sha256 = "{weights_origin.files["resnet18_timm"][1]}"'
    path = tmp_path / "catalog.toml"
    path.write_text(
        "\n".join(kept).replace(
            "[models.resnet18_timm.hub]", "[models.resnet18_timm.hub]\n" + hub_pin
        )
        + "\n"
    )
    return path


def test_a_file_with_the_right_prefix_but_not_the_pinned_digest_is_refused(
    weights_origin, tmp_path
):
    # The same file name (so the same 8-hex prefix) serving other bytes: what a forged file
    # costs ~2^32 hashes to make. The full pin refuses it.
    catalog = _serve_wrong_file(weights_origin, tmp_path)
    assert catalog.entry("resnet18").file_name == weights_origin.files["resnet18"][0].name
    with pytest.raises(FetchError, match="pinned in the catalog"):
        fetch(["resnet18"], tmp_path / "dest", catalog=catalog, progress=False)
    assert list((tmp_path / "dest").iterdir()) == []


def test_first_fetch_pins_the_file_in_the_catalog_lock_and_later_ones_verify(
    weights_origin, tmp_path, capsys
):
    catalog = load_catalog(_unpinned_catalog(weights_origin, tmp_path))
    lock = tmp_path / "catalog.lock"
    fetch(["resnet18"], tmp_path / "first", catalog=catalog, progress=False)
    [pin] = read_pins(lock).values()
    path, digest = weights_origin.files["resnet18"]
    assert (pin.file, pin.sha256, pin.size) == (path.name, digest, path.stat().st_size)
    assert "commit it" in capsys.readouterr().out
    # A lock that pins other bytes (same prefix): the next fetch refuses what is served.
    data = json.loads(lock.read_text())
    data["models"]["resnet18"]["sha256"] = digest[:8] + "0" * 56
    lock.write_text(json.dumps(data))
    with pytest.raises(FetchError, match=r"pinned in .*catalog\.lock"):
        fetch(["resnet18"], tmp_path / "second", catalog=catalog, progress=False)


def test_a_frozen_fetch_refuses_an_unpinned_file_before_downloading(weights_origin, tmp_path):
    catalog = load_catalog(_unpinned_catalog(weights_origin, tmp_path))
    before = len(weights_origin.server.gets())
    with pytest.raises(FetchError) as err:
        fetch(["resnet18"], tmp_path / "dest", catalog=catalog, progress=False, frozen=True)
    message = str(err.value)
    assert "no full sha256 pin for resnet18" in message and "commit" in message
    assert len(weights_origin.server.gets()) == before
    assert not (tmp_path / "catalog.lock").exists()


def test_a_frozen_fetch_accepts_what_the_committed_lock_pins(weights_origin, tmp_path):
    catalog = load_catalog(_unpinned_catalog(weights_origin, tmp_path))
    fetch(["resnet18"], tmp_path / "first", catalog=catalog, progress=False)
    lock_before = (tmp_path / "catalog.lock").read_text()
    [record] = fetch(["resnet18"], tmp_path / "d", catalog=catalog, progress=False, frozen=True)
    assert record.sha256 == weights_origin.files["resnet18"][1]
    assert (tmp_path / "catalog.lock").read_text() == lock_before


def test_cli_frozen_switch_and_environment(weights_origin, tmp_path):
    env = {"WEIGHTS_CATALOG": str(_unpinned_catalog(weights_origin, tmp_path))}
    dest = str(tmp_path / "d")
    for extra, more_env in [(["--frozen"], {}), ([], {"WEIGHTS_FROZEN": "1"})]:
        result = run_cli(
            "fetch",
            "--models",
            "resnet18",
            "--dest",
            dest,
            "--no-progress",
            *extra,
            env={**env, **more_env},
        )
        assert result.returncode == 1 and "no full sha256 pin" in result.stderr


@pytest.mark.parametrize(
    "source",
    ["http://mirror.example.com/weights/", "ftp://mirror.example.com/", "http://10.0.0.5/"],
)
def test_a_plain_http_mirror_is_refused_before_any_connection(
    weights_origin, tmp_path, source, monkeypatch
):
    def no_connection(*args, **kwargs):
        raise AssertionError("a refused mirror must not be dialled")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    with pytest.raises(FetchError, match="not https"):
        fetch(["resnet18"], tmp_path, catalog=weights_origin.catalog, mirror=source)
    with pytest.raises(FetchError, match="not https"):
        fetch(
            ["resnet18_timm"],
            tmp_path,
            catalog=weights_origin.catalog,
            hub_endpoint=source,
            progress=False,
        )


# That the image builds fetch frozen once the lock is committed is tested beside the
# Dockerfile's other steps, in tests/test_images.py.
