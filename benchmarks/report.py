"""Tables on stdout and a PNG chart of the benchmark results."""

from __future__ import annotations

from pathlib import Path


def _row(cells, widths) -> str:
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def table(header: list[str], rows: list[list]) -> str:
    cells = [header, *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    lines += [_row(r, widths) for r in cells[1:]]
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def print_coldstart(name: str, result: dict) -> None:
    for cache, variants in result.items():
        print(f"\ncold start, {name}, {cache.replace('_', ' ')} (seconds, median)")
        phases = sorted({p for v in variants.values() for p in v["phases_s"]})
        rows = [
            [variant, v["total_s"], *[v["phases_s"].get(p, "") for p in phases]]
            for variant, v in variants.items()
        ]
        print(table(["variant", "total", *phases], rows))
        floor = variants["floor"]["total_s"]
        print(
            f"baked/floor = {variants['baked']['total_s'] / floor:.2f}   "
            f"download/baked = {variants['download']['total_s'] / variants['baked']['total_s']:.2f}"
        )


def print_serving(result: dict, model: str) -> None:
    bare = result["bare"][model]
    served = result["backend"]["models"][model]
    lat = served["latency"]
    print(f"\nserving {model}: /predict latency (ms) against bare decode+preprocess+forward")
    print(
        table(
            ["", "p50", "p95", "p99"],
            [
                ["bare", bare["p50_ms"], bare["p95_ms"], ""],
                ["/predict", lat["p50_ms"], lat["p95_ms"], lat["p99_ms"]],
            ],
        )
    )
    print(f"p50 ratio /predict / bare = {lat['p50_ms'] / bare['p50_ms']:.2f}")
    print(f"\nthroughput (requests/s); bare sequential = {bare['throughput_rps']:.2f}")
    rows = [
        [t["clients"], t["rps"], t["rps"] / bare["throughput_rps"], t["errors"]]
        for t in served["throughput"]
    ]
    print(table(["clients", "rps", "x bare", "errors"], rows))
    for key in ("backend", "memory_v2"):
        if key in result:
            mem = result[key]
            print(
                f"\nmemory ({key}): RSS {mem['memory_mb']['VmRSS']:.0f} MB "
                f"(anon {mem['memory_mb'].get('RssAnon', 0):.0f}, file "
                f"{mem['memory_mb'].get('RssFile', 0):.0f}) for {mem['weights_mb']:.0f} MB of "
                f"weights: ratio {mem['memory_mb']['VmRSS'] / mem['weights_mb']:.2f}"
            )


def print_knobs(result: dict) -> None:
    print("\nserving knobs (one model): p50 ms, requests/s at 1 and 4 clients")
    rows = []
    for name, run in result.items():
        tp = {t["clients"]: t for t in run["throughput"]}
        rows.append([name, run["latency"]["p50_ms"], tp[1]["rps"], tp[4]["rps"], tp[4]["errors"]])
    print(table(["configuration", "p50", "rps@1", "rps@4", "errors@4"], rows))


def print_containers(result: dict) -> None:
    print("\ncontainers: `podman run` to the first prediction (seconds, median)")
    rows = []
    for name, v in result.items():
        if "skipped" in v:
            print(f"{name}: skipped: {v['skipped']}")
            continue
        rows.append(
            [
                name,
                v["baked"]["total_s"],
                v["download"]["total_s"],
                v["floor"]["total_s"],
                v["baked"]["total_s"] / v["floor"]["total_s"],
                v["image_mb"],
                v["base_build_s"],
                v["code_build_s"],
            ]
        )
    print(
        table(
            [
                "set",
                "baked",
                "download",
                "floor",
                "baked/floor",
                "image MB",
                "base build s",
                "code build s",
            ],
            rows,
        )
    )


def chart(results: dict, path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("coldstart", "serving") if k in results]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "coldstart":
            names, bottoms = [], []
            for set_name, caches in results["coldstart"].items():
                for variant, v in caches["warm_cache"].items():
                    names.append(f"{set_name}\n{variant}")
                    bottoms.append(v["phases_s"])
            phases = sorted({p for b in bottoms for p in b})
            base = [0.0] * len(names)
            for phase in phases:
                values = [b.get(phase, 0.0) for b in bottoms]
                ax.bar(names, values, bottom=base, label=phase)
                base = [x + y for x, y in zip(base, values, strict=True)]
            ax.set_ylabel("seconds from launch to first prediction")
            ax.set_title("cold start (warm page cache, median)")
            ax.legend(fontsize=8)
            ax.tick_params(axis="x", labelsize=7)
        else:
            served = results["serving"]["backend"]["models"][model]
            bare = results["serving"]["bare"][model]["throughput_rps"]
            clients = [t["clients"] for t in served["throughput"]]
            ax.plot(clients, [t["rps"] for t in served["throughput"]], "o-", label="/predict")
            ax.axhline(bare, color="grey", linestyle="--", label="bare sequential")
            ax.set_ylim(bottom=0)
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel("requests per second")
            ax.set_title(f"throughput, {model}")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
