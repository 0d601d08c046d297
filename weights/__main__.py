"""Command line: `python -m weights {list,fetch,demo,verify}`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weights.catalog import CatalogError, load_catalog


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m weights", description=__doc__)
    parser.add_argument(
        "--catalog", help="catalog file (default: $WEIGHTS_CATALOG, else the built-in one)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="show the catalog with sizes and accuracy")

    fetch = sub.add_parser("fetch", help="download weights into a directory (build time)")
    fetch.add_argument("--models", required=True, help="a set (v1, v2) or comma-separated ids")
    fetch.add_argument("--dest", required=True, type=Path, help="weights directory")
    fetch.add_argument("--mirror", help="base URL serving torchvision's files ($WEIGHTS_MIRROR)")
    fetch.add_argument("--hub-endpoint", help="Hugging Face Hub endpoint ($HF_ENDPOINT)")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bars")
    fetch.add_argument(
        "--frozen",
        action="store_true",
        help="refuse any file the catalog or its committed lock does not pin ($WEIGHTS_FROZEN=1;"
        " image builds)",
    )

    demo = sub.add_parser("demo", help="write UNTRAINED random weights (offline demos, tests)")
    demo.add_argument("--models", required=True)
    demo.add_argument("--dest", required=True, type=Path)

    verify = sub.add_parser("verify", help="check every file of a directory against its lock")
    verify.add_argument("--dest", required=True, type=Path)
    return parser


def _list(catalog) -> None:
    rows = [("id", "architecture", "weights", "MB", "params", "acc@1", "classes", "source")]
    for entry in catalog.models.values():
        meta = entry.metadata()
        size, acc = meta["file_size_mb"], meta["imagenet_acc1"]
        rows.append(
            (
                entry.id + (" (default)" if entry.id == catalog.default else ""),
                entry.architecture,
                entry.weights or "own: " + entry.source_description,
                "?" if size is None else f"{size:.1f}",
                f"{meta['parameters'] / 1e6:.1f}M",
                "-" if acc is None else f"{acc:.2f}",
                str(meta["num_classes"]),
                _kind(entry, catalog),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print()
    for name, ids in catalog.sets.items():
        sizes = [catalog.entry(i).metadata()["file_size_mb"] for i in ids]
        known = sum(s for s in sizes if s is not None)
        total = f"{known:.0f} MB" + ("+" if None in sizes else "")
        print(f"set {name}: {', '.join(ids)} ({total})")


def _kind(entry, catalog) -> str:
    """Where the entry comes from: torchvision's catalog or the Hub (built in), or yours."""
    builtin = catalog.builtin_ids is None or entry.id in catalog.builtin_ids
    origin = "hub" if entry.hub else "torchvision"
    return origin if builtin and not entry.own else f"yours ({catalog.path.name})"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Imported late so `list` and usage errors stay quick and clear.
    from weights.demo import bake_untrained
    from weights.fetch import FetchError, fetch
    from weights.store import WeightsError, WeightsStore

    try:
        catalog = load_catalog(args.catalog)
        if args.command == "list":
            _list(catalog)
        elif args.command == "fetch":
            ids = catalog.select(args.models)
            records = fetch(
                ids,
                args.dest,
                catalog=catalog,
                mirror=args.mirror,
                hub_endpoint=args.hub_endpoint,
                progress=not args.no_progress,
                frozen=True if args.frozen else None,
            )
            total = sum(r.size for r in records) / 1e6
            print(f"{len(records)} file(s), {total:.1f} MB in {args.dest} (lock: weights.lock)")
        elif args.command == "demo":
            records = bake_untrained(catalog.select(args.models), args.dest, catalog=catalog)
            print(
                f"wrote UNTRAINED demo weights for {', '.join(r.id for r in records)} "
                f"in {args.dest}; predictions from them are meaningless"
            )
        elif args.command == "verify":
            store = WeightsStore(args.dest)
            for model_id in store.all_fetched():
                store.verify(model_id)
                print(f"{model_id}: ok")
    except (CatalogError, FetchError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
