"""Fetched file -> bundle, for each model of a selection; unchanged inputs are verified and kept.

A bundle is built in a hidden directory next to its final place and renamed into place only
when it is complete and verified, so an interrupted or failed build never leaves half a
bundle that a server could pick up: hidden directories are never indexed, and the next bake
clears what a killed one left.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bake.export import export_onnx
from bake.probes import probe_images
from bake.quantize import INT8_TOLERANCE, quantize
from bake.verify import TOLERANCE, TOP, verify
from runtime.bundle import (
    FORMAT,
    GRAPH,
    GRAPH_DATA,
    INDEX,
    MANIFEST,
    REFERENCE_IMAGE,
    Artifact,
    Bundle,
    BundleError,
    BundleIndex,
    Manifest,
    Reference,
    Source,
    fix_command,
    xxh3_of,
)
from runtime.files import write_atomically
from runtime.session import ModelSession, top_classes
from runtime.settings import SessionSettings, available_cpus
from weights import imagesets
from weights.catalog import BAKE_KEYS, Catalog, CatalogEntry
from weights.lock import FetchedFile
from weights.store import WeightsStore

# What a bundle depends on besides its weights: these libraries' versions (numpy and Pillow do
# the preprocessing it is verified through) and the source of these packages (weights: the
# catalog's metadata and preprocessing, the loading; bake; runtime).
PACKAGES = ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "numpy", "pillow")
CODE = tuple(Path(__file__).parent.parent / name for name in ("weights", "bake", "runtime"))
_STAGING, _REPLACED = ".baking-", ".old-"


def bake(
    ids: list[str],
    weights_dir: Path,
    dest: Path,
    *,
    catalog: Catalog,
    say: Callable[[str], None] = print,
) -> list[Manifest]:
    """Make sure `dest` holds a verified bundle of each model; give their manifests."""
    weights_dir, dest = Path(weights_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    store = WeightsStore(weights_dir)
    versions = {name: importlib.metadata.version(name) for name in PACKAGES}
    code = code_digest()
    _sweep(dest, say)
    manifests = []
    for number, model_id in enumerate(ids, start=1):
        fetched, entry, _ = store.verify(model_id, allow_untrained=True)
        # How to bake (precision, its image sets) comes from the catalog, the file from the lock.
        recipe = catalog.models.get(model_id, entry)
        entry = replace(entry, **{key: getattr(recipe, key) for key in BAKE_KEYS})
        inputs = _inputs_digest(fetched, versions, code, _recipe(entry))
        where = f"{model_id} ({number}/{len(ids)})"
        kept = _unchanged(dest / model_id, inputs, fix_command(model_id, dest, weights_dir))
        if kept is not None:
            say(f"{where}: bundle present, verified, inputs unchanged; skipping")
            manifests.append(kept)
            continue
        say(f"{where}: exporting {entry.architecture} from {fetched.file} to ONNX")
        manifest = _build(store, fetched, entry, inputs, versions, dest, say)
        manifests.append(manifest)
        gc.collect()  # the eager model and the session of a big model are gone before the next
    _write_index(dest, catalog)
    return manifests


def _build(
    store: WeightsStore,
    fetched: FetchedFile,
    entry: CatalogEntry,
    inputs: str,
    versions: dict[str, str],
    dest: Path,
    say: Callable[[str], None],
) -> Manifest:
    model_id = fetched.id
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=f".{model_id}{_STAGING}"))
    staging.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
    try:
        module = store.load(model_id, allow_untrained=True)
        preprocessing = entry.runtime_preprocessing()
        exported = export_onnx(module, preprocessing.crop, staging, model_id=model_id)
        say(f"{model_id}: exported in {exported['seconds']:.1f} s (opset {exported['opset']})")

        meta = entry.metadata()
        draft = Manifest(
            id=model_id,
            architecture=entry.architecture,
            weights=entry.weights,
            categories=entry.categories,
            preprocessing=preprocessing,
            parameters=int(meta["parameters"]),
            imagenet_acc1=meta["imagenet_acc1"],
            imagenet_acc5=meta["imagenet_acc5"],
            source=Source(fetched.file, fetched.source, fetched.sha256, fetched.size),
            artifacts={},
            versions={**versions, "opset": str(exported["opset"])},
            verification={},
            reference=Reference(top=[], tolerance=TOLERANCE),
            inputs=inputs,
            export_seconds=exported["seconds"],
            untrained=fetched.untrained,
        )
        settings = SessionSettings(threads=available_cpus())
        session = ModelSession(Bundle(staging, draft), settings)
        images = probe_images()
        checked, probabilities = verify(model_id, module, entry.transforms(), session, images)
        say(
            f"{model_id}: verified against torchvision on {checked.images} images: worst "
            f"probability difference {checked.worst_probability_difference:.1e} (tolerance "
            f"{checked.tolerance:g}), {checked.top5_positions_checked} top-{TOP} places agree"
        )
        tolerance = TOLERANCE
        if entry.precision == "int8":
            draft = replace(draft, precision="int8")
            folder, gate = quantize(
                model_id,
                session,
                entry.calibration_images(),
                entry.validation_images(),
                entry.allowed_top1_drop,
                open_int8=lambda graph: ModelSession(Bundle(graph, draft), settings),
            )
            say(f"{model_id}: int8 accepted: {gate.figures()}")
            del session
            for name in (GRAPH, GRAPH_DATA):  # the bundle serves the int8 graph
                os.replace(folder / name, staging / name)
            shutil.rmtree(folder)
            draft = replace(draft, quantization=gate.to_dict())
            session = ModelSession(Bundle(staging, draft), settings)
            # The start check compares the int8 graph with its own answer (quantize.py says why)
            probabilities = session.probabilities(session.preprocess(images[:1]))
            tolerance = INT8_TOLERANCE
        images[0].save(staging / REFERENCE_IMAGE)  # PNG: lossless, re-decodes to the same pixels
        manifest = replace(
            draft,
            artifacts={
                name: Artifact(xxh3_of(staging / name), (staging / name).stat().st_size)
                for name in (GRAPH, GRAPH_DATA, REFERENCE_IMAGE)
            },
            verification=checked.to_dict(),
            reference=Reference(top=top_classes(probabilities[0], TOP), tolerance=tolerance),
        )
        (staging / MANIFEST).write_text(manifest.to_json())
        del session, module
        _move_into_place(staging, dest / model_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size_mb = sum(a.size for a in manifest.artifacts.values()) / 1e6
    say(f"{model_id}: bundle written to {dest / model_id} ({size_mb:.1f} MB)")
    return manifest


def _unchanged(directory: Path, inputs: str, fix: str) -> Manifest | None:
    """The bundle's manifest if it was made from exactly `inputs` and its files verify."""
    if not (directory / MANIFEST).is_file():
        return None
    try:
        bundle = Bundle.read(directory, fix=fix)
        if bundle.manifest.inputs != inputs:
            return None
        bundle.verify(fix=fix)
    except BundleError:
        return None  # damaged or from another runtime: build it again
    return bundle.manifest


def _move_into_place(staging: Path, target: Path) -> None:
    """Replace `target` by `staging`: the old bundle stays whole until the new one is there,
    and comes back if the new one cannot take its place (an interrupt between the renames)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}{_REPLACED}{time.time_ns()}")
        target.rename(old)
    try:
        staging.rename(target)
    except BaseException:
        if old is not None and not target.exists():
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sweep(dest: Path, say: Callable[[str], None]) -> None:
    """Clear what a killed bake left: a half-made bundle goes; a replaced one comes back if
    its replacement never took its place, else goes. Hidden folders are never served."""
    for leftover in sorted(p for p in dest.iterdir() if p.name.startswith(".")):
        if _REPLACED in leftover.name:
            target = dest / leftover.name[1:].split(_REPLACED)[0]
            if not target.exists():
                say(f"restoring {target.name} from {leftover.name}, left by an interrupted bake")
                leftover.rename(target)
                continue
        elif _STAGING not in leftover.name:
            continue
        say(f"removing {leftover.name}, left by an interrupted bake")
        shutil.rmtree(leftover, ignore_errors=True)


def _write_index(dest: Path, catalog: Catalog) -> None:
    """index.json: every bundle in `dest`, in the catalog's order, with its default and sets."""
    present = {
        p.name for p in dest.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file()
    }
    models = [i for i in catalog.ids if i in present] + sorted(present - set(catalog.ids))
    index = BundleIndex(models=models, default=catalog.default, sets=dict(catalog.sets))
    write_atomically(dest / INDEX, index.to_json())


def _recipe(entry: CatalogEntry) -> dict | None:
    """How the bundle is baked beyond its file: int8, its allowed drop, its images' digests."""
    if entry.precision != "int8":
        return None
    return {
        "precision": entry.precision,
        "max_top1_drop": entry.allowed_top1_drop,
        "calibration": imagesets.digest(entry.calibration_images()),
        "validation": imagesets.digest([p for p, _ in entry.validation_images()]),
    }


def _inputs_digest(
    fetched: FetchedFile, versions: dict[str, str], code: str, recipe: dict | None = None
) -> str:
    """Everything a bundle is made from: the fetched file and its entry, the libraries, the
    code, and for int8 the recipe and its images."""
    inputs = {
        "format": FORMAT,
        "entry": fetched.entry,
        "source_sha256": fetched.sha256,
        "untrained": fetched.untrained,
        "versions": versions,
        "code": code,
    }
    if recipe is not None:  # absent for fp32: existing bundles keep their digest
        inputs["recipe"] = recipe
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def code_digest(packages: tuple[Path, ...] = CODE) -> str:
    """The packages' Python sources: a change to any may change a bundle."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted(package.glob("*.py")):
            digest.update(f"{package.name}/{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
