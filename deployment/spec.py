"""What gets deployed: one typed description, read by `python3 -m deployment`.

Standard library only (Python 3.11+): deploying needs nothing of the project's environment.
Change a size or a name here and every command of the plan follows; `python3 -m deployment
plan v1` shows the result.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from runtime.selection import select  # noqa: E402  (standard library only, like timing)
from runtime.timing import TIMING  # noqa: E402  (standard library only)

CATALOG = ROOT / "weights" / "catalog.toml"
PORT = 8080  # ENV PORT / EXPOSE of every image; --port sets $PORT to the same


@dataclass(frozen=True)
class Size:
    """A Cloud Run service's resources and how many requests one instance takes at once."""

    memory: str
    cpu: int
    concurrency: int


# Sizes are checked, not guessed: a container test (tests/test_containers.py,
# `test_backend_stays_under_90_percent_...`) runs each service at its size while every request
# thread sends the worst 36-MP image the limits admit, and fails above 90 % (benchmarks/
# RESULTS.md, "The worst inputs at the deployed limits"). The margin left is for what this
# machine cannot show (another CPU, another allocator).
# Each backend instance takes 8 requests at once, one request thread each (REQUEST_THREADS):
# more would queue inside the instance instead of making Cloud Run start another.
THREADS = 8
BACKEND_SIZES = {
    # resnet152 alone: settled 321 MiB, peak 931 (61 %); CPU boost doubles the CPU at start.
    "v1": Size("1536Mi", 1, THREADS),
    # the four in one process: settled 1543 MiB (1.45 GB of bundles, mostly mapped), peak 2152
    # (70 %); two cores for each forward pass and for the slowest start (4 s on 2 cores).
    "v2": Size("3Gi", 2, THREADS),
}
# v3, one service per model, by the same rule: peaks resnet152 931, convnext_base 1041, swin_b
# 1047 of 1536 MiB (61-68 %); vgg16 1224 of 2 GiB (60 %). Another model gets the default.
V3_SIZES = {
    "resnet152": Size("1536Mi", 1, THREADS),
    "convnext_base": Size("1536Mi", 1, THREADS),
    "swin_b": Size("1536Mi", 1, THREADS),
    "vgg16": Size("2Gi", 1, THREADS),
}
V3_DEFAULT_SIZE = Size("2Gi", 1, THREADS)
# Streamlit holds every open page in one process, one Cloud Run request each (the websocket):
# 211 MiB with one session, 8.4 MiB per further session, ~100 MiB for a preview being made;
# at most 80 % of 1 GiB -> 60 sessions.
FRONTEND_SIZE = Size("1Gi", 1, 60)
MAX_INSTANCES = 3  # per service: a traffic spike cannot run up a large bill


@dataclass(frozen=True)
class Variant:
    """v1, v2 or v3: a model set and how it is served (one service, or one per model)."""

    name: str
    model_set: str  # a set of weights/catalog.toml
    per_model: bool = False  # v3: a backend service per model behind API Gateway

    @property
    def backend_image(self) -> str:
        return f"backend_{self.name}"


VARIANTS = {
    "v1": Variant("v1", "v1"),
    "v2": Variant("v2", "v2"),
    "v3": Variant("v3", "v2", per_model=True),
}
FRONTEND_IMAGE = "frontend"  # one page for every variant: it learns the models from GET /models
# What `build` builds: each has deployment/cloudbuild_<name>.yaml (frontend: either file).
BUILDS = {"backend_v1": "v1", "backend_v2": "v2", "backend_v3": "v3", "frontend": None}
APIS = (
    "run.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "storage.googleapis.com",
    # v3's gateway
    "apigateway.googleapis.com",
    "servicecontrol.googleapis.com",
    "servicemanagement.googleapis.com",
)


@dataclass(frozen=True)
class Project:
    """Where everything lives. Only the project id has no default."""

    id: str
    region: str = "northamerica-northeast1"  # the assignment's; services and images live here
    repository: str = "baked-vision"  # Artifact Registry ids: lowercase, digits and "-"
    build_region: str = "global"  # Cloud Build's default pool: every machine type
    # API Gateway does not run in northamerica-northeast1; us-east4 (N. Virginia) is the
    # supported region nearest it, the shortest gateway -> Cloud Run hop.
    gateway_region: str = "us-east4"
    api: str = "baked-vision"
    gateway: str = "baked-vision-v3"
    # Service accounts, each with only what it needs (README, "Accounts").
    accounts: dict[str, str] = field(
        default_factory=lambda: {
            "build": "baked-vision-build",
            "backend": "baked-vision-backend",
            "frontend": "baked-vision-frontend",
            "gateway": "baked-vision-gateway",
        }
    )

    @property
    def registry(self) -> str:
        return f"{self.region}-docker.pkg.dev/{self.id}/{self.repository}"

    @property
    def source_bucket(self) -> str:
        return f"gs://{self.id}-baked-vision-source"

    def account(self, role: str) -> str:
        return f"{self.accounts[role]}@{self.id}.iam.gserviceaccount.com"

    def image(self, name: str, tag: str) -> str:
        return f"{self.registry}/{name}:{tag}"


def service_name(name: str) -> str:
    """A Cloud Run service name for an image or model name: no underscores."""
    return name.replace("_", "-")


def backend_services(variant: Variant, models: list[str]) -> dict[str, str]:
    """Service name -> the model it serves (v3), or -> "" for the one backend (v1, v2)."""
    if not variant.per_model:
        return {f"backend-{variant.name}": ""}
    return {f"backend-v3-{service_name(m)}": m for m in models}


def backend_size(variant: Variant, model: str = "") -> Size:
    if variant.per_model:
        return V3_SIZES.get(model, V3_DEFAULT_SIZE)
    return BACKEND_SIZES[variant.name]


def models_of(selection: str, catalog: Path = CATALOG) -> list[str]:
    """Model ids of a set or comma-separated ids; ValueError names what is unknown.

    A user's catalog is read on top of the built-in one, as `python -m weights` reads it: its
    models and sets are added, and one of the same name replaces the built-in one.
    """
    sets: dict[str, list[str]] = {}
    models: dict[str, object] = {}
    for path in dict.fromkeys([CATALOG, catalog]):
        with path.open("rb") as file:
            data = tomllib.load(file)
        sets.update(data.get("sets", {}))
        models.update(data.get("models", {}))
    return select(selection, list(models), sets)


def check() -> None:
    """Raise ValueError if the spec disagrees with itself (a test calls this)."""
    TIMING.check()
    for size in [*BACKEND_SIZES.values(), *V3_SIZES.values(), V3_DEFAULT_SIZE, FRONTEND_SIZE]:
        if not size.memory.endswith(("Mi", "Gi")) or size.cpu < 1 or size.concurrency < 1:
            raise ValueError(f"{size} is not a Cloud Run size")
    for variant in VARIANTS.values():
        models_of(variant.model_set)
