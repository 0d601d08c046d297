"""The deployed sizes the load benchmarks and the container tests run at (deployment/spec.py).

Standard library only, as deployment/spec.py: the container tests read it when they are
collected, before anything heavy is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def deployed(name: str) -> str:
    """A deployed size from deployment/spec.py by its setting, e.g. "FRONTEND_MEMORY" -> 1Gi."""
    from deployment import spec

    values = {"BACKEND_THREADS": spec.THREADS}
    for variant, size in spec.BACKEND_SIZES.items():
        values |= {f"BACKEND_{variant.upper()}_MEMORY": size.memory}
        values |= {f"BACKEND_{variant.upper()}_CPU": size.cpu}
    frontend = spec.FRONTEND_SIZE
    values |= {"FRONTEND_MEMORY": frontend.memory, "FRONTEND_CPU": frontend.cpu}
    values |= {"FRONTEND_CONCURRENCY": frontend.concurrency}
    if name not in values:
        raise RuntimeError(f"deployment/spec.py has no {name}")
    return str(values[name])


@dataclass(frozen=True)
class BackendRun:
    """One deployed backend service to load: what it serves, with what memory, CPU, threads."""

    label: str
    ids: tuple[str, ...]
    memory_mib: int
    cpu: int
    threads: int


def mebibytes(value: str) -> int:
    """Cloud Run's memory syntax (512Mi, 2Gi) in MiB."""
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", value).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


def backend_runs() -> list[BackendRun]:
    """Every backend service deployment/spec.py deploys: v1, v2, and v3's one per v2 model. A
    v3 service that is another's twin (the same models, memory and CPU: v3's resnet152 is v1)
    is loaded once, under both names."""
    from deployment import spec

    runs: dict[tuple, list[str]] = {}
    services = [(name, spec.models_of(spec.VARIANTS[name].model_set), spec.BACKEND_SIZES[name])
                for name in ("v1", "v2")]  # fmt: skip
    services += [(f"v3 {m}", [m], spec.backend_size(spec.VARIANTS["v3"], m))
                 for m in spec.models_of(spec.VARIANTS["v3"].model_set)]  # fmt: skip
    for name, ids, size in services:
        runs.setdefault((tuple(ids), mebibytes(size.memory), size.cpu), []).append(name)
    return [
        BackendRun(" = ".join(names), ids, memory, cpu, spec.THREADS)
        for (ids, memory, cpu), names in runs.items()
    ]
