"""int8 against fp32 on the trained model: `uv run python -m benchmarks.int8 [--size 224]`.

The resnet18 of tests/trained.py, fitted at `--size` pixels on its four generated classes, goes
through the real pipeline twice: an fp32 entry and an int8 one (the bake's gate, its figures in
the manifest). Then, in one run on this machine, every graph answers the same 200 held-out
pictures (top-1) and is timed on the same one-image input, the graphs taking turns, median of
`--runs` forwards each: fp32 as served (prepacking off, the backend's default), fp32 with
prepacking on (what int8 gets), the served int8 graph (activations QUInt8), and a QInt8
activations variant (S8S8) for comparison. Prints a table and the CPU's int8 flags; writes
benchmarks/results/int8.json. benchmarks/RESULTS.md, "int8", has the committed figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from onnxruntime.quantization import QuantType  # noqa: E402

from bake.pipeline import bake  # noqa: E402
from bake.quantize import make_int8  # noqa: E402
from runtime.bundle import Bundle  # noqa: E402
from runtime.files import sha256_of  # noqa: E402
from runtime.session import ModelSession  # noqa: E402
from runtime.settings import SessionSettings, available_cpus  # noqa: E402
from tests.trained import LABELS, pictures, save, train, write_image_sets  # noqa: E402
from weights.catalog import load_catalog  # noqa: E402
from weights.fetch import fetch  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "int8.json"
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def _cpu() -> dict:
    """The CPU's name and the flags ONNX Runtime's int8 kernels depend on (/proc/cpuinfo)."""
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    return {
        "model": info.get("model name") or platform.processor(),
        "cpus": available_cpus(),
        "int8_flags": {flag: flag in flags for flag in INT8_FLAGS},
    }


def _catalog(root: Path, digest: str, size: int) -> Path:
    labels = json.dumps(LABELS)
    common = (
        f'architecture = "resnet18"\nfile = "shapes.pt"\nsha256 = "{digest}"\nlabels = {labels}\n'
        f'preprocessing = {{ resize = {size}, crop = {size}, interpolation = "bilinear" }}\n'
    )
    path = root / "catalog.toml"
    path.write_text(
        'default = "shapes"\n'
        f"[models.shapes]\n{common}"
        f'[models.shapes_int8]\n{common}precision = "int8"\ncalibration = "calibration"\n'
        'validation = "validation"\n'
    )
    return path


def _top1(session: ModelSession, batch: np.ndarray, labels: np.ndarray) -> float:
    guesses = np.concatenate([session.logits(batch[i : i + 32]) for i in range(0, len(batch), 32)])
    return round(100.0 * float((guesses.argmax(axis=1) == labels).mean()), 2)


def _medians(sessions: dict[str, ModelSession], one: np.ndarray, runs: int) -> dict[str, float]:
    """Median ms per forward of `one`, the sessions taking turns (load falls on all alike)."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():
        for _ in range(5):
            session.logits(one)
    for _ in range(runs):
        for name, session in sessions.items():
            started = time.perf_counter()
            session.logits(one)
            times[name].append(time.perf_counter() - started)
    return {name: round(statistics.median(t) * 1000, 3) for name, t in times.items()}


def run(size: int, runs: int, workdir: Path) -> dict:
    torch.set_num_threads(available_cpus())
    started = time.perf_counter()
    trained = train(size=size)
    print(f"fitted resnet18 at {size} px in {trained.seconds:.1f} s", flush=True)
    checkpoint = save(trained, workdir / "shapes.pt")
    write_image_sets(workdir)
    catalog = load_catalog(_catalog(workdir, sha256_of(checkpoint), size))
    ids = ["shapes", "shapes_int8"]
    fetch(ids, workdir / "fetched", catalog=catalog, progress=False)
    fp32_manifest, int8_manifest = bake(
        ids, workdir / "fetched", workdir / "bundles", catalog=catalog, say=print
    )
    threads = available_cpus()
    served = SessionSettings(threads=threads)
    fp32_bundle = Bundle(workdir / "bundles" / "shapes", fp32_manifest)
    s8s8_dir = workdir / "s8s8"
    s8s8_dir.mkdir()
    calibration = catalog.entry("shapes_int8").calibration_images()
    make_int8(
        fp32_bundle.graph, s8s8_dir, calibration, fp32_manifest.preprocessing, QuantType.QInt8
    )
    int8_like = {**fp32_manifest.__dict__, "precision": "int8"}
    sessions = {
        "fp32 (served: prepacking off)": ModelSession(fp32_bundle, served),
        "fp32, prepacking on": ModelSession(
            fp32_bundle, SessionSettings(threads=threads, prepacking=True)
        ),
        "int8 U8S8 (served)": ModelSession(
            Bundle(workdir / "bundles" / "shapes_int8", int8_manifest), served
        ),
        "int8 S8S8": ModelSession(Bundle(s8s8_dir, type(fp32_manifest)(**int8_like)), served),
    }
    held_out = pictures(200, seed=1)
    batch = fp32_manifest.preprocessing.batch([image for image, _ in held_out])
    labels = np.array([label for _, label in held_out])
    top1 = {name: _top1(session, batch, labels) for name, session in sessions.items()}
    medians = _medians(sessions, batch[:1], runs)
    base = medians["fp32 (served: prepacking off)"]
    return {
        "size": size,
        "runs": runs,
        "threads": threads,
        "cpu": _cpu(),
        "onnxruntime": fp32_manifest.versions["onnxruntime"],
        "gate": int8_manifest.quantization,
        "graphs": {
            name: {
                "top1": top1[name],
                "forward_ms": medians[name],
                "speedup_vs_served_fp32": round(base / medians[name], 2),
                "speedup_vs_prepacked_fp32": round(
                    medians["fp32, prepacking on"] / medians[name], 2
                ),
            }
            for name in sessions
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


def print_table(result: dict) -> None:
    cpu = result["cpu"]
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in cpu["int8_flags"].items())
    print(f"\n{cpu['model']}, {result['threads']} threads; {flags}")
    print(f"onnxruntime {result['onnxruntime']}; resnet18 at {result['size']} px, batch 1")
    print(f"gate (bake): {json.dumps(result['gate'])}")
    print("| graph | top-1 (200 held-out) | forward, median | vs fp32 served | vs fp32 prepacked |")
    print("|---|---|---|---|---|")
    for name, row in result["graphs"].items():
        print(
            f"| {name} | {row['top1']:.1f} % | {row['forward_ms']:.2f} ms | "
            f"{row['speedup_vs_served_fp32']:.2f}x | {row['speedup_vs_prepacked_fp32']:.2f}x |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8", description=__doc__)
    parser.add_argument("--size", type=int, default=224, help="input pixels (default 224)")
    parser.add_argument("--runs", type=int, default=100, help="timed forwards per graph")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as workdir:
        result = run(args.size, args.runs, Path(workdir))
    print_table(result)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {OUT.relative_to(ROOT)} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
