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
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def print_export(result: dict) -> None:
    print("\nbake: export and verification per model (seconds, from the manifests)")
    rows = [
        [
            m,
            v["export_s"],
            v["verify_s"],
            f"{v['worst_probability_difference']:.1e}",
            v["model_files_mb"],
        ]
        for m, v in result.items()
    ]
    print(table(["model", "export s", "verify s", "worst |dp|", "MB"], rows))


def print_coldstart(name: str, result: dict) -> None:
    for cache, variants in result.items():
        print(f"\ncold start, {name}, {cache.replace('_', ' ')} (seconds, median)")
        phases = list(dict.fromkeys(p for v in variants.values() for p in v["phases_s"]))
        rows = [
            [variant, v["total_s"], *[v["phases_s"].get(p, "") for p in phases]]
            for variant, v in variants.items()
        ]
        print(table(["variant", "total", *phases], rows))
        baked = variants["baked"]["total_s"]
        ratios = [
            f"baked/{floor.replace('_', ' ')} = {baked / variants[floor]['total_s']:.2f}"
            for floor in ("ort_floor", "ort_floor_ours", "torch_floor")
            if floor in variants
        ]
        if "download" in variants:
            ratios.append(f"download/baked = {variants['download']['total_s'] / baked:.2f}")
        print("   ".join(ratios))
        print_trace(variants)


def print_trace(variants: dict) -> None:
    """The backend's start phases beside the bare ONNX Runtime process's, from the launch."""
    for variant in ("baked", "ort_floor"):
        if "trace" not in variants.get(variant, {}):
            continue
        print(f"\n  {variant.replace('_', ' ')}: phases of the run of median total")
        rows = [
            [s["phase"], s["start"], s["end"], round((s["end"] - s["start"]) * 1000)]
            for s in variants[variant]["trace"]
        ]
        print(table(["phase", "from s", "to s", "ms"], rows))


def _memory_line(label: str, run: dict) -> str:
    memory = run["memory_mb"]
    return (
        f"{label}: worker RSS {memory['VmRSS']:.0f} MiB after the first prediction "
        f"(anon {memory.get('RssAnon', 0):.0f}, file {memory.get('RssFile', 0):.0f}) for "
        f"{run['model_files_mib']:.0f} MiB of model files: {run['rss_over_files_mib']:.0f} MiB "
        f"over them; {run['rss_over_files_end_mib']:.0f} MiB after the whole run"
    )


def print_serving(result: dict, model: str) -> None:
    torch_bare, ort_bare = result["bare_torch"][model], result["bare_ort"][model]
    served = result["backend"]["models"][model]
    lat = served["latency"]
    print(f"\nserving {model}: /predict latency (ms) against bare decode+preprocess+forward")
    print(
        table(
            ["", "p50", "p95", "p99"],
            [
                ["bare torch eager", torch_bare["p50_ms"], torch_bare["p95_ms"], ""],
                ["bare onnxruntime", ort_bare["p50_ms"], ort_bare["p95_ms"], ""],
                ["/predict", lat["p50_ms"], lat["p95_ms"], lat["p99_ms"]],
            ],
        )
    )
    print(
        f"p50 /predict / bare torch = {lat['p50_ms'] / torch_bare['p50_ms']:.2f}   "
        f"/ bare onnxruntime = {lat['p50_ms'] / ort_bare['p50_ms']:.2f}"
    )
    base = torch_bare["throughput_rps"]
    print(f"\nthroughput (requests/s); bare torch sequential = {base:.2f}")
    rows = [[t["clients"], t["rps"], t["rps"] / base, t["errors"]] for t in served["throughput"]]
    print(table(["clients", "rps", "x bare torch", "errors"], rows))
    print()
    print(_memory_line(model, result["backend"]))
    if "v2" in result:
        print(_memory_line("v2", result["v2"]))
        print(f"v2 start (launch to first 200): {result['v2']['start_s']:.2f} s")


def print_latency(result: dict, models: list[str]) -> None:
    """/predict p50/p95 against a bare session.run with the same decode and preprocessing."""
    print("\n/predict, 1 client (ms), against bare decode+preprocess+session.run in one process")
    rows = []
    for model in models:
        served = result["backend"]["models"].get(model) or (
            result.get("v2", {}).get("models", {}).get(model)
        )
        if served is None:
            continue
        lat, bare, ours = (
            served["latency"],
            result["bare_ort"][model],
            result["bare_ort_ours"][model],
        )
        rows.append([
            model, lat["p50_ms"], lat["p95_ms"], bare["p50_ms"], bare["p95_ms"],
            ours["p50_ms"], ours["p95_ms"], lat["p50_ms"] / bare["p50_ms"],
            lat["p50_ms"] / ours["p50_ms"],
        ])  # fmt: skip
    header = ["model", "p50", "p95", "bare default p50", "p95", "bare ours p50", "p95",
              "/ bare default", "/ bare ours"]  # fmt: skip
    print(table(header, rows))


def print_knobs(result: dict, model: str) -> None:
    print(f"\nsession settings ({model}: p50 ms, requests/s; v2: start, p50 per model, memory)")
    rows = []
    for name, runs in result.items():
        one = runs[model]
        tp = {t["clients"]: t for t in one["models"][model]["throughput"]}
        row = [
            name,
            one["models"][model]["latency"]["p50_ms"],
            tp.get(1, {}).get("rps", ""),
            tp.get(4, {}).get("rps", ""),
            one["rss_over_files_mib"],
        ]
        if "v2" in runs:
            v2 = runs["v2"]
            row += [
                v2["start_s"],
                "/".join(f"{m['latency']['p50_ms']:.0f}" for m in v2["models"].values()),
                v2["rss_over_files_mib"],
                v2["rss_over_files_end_mib"],
            ]
        rows.append(row)
    header = ["setting", "p50", "rps@1", "rps@4", "MiB over files"]
    if rows and len(rows[0]) > len(header):
        header += ["v2 start s", "v2 p50s", "v2 MiB over", "v2 MiB over (end)"]
    print(table(header, rows))


def print_allocator(result: dict) -> None:
    print("\nallocator: bare process, our session settings (MiB of RSS over the model files)")
    rows = [
        [
            name,
            v["glibc_default"]["rss_over_files_mib"],
            v["fixed_threshold"]["rss_over_files_mib"],
            v["fixed_threshold"]["ours_imports_mib"],
        ]
        for name, v in result.items()
    ]
    header = ["set", "glibc default", "fixed 128 KiB threshold", "of it, our modules' imports"]
    print(table(header, rows))


def print_layout(result: dict) -> None:
    print("\nlayout made at start (ours) against saved at build time (not taken: CPU-specific)")
    rows = [
        [
            name,
            kind,
            v["open_s"],
            "/".join(f"{p:.0f}" for p in v["p50_ms"]),
            v["rss_over_files_mib"],
        ]
        for name, kinds in result.items()
        for kind, v in kinds.items()
    ]
    print(table(["set", "graph", "open s", "p50 ms", "MiB over files"], rows))


def print_containers(result: dict) -> None:
    print("\ncontainers: `podman run` to the answer (seconds, median), builds and sizes")
    rows = []
    for name, v in result.items():
        if "skipped" in v:
            print(f"{name}: skipped: {v['skipped']}")
            continue
        rows.append(
            [
                name,
                v["baked"]["total_s"],
                v["ort_floor"]["total_s"],
                v["torch_floor"]["total_s"],
                v["baked"]["total_s"] / v["torch_floor"]["total_s"],
                v["image_mb"],
                v["image_without_models_mb"],
                v["bake_stage_build_s"],
                v["code_build_s"],
            ]
        )
    header = ["set", "baked", "ort floor", "torch floor", "baked/torch", "image MB",
              "without models MB", "bake stage s", "code image s"]  # fmt: skip
    print(table(header, rows))


def chart(results: dict, path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = [
        (name, caches["warm_cache"])
        for name, caches in results.get("coldstart", {}).items()
        if any("trace" in v for v in caches["warm_cache"].values())
    ]
    panels = [("coldstart", s) for s in starts] + (
        [("serving", None)] if "serving" in results else []
    )
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.2), squeeze=False)
    for ax, (panel, start) in zip(axes[0], panels, strict=True):
        if panel == "coldstart":
            _start_phases(ax, *start)
        else:
            _throughput(ax, results["serving"], model)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _start_phases(ax, name: str, variants: dict) -> None:
    """Each start phase as a bar on the timeline from launch: backend above, bare ORT below."""
    labels, colours = [], {"baked": "tab:blue", "ort_floor": "tab:orange"}
    for variant in ("baked", "ort_floor"):
        for span in variants.get(variant, {}).get("trace", []):
            labels.append(f"{'backend' if variant == 'baked' else 'bare ORT'}: {span['phase']}")
            if span["end"] == span["start"]:  # a moment (the startup probe passed): a mark
                ax.plot(span["start"], len(labels) - 1, "D", color=colours[variant])
                continue
            ax.barh(len(labels) - 1, span["end"] - span["start"], left=span["start"],
                    color=colours[variant])  # fmt: skip
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from launch")
    totals = ", ".join(
        f"{'backend' if v == 'baked' else 'bare ORT'} {variants[v]['total_s']:.2f} s"
        for v in ("baked", "ort_floor")
        if v in variants
    )
    ax.set_title(f"cold start phases, {name} (warm page cache): {totals}", fontsize=9)


def _throughput(ax, serving: dict, model: str) -> None:
    served = serving["backend"]["models"][model]
    clients = [t["clients"] for t in served["throughput"]]
    ax.plot(clients, [t["rps"] for t in served["throughput"]], "o-", label="/predict")
    for key, style, label in (
        ("bare_torch", "--", "bare torch eager, sequential"),
        ("bare_ort", ":", "bare onnxruntime, sequential"),
    ):
        if model in serving.get(key, {}):
            ax.axhline(serving[key][model]["throughput_rps"], color="grey", linestyle=style,
                       label=label)  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests per second")
    ax.set_title(f"throughput, {model}")
    ax.legend(fontsize=8)
