"""The model catalog: which models exist, where their weights come from, how to preprocess.

The catalog is data (`catalog.toml`); this module validates it against torchvision's own
registry (`get_model_builder`, `get_weight`) so a typo fails at once with a clear message,
and resolves a user's selection (`v1`, `v2`, or a comma-separated list of ids). The first
stage of a model's life: catalog entry -> fetched file (`weights.lock`) -> bundle (`bake`) ->
session (`runtime.session`) -> answer (`backend.inference`).

Two kinds of entry: torchvision's own ImageNet weights (`weights = "<full enum name>"`), and a
user's own classifier (`file`, `sha256`, `labels`: any torchvision architecture with a head
sized from the labels). A user's catalog (`--catalog`, $WEIGHTS_CATALOG) is read on top of the
built-in one: its entries and sets are added (an entry of the same id replaces the built-in
one) and its `default`, if any, wins. README, "Your own classifier", walks through it.

Any entry may ask for `precision = "int8"`: the bake step then serves a static int8 graph, but
only if it measures it on the entry's labelled `validation` set no more than `max_top1_drop`
points of top-1 worse than the float one, and faster (bake/quantize.py). These keys say how to
bake, not which file: they are read from the catalog at bake time and kept out of the lock.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from torchvision.models import get_model_builder, get_model_weights, get_weight
from torchvision.transforms import v2 as T

from runtime.preprocess import INTERPOLATIONS, Preprocessing
from runtime.selection import SelectionError, select
from weights import architectures
from weights.imagesets import ImageSetError, calibration_images, validation_images

DEFAULT_CATALOG = Path(__file__).with_name("catalog.toml")
CATALOG_ENV = "WEIGHTS_CATALOG"

# torchvision names its files "<stem>-<first hex digits of sha256>.<ext>" (torch.hub's HASH_REGEX).
_HASH_PREFIX = re.compile(r"-([a-f0-9]{6,64})\.")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# hf://<owner>/<repo>[@<revision>]/<path in the repo>, as huggingface_hub's HfFileSystem writes it.
_HF_URL = re.compile(r"hf://(?P<repo>[^/@]+/[^/@]+)(?:@(?P<revision>[^/]+))?/(?P<file>.+)")
_GS_URL = re.compile(r"gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,221}[a-z0-9])/(?P<name>.+)")
_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_TORCHVISION_INTERPOLATIONS = {name: T.InterpolationMode(name) for name in INTERPOLATIONS}
PRECISIONS = ("fp32", "int8")
DEFAULT_MAX_TOP1_DROP = 1.0  # points of top-1 accuracy an int8 graph may lose
# How to bake, not which file: read from the catalog at bake time, never written to the lock.
BAKE_KEYS = ("precision", "calibration", "validation", "max_top1_drop")


class CatalogError(ValueError):
    """The catalog file, or a selection from it, is wrong; the message says how."""


@dataclass(frozen=True)
class HubSource:
    """A weights file on the Hugging Face Hub, pinned to one commit."""

    repo: str
    file: str
    revision: str
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class GcsObject:
    """A weights file in Google Cloud Storage, read with Application Default Credentials."""

    bucket: str
    name: str


@dataclass(frozen=True)
class CatalogEntry:
    """One servable model: a torchvision architecture and the exact weights for it.

    Either torchvision's own weights (`weights`) or a user's own file (`file`, `labels`).
    """

    id: str
    architecture: str
    weights: str | None = None  # the full torchvision weights name, for torchvision's files
    # A user's own checkpoint: a local path (absolute once loaded), https://, hf://, gs://.
    file: str | None = None
    labels: list[str] | None = None  # a user's model's classes, in the order of its outputs
    url: str | None = None  # overrides the weights' own URL (tests, private mirrors)
    # The file's full sha256 and size, where independent sources confirm them (torchvision
    # names its files by a 32-bit prefix only); others are pinned by the catalog's lock.
    sha256: str | None = None
    size: int | None = None
    hub: HubSource | None = None
    preprocessing: Preprocessing | None = None  # only where it differs from the weights' own
    # "int8": serve a static int8 graph where the bake's gate allows it (bake/quantize.py).
    precision: str = "fp32"
    calibration: str | None = None  # images to measure activation ranges on: a dir or a glob
    validation: str | None = None  # labelled images: a dir with one sub-directory per label
    max_top1_drop: float | None = None  # points; None: DEFAULT_MAX_TOP1_DROP

    @cached_property
    def weights_enum(self):
        """The torchvision `WeightsEnum` member: labels, metadata, transforms (None: own model)."""
        return get_weight(self.weights) if self.weights else None

    @property
    def own(self) -> bool:
        """A user's own classifier (a `file` with its labels), not torchvision's weights."""
        return self.file is not None

    @property
    def source_url(self) -> str | None:
        """Where the file is downloaded from over http(s); None for the Hub, gs:// or a path."""
        if self.own:
            return self.file if self.file.startswith(("https://", "http://")) else None
        return self.url or self.weights_enum.url

    @property
    def hub_source(self) -> HubSource | None:
        """The Hub file: the `hub` table, or a user's `file = "hf://owner/repo@rev/path"`."""
        if self.hub is not None or not self.own:
            return self.hub
        match = _HF_URL.fullmatch(self.file)
        if match is None:
            return None
        revision = match["revision"] or "main"  # the sha256 pins the bytes either way
        return HubSource(match["repo"], match["file"], revision, self.sha256 or "", self.size)

    @property
    def gcs_object(self) -> GcsObject | None:
        match = _GS_URL.fullmatch(self.file) if self.own else None
        return GcsObject(match["bucket"], match["name"]) if match else None

    @property
    def local_file(self) -> Path | None:
        """A user's file on this machine (relative paths are resolved against the catalog's)."""
        if not self.own or "://" in self.file:
            return None
        return Path(self.file)

    @property
    def file_name(self) -> str:
        """The file's name in a weights directory."""
        if self.own:
            # "<id>-<sha256 prefix><suffix>": unique per content, and the suffix says the format.
            suffix = Path(urlsplit(self.file).path).suffix.lower()
            suffix = suffix if suffix in _SUFFIXES else ".pt"
            return f"{self.id}-{(self.sha256 or '')[:8]}{suffix}"
        if self.hub:
            repo = self.hub.repo.replace("/", "--")
            return f"{repo}--{self.hub.revision[:8]}--{Path(self.hub.file).name}"
        return Path(urlsplit(self.source_url).path).name

    @property
    def hash_prefix(self) -> str | None:
        """The sha256 prefix torchvision embeds in its file names, if any."""
        match = _HASH_PREFIX.search(self.file_name)
        return match.group(1) if match else None

    @property
    def file_format(self) -> str:
        return "safetensors" if self.file_name.endswith(".safetensors") else "pickle"

    @property
    def categories(self) -> list[str]:
        if self.own:
            return list(self.labels or [])
        return list(self.weights_enum.meta["categories"])

    def _preset(self):
        """torchvision's transforms for these weights; for an own model, the architecture's
        default weights' (what a model fine-tuned from them was trained with)."""
        if self.weights_enum is not None:
            return self.weights_enum.transforms()
        return get_model_weights(self.architecture).DEFAULT.transforms()

    def _own_preprocessing(self) -> Preprocessing | None:
        """The preprocessing given as data: the catalog's, else timm's for a timm model."""
        if self.preprocessing is not None:
            return self.preprocessing
        if architectures.timm_name(self.architecture) is not None:
            return architectures.timm_preprocessing(self.architecture)
        return None

    def transforms(self):
        """torchvision's preprocessing pipeline: the catalog's override, else the weights' own.

        The reference the runtime's own preprocessing is verified against.
        """
        p = self._own_preprocessing()
        if p is None:
            return self._preset()
        interpolation = _TORCHVISION_INTERPOLATIONS[p.interpolation]
        return T.Compose(
            [
                T.Resize(p.resize, interpolation=interpolation, antialias=True),
                T.CenterCrop(p.crop),
                T.PILToTensor(),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(mean=list(p.mean), std=list(p.std)),
            ]
        )

    def runtime_preprocessing(self) -> Preprocessing:
        """What `transforms()` does, as data for the runtime: the override, else the weights'."""
        if (given := self._own_preprocessing()) is not None:
            return given
        preset = self._preset()
        return Preprocessing(
            resize=int(preset.resize_size[0]),
            crop=int(preset.crop_size[0]),
            interpolation=preset.interpolation.value,
            mean=tuple(preset.mean),
            std=tuple(preset.std),
        )

    @property
    def input_size(self) -> int:
        return self.runtime_preprocessing().crop

    def parameters(self) -> int:
        """The number of parameters of the model this entry builds."""
        if not self.own:
            return self.weights_enum.meta["num_params"]
        with torch.device("meta"):  # no memory, no initialisation: shapes only
            module = architectures.build(self.architecture, num_classes=len(self.categories))
        return sum(p.numel() for p in module.parameters())

    def metadata(self) -> dict[str, Any]:
        """Facts for users, from torchvision's weights metadata (never retyped)."""
        if self.own:
            return {
                "id": self.id,
                "architecture": self.architecture,
                "weights": None,
                "source": self.source_description,
                "parameters": self.parameters(),
                "imagenet_acc1": None,
                "imagenet_acc5": None,
                "file_size_mb": round(self.size / 1e6, 3) if self.size else None,
                "input_size": self.input_size,
                "num_classes": len(self.categories),
            }
        meta = self.weights_enum.meta
        return {
            "id": self.id,
            "architecture": self.architecture,
            "weights": self.weights,
            "source": self.source_description,
            "parameters": meta["num_params"],
            "imagenet_acc1": meta["_metrics"]["ImageNet-1K"]["acc@1"],
            "imagenet_acc5": meta["_metrics"]["ImageNet-1K"]["acc@5"],
            "file_size_mb": round(self.hub.size / 1e6, 3)
            if self.hub and self.hub.size
            else meta.get("_file_size"),
            "input_size": self.input_size,
            "num_classes": len(meta["categories"]),
        }

    @property
    def source_description(self) -> str:
        if self.own:
            return self.file
        if self.hub:
            return f"hf://{self.hub.repo}@{self.hub.revision}/{self.hub.file}"
        return self.source_url

    def to_dict(self) -> dict[str, Any]:
        """The entry as the lock keeps it: which file, without how to bake it."""
        return {k: v for k, v in asdict(self).items() if v is not None and k not in BAKE_KEYS}

    @property
    def allowed_top1_drop(self) -> float:
        return DEFAULT_MAX_TOP1_DROP if self.max_top1_drop is None else float(self.max_top1_drop)

    def calibration_images(self) -> list[Path]:
        """The calibration images (CatalogError if the set is missing or empty)."""
        try:
            return calibration_images(self.calibration or "")
        except ImageSetError as exc:
            raise CatalogError(f"model {self.id!r}: {exc}") from None

    def validation_images(self) -> list[tuple[Path, int]]:
        """(image, label index) of the validation set (CatalogError if missing, empty, or
        labelled with a class this model does not have)."""
        try:
            return validation_images(self.validation or "", self.categories)
        except ImageSetError as exc:
            raise CatalogError(f"model {self.id!r}: {exc}") from None

    @classmethod
    def from_dict(
        cls, model_id: str, data: dict[str, Any], base: Path | None = None
    ) -> CatalogEntry:
        """An entry from its TOML table; `base` (the catalog's folder) anchors relative paths."""
        data = {k: v for k, v in data.items() if k != "id"}
        known = {"architecture", "weights", "file", "labels", "url", "sha256", "size", "hub"}
        known |= set(BAKE_KEYS)
        unknown = set(data) - known - {"preprocessing"}
        if unknown:
            raise CatalogError(f"model {model_id!r}: unknown keys {sorted(unknown)}")
        where = f"model {model_id!r}"
        if isinstance(data.get("file"), str) and "://" not in data["file"] and base is not None:
            data["file"] = str((base / data["file"]).resolve())
        if isinstance(data.get("labels"), str):
            data["labels"] = _read_labels(where, data["labels"], base)
        for key in ("calibration", "validation"):
            if isinstance(data.get(key), str) and base is not None:
                data[key] = str(base / data[key])  # an absolute path stays as it is
        try:
            hub = HubSource(**data.pop("hub")) if "hub" in data else None
            prep = data.pop("preprocessing", None)
            if prep is not None:
                prep = Preprocessing(**prep)
            return cls(id=model_id, hub=hub, preprocessing=prep, **data)
        except (TypeError, AttributeError, ValueError) as exc:
            raise CatalogError(f"model {model_id!r}: {exc}") from exc

    def validate(self) -> None:
        """Check the entry against torchvision's registry; raise CatalogError if wrong."""
        self._validate_precision()
        if self.own or self.weights is None:
            self._validate_own()
            return
        where = f"model {self.id!r}"
        if self.labels is not None:
            raise CatalogError(
                f"{where}: torchvision's weights bring their own labels; `labels` goes with "
                "your own `file`"
            )
        if self.weights.split(".")[-1] == "DEFAULT":
            raise CatalogError(f"{where}: name the weights exactly, not DEFAULT ({self.weights})")
        try:
            get_model_builder(self.architecture)
        except ValueError as exc:
            raise CatalogError(f"{where}: unknown torchvision architecture") from exc
        try:
            weights = self.weights_enum
        except (ValueError, KeyError, AttributeError) as exc:
            raise CatalogError(f"{where}: unknown torchvision weights {self.weights!r}") from exc
        if type(weights) is not get_model_weights(self.architecture):
            raise CatalogError(f"{where}: {self.weights} are not weights for {self.architecture}")
        if self.hub is None and self.hash_prefix is None:
            raise CatalogError(f"{where}: the file name {self.file_name!r} has no hash prefix")
        if self.sha256 is not None:
            if self.hub is not None:
                raise CatalogError(f"{where}: a hub entry's sha256 goes in its hub table")
            if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
                raise CatalogError(f"{where}: sha256 must be 64 lowercase hex digits")
            if not self.sha256.startswith(self.hash_prefix or ""):
                raise CatalogError(
                    f"{where}: sha256 {self.sha256[:12]}... does not start with the file "
                    f"name's prefix {self.hash_prefix}"
                )
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise CatalogError(f"{where}: size must be a positive number of bytes")

    def _validate_precision(self) -> None:
        """The int8 keys, as written (the image sets themselves: `check_image_sets`)."""
        where = f"model {self.id!r}"
        if self.precision not in PRECISIONS:
            raise CatalogError(
                f"{where}: precision {self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        given = [k for k in BAKE_KEYS[1:] if getattr(self, k) is not None]
        if self.precision == "fp32":
            if given:
                raise CatalogError(f'{where}: {", ".join(given)} go with precision = "int8"')
            return
        if self.validation is None:
            raise CatalogError(
                f'{where}: precision = "int8" needs a labelled validation set, `validation = '
                '"<dir with one sub-directory per label>"`: int8 is served only where its '
                "accuracy is measured"
            )
        if self.calibration is None:
            raise CatalogError(
                f'{where}: precision = "int8" needs calibration images, `calibration = '
                '"<dir or glob of images>"`, like those the model will serve'
            )
        drop = self.max_top1_drop
        if drop is not None and (
            isinstance(drop, bool) or not isinstance(drop, int | float) or not 0 <= drop <= 100
        ):
            raise CatalogError(f"{where}: max_top1_drop must be 0 to 100 points, not {drop!r}")

    def check_image_sets(self) -> None:
        """An int8 entry's calibration and validation sets exist, hold images, fit the labels."""
        if self.precision == "int8":
            self.calibration_images()
            self.validation_images()

    def _validate_own(self) -> None:
        where = f"model {self.id!r}"
        if not self.own:
            raise CatalogError(
                f'{where}: name torchvision\'s weights (`weights = "<Enum>.<member>"`) or your '
                "own file (`file`, `sha256`, `labels`)"
            )
        extra = [k for k in ("weights", "url", "hub") if getattr(self, k) is not None]
        if extra:
            raise CatalogError(f"{where}: an entry with `file` takes no {', '.join(extra)}")
        try:
            if not architectures.known(self.architecture):
                raise CatalogError(
                    f"{where}: unknown architecture {self.architecture!r} (a torchvision "
                    "builder name, or timm/<name> for a timm model)"
                )
        except ImportError as exc:
            raise CatalogError(
                f"{where}: {self.architecture} needs timm, a build-time dependency (the bake "
                "group): `uv sync --group bake`"
            ) from exc
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise CatalogError(
                f"{where}: `sha256` (64 lowercase hex digits) is required for your own file; "
                f"compute it with `sha256sum {Path(self.file).name}`"
            )
        labels = self.labels
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(isinstance(x, str) and x.strip() for x in labels)
        ):
            raise CatalogError(f"{where}: `labels` must name at least two classes (a list or file)")
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            raise CatalogError(f"{where}: labels repeated: {repeated}")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise CatalogError(f"{where}: size must be a positive number of bytes")
        scheme = self.file.split("://")[0] if "://" in self.file else None
        if scheme == "hf" and self.hub_source is None:
            raise CatalogError(
                f"{where}: write a Hub file as hf://<owner>/<repo>@<revision>/<path>"
            )
        if scheme == "gs" and self.gcs_object is None:
            raise CatalogError(f"{where}: write a Cloud Storage object as gs://<bucket>/<object>")
        if scheme not in (None, "hf", "gs", "https", "http"):
            raise CatalogError(f"{where}: file {self.file!r}: use a path, https://, hf:// or gs://")

    @property
    def pin(self) -> tuple[str, int | None] | None:
        """The full sha256 (and size) the catalog itself pins the file to, if it does."""
        if self.hub is not None:
            return self.hub.sha256, self.hub.size
        if self.sha256 is not None:
            return self.sha256, self.size
        return None


@dataclass(frozen=True)
class Catalog:
    """All models, named sets of them, and the default model."""

    models: dict[str, CatalogEntry]
    sets: dict[str, list[str]] = field(default_factory=dict)
    default: str = "resnet152"
    path: Path | None = None
    # The ids the built-in catalog gives unchanged, when a user's catalog is read on top of it.
    builtin_ids: frozenset[str] | None = None

    @property
    def ids(self) -> list[str]:
        return list(self.models)

    def entry(self, model_id: str) -> CatalogEntry:
        if model_id not in self.models:
            self.select(model_id)  # raises CatalogError listing the valid ids and sets
        return self.models[model_id]

    def select(self, selection: str | list[str]) -> list[str]:
        """Resolve 'v2', 'resnet18,vgg16' or a list of ids/sets to ids, in order, no repeats."""
        try:
            return select(selection, self.ids, self.sets)
        except SelectionError as exc:
            raise CatalogError(str(exc)) from None

    def validate(self) -> None:
        for entry in self.models.values():
            entry.validate()
            entry.check_image_sets()
        for name, ids in self.sets.items():
            missing = [i for i in ids if i not in self.models]
            if missing:
                raise CatalogError(f"set {name!r} names unknown models {missing}")
        if self.default not in self.models:
            raise CatalogError(f"default model {self.default!r} is not in the catalog")


def _read_labels(where: str, name: str, base: Path | None) -> list[str]:
    """A labels file: one class per line, in the order of the model's outputs."""
    path = (base or Path.cwd()) / name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CatalogError(f"{where}: cannot read its labels file {path}: {exc}") from exc
    return [line.strip() for line in lines if line.strip()]


def load_catalog(path: str | os.PathLike | None = None) -> Catalog:
    """Read and validate a catalog: `path`, else $WEIGHTS_CATALOG, on top of the built-in one.

    With no path, the built-in catalog alone.
    """
    path = Path(path or os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG)
    builtin = _read(DEFAULT_CATALOG)
    if path.resolve() == DEFAULT_CATALOG.resolve():
        builtin.validate()
        return builtin
    own = _read(path)
    catalog = Catalog(
        models={**builtin.models, **own.models},
        sets={**builtin.sets, **own.sets},
        default=own.default or builtin.default,
        path=path,
        builtin_ids=frozenset(builtin.models) - set(own.models),
    )
    catalog.validate()
    return catalog


def _read(path: Path) -> Catalog:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"catalog file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalog {path} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"default", "sets", "models"}
    if unknown:
        raise CatalogError(f"catalog {path}: unknown top-level keys {sorted(unknown)}")
    models = {
        mid: CatalogEntry.from_dict(mid, spec, base=path.parent)
        for mid, spec in data.get("models", {}).items()
    }
    return Catalog(
        models=models,
        sets={k: list(v) for k, v in data.get("sets", {}).items()},
        default=data.get("default", ""),
        path=path,
    )
