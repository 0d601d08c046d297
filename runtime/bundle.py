"""The bundle format: one compiled, verified model on disk. The bake step writes it; the backend
reads it and trusts nothing else.

    <bundles directory>/
      index.json              what the directory serves: ids in order, default, the catalog's sets
      <model id>/
        manifest.json         everything the runtime needs to know, and where the model came from
        model.onnx            the graph, with a dynamic batch dimension
        model.onnx.data       its weights as external data (ONNX Runtime memory-maps them)
        reference.png         an image the build verified, with its answer in the manifest: the
                              backend re-checks it at start on the machine it runs on

Every file but the manifest is listed in the manifest with its XXH3-128 digest and size (a
manifest that lacks one is refused); a bundle whose files do not match is refused (`Bundle.check`,
`Bundle.verify`). The manifest and the index themselves are trusted as written: they are the
root of that trust, as `weights.lock` is for the fetched files, and an image is immutable.
docs/architecture.md describes each field and why the format is what it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from runtime.files import digest_of, size_problem
from runtime.preprocess import Preprocessing
from runtime.selection import select

# 3: the files' digests are XXH3-128 (2: BLAKE3, 1: sha256).
FORMAT = 3
INDEX = "index.json"
MANIFEST = "manifest.json"
GRAPH = "model.onnx"
GRAPH_DATA = "model.onnx.data"
REFERENCE_IMAGE = "reference.png"


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, altered or unusable; the message says how to fix it."""


def fix_command(model_ids: str, dest: Path | str, weights_dir: Path | str = "WEIGHTS_DIR") -> str:
    """The command that (re)builds bundles, for the messages that say how to fix one."""
    return f"python -m bake --models {model_ids} --weights {weights_dir} --dest {dest}"


@dataclass(frozen=True)
class Artifact:
    """A file of a bundle, as the bake step wrote it."""

    xxh3_128: str
    size: int


def xxh3_of(path: Path, should_stop: Callable[[], bool] | None = None) -> str | None:
    """A bundle file's digest, XXH3-128 (hex); None if `should_stop()` turned true.

    The backend hashes every weights file at each start (v2: 1.5 GB), on the cores that open
    the sessions. What that check is for is a file damaged or cut short on its way from the
    image (the registry's sha256 layer digests cover the transfer); whoever could alter a file on
    purpose could rewrite its manifest too, so a cryptographic hash buys nothing here. XXH3
    hashes twice as fast as BLAKE3 (v2: 0.15 against 0.33 CPU-s), four to ten times sha256,
    and releases the GIL like hashlib."""
    return digest_of(path, xxhash.xxh3_128(), should_stop)


@dataclass(frozen=True)
class Source:
    """The weights file a bundle was compiled from (a fetched file of `weights.lock`)."""

    file: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Reference:
    """The answer the build verified for `reference.png`: top classes and probabilities."""

    top: list[tuple[int, float]]  # (class index, probability), best first
    tolerance: float


@dataclass(frozen=True)
class Manifest:
    """What a bundle is: the model, its preprocessing, its files, how it was made and checked."""

    id: str
    architecture: str
    # The full torchvision weights name, e.g. ResNet152_Weights.IMAGENET1K_V2; None for a
    # user's own model, whose labels are `categories` (one per output, in order).
    weights: str | None
    categories: list[str]
    preprocessing: Preprocessing
    parameters: int
    imagenet_acc1: float | None
    imagenet_acc5: float | None
    source: Source
    artifacts: dict[str, Artifact]
    versions: dict[str, str]  # torch, torchvision, onnx, onnxscript, onnxruntime, opset
    verification: dict[str, Any]  # images, worst differences, tolerance, seconds
    reference: Reference
    inputs: str  # digest of everything the bundle was made from: unchanged inputs, no rebuild
    export_seconds: float
    untrained: bool = False  # generated demo weights: served only when allowed
    # "int8": the graph is the static int8 one the bake's gate accepted (bake/quantize.py);
    # `quantization` holds its figures: both top-1 accuracies, the validation count, the
    # allowed drop, both forward times and the speed-up.
    precision: str = "fp32"
    quantization: dict[str, Any] | None = None
    format: int = FORMAT

    @property
    def input_size(self) -> int:
        return self.preprocessing.crop

    def to_json(self) -> str:
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ValueError(f"bundle format {found!r}, this runtime reads format {FORMAT}")
        data["preprocessing"] = Preprocessing(**data["preprocessing"])
        data["source"] = Source(**data["source"])
        data["artifacts"] = {name: Artifact(**a) for name, a in data["artifacts"].items()}
        missing = sorted({GRAPH, GRAPH_DATA, REFERENCE_IMAGE} - set(data["artifacts"]))
        if missing:
            raise ValueError(f"its list of files lacks {', '.join(missing)}")
        reference = data["reference"]
        data["reference"] = Reference(
            top=[(int(i), float(p)) for i, p in reference["top"]],
            tolerance=float(reference["tolerance"]),
        )
        return cls(**data)


@dataclass
class Bundle:
    """A bundle directory and its manifest."""

    directory: Path
    manifest: Manifest
    _verified: set[str] = field(default_factory=set, repr=False)

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def graph(self) -> Path:
        return self.directory / GRAPH

    @property
    def reference_image(self) -> Path:
        return self.directory / REFERENCE_IMAGE

    @classmethod
    def read(cls, directory: Path, *, fix: str) -> Bundle:
        """The bundle in `directory`; `fix` is the command that rebuilds it, for the messages."""
        path = directory / MANIFEST
        try:
            manifest = Manifest.from_json(path.read_text())
        except FileNotFoundError:
            raise BundleError(f"{path} is missing. Rebuild the bundle: {fix}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{path} is unreadable ({exc}). Rebuild the bundle: {fix}") from exc
        if manifest.id != directory.name:
            raise BundleError(
                f"{path} describes {manifest.id!r}, not {directory.name!r}. Rebuild it: {fix}"
            )
        return cls(directory, manifest)

    def check(self, *, fix: str) -> None:
        """Cheap checks, no hashing: every file of the manifest present with its size."""
        for name, artifact in self.manifest.artifacts.items():
            path = self.directory / name
            if problem := size_problem(path, artifact.size):
                raise BundleError(
                    f"bundle file {path} of model {self.id!r} is {problem}. Rebuild it: {fix}"
                )

    def verify(
        self,
        *,
        fix: str,
        should_stop: Callable[[], bool] | None = None,
        files: Iterable[str] | None = None,
    ) -> bool:
        """`check`, then the XXH3-128 digest of `files` (default: every file) against the manifest.

        False if `should_stop()` turned true first. A file verified once is not hashed again.
        """
        self.check(fix=fix)
        for name in self.manifest.artifacts if files is None else files:
            if name in self._verified:
                continue
            path = self.directory / name
            digest = xxh3_of(path, should_stop)
            if digest is None:
                return False
            expected = self.manifest.artifacts[name].xxh3_128
            if digest != expected:
                raise BundleError(
                    f"bundle file {path} of model {self.id!r} has XXH3-128 {digest}, its manifest "
                    f"says {expected}: it was altered. Rebuild it: {fix}"
                )
            self._verified.add(name)
        return True


@dataclass(frozen=True)
class BundleIndex:
    """What a bundles directory serves: model ids in order, the default, the catalog's sets."""

    models: list[str]
    default: str
    sets: dict[str, list[str]] = field(default_factory=dict)
    format: int = FORMAT

    def select(self, selection: str | Sequence[str] | None) -> list[str]:
        """The baked ids a selection names (None: all of them); raises SelectionError."""
        if selection is None:
            return list(self.models)
        # Sets come from the whole catalog: a set may name models this directory lacks, and
        # the caller says so (better than "unknown set").
        return select(selection, self.models, self.sets)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BundleIndex:
        data = json.loads(text)
        if not isinstance(data, dict) or "format" not in data:
            raise ValueError("not a bundle index (no format)")
        if data["format"] != FORMAT:
            raise ValueError(
                f"index format {data['format']!r}, this runtime reads format {FORMAT}: made by "
                "another version of the bake step"
            )
        return cls(**data)


def read_index(directory: Path) -> BundleIndex:
    """The index of a bundles directory; BundleError naming the fix if it has none."""
    path = Path(directory) / INDEX
    text = ""  # what was read, for the fix's model list (nothing if not UTF-8)
    try:
        text = path.read_text()
        return BundleIndex.from_json(text)
    except FileNotFoundError:
        raise BundleError(
            f"no {INDEX} in {directory}: it holds no bundles. Build them with: "
            f"{fix_command('v1', directory)}"
        ) from None
    except (ValueError, TypeError) as exc:
        raise BundleError(
            f"{path} cannot be used ({exc}). Build the bundles again with: "
            f"{fix_command(_models_named(text), directory)}"
        ) from exc


def _models_named(index_text: str) -> str:
    """The models an index that cannot be used lists, for the command that rebuilds them;
    "MODELS" if it lists none that can be read."""
    try:
        models = json.loads(index_text).get("models")
    except (ValueError, AttributeError):
        return "MODELS"
    if isinstance(models, list) and models and all(isinstance(m, str) for m in models):
        return ",".join(models)
    return "MODELS"
