"""Command line: `python -m bake --models SET_OR_IDS --weights DIR --dest DIR`."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bake",
        description="Compile fetched weights into verified ONNX bundles (build time).",
    )
    parser.add_argument("--models", required=True, help="a set (v1, v2, small) or ids")
    parser.add_argument(
        "--weights", required=True, type=Path, help="weights directory (python -m weights fetch)"
    )
    parser.add_argument("--dest", required=True, type=Path, help="bundles directory to write")
    parser.add_argument(
        "--catalog", help="catalog file (default: $WEIGHTS_CATALOG, else the built-in one)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # torch.export's deprecation notices are about torch's own internals, not ours.
    warnings.filterwarnings("ignore", category=FutureWarning)
    # Imported late so usage errors stay quick.
    from bake.export import ExportError
    from bake.pipeline import bake
    from bake.quantize import QuantizationError
    from bake.verify import VerificationError
    from runtime.bundle import BundleError
    from weights.catalog import CatalogError, load_catalog
    from weights.store import WeightsError

    try:
        catalog = load_catalog(args.catalog)
        manifests = bake(catalog.select(args.models), args.weights, args.dest, catalog=catalog)
    except (
        CatalogError,
        WeightsError,
        ExportError,
        VerificationError,
        QuantizationError,
        BundleError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    untrained = [m.id for m in manifests if m.untrained]
    print(f"{len(manifests)} bundle(s) in {args.dest}: {', '.join(m.id for m in manifests)}")
    if untrained:
        print(f"UNTRAINED demo weights: {', '.join(untrained)}; predictions are meaningless")
    return 0


if __name__ == "__main__":
    sys.exit(main())
