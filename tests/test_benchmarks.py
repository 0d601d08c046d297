"""The benchmark command runs end to end (a smoke run: one small model, one start each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.backend_process import ROOT

pytestmark = pytest.mark.slow


def test_quick_benchmark_measures_every_variant_and_writes_results(tmp_path):
    scratch = tmp_path / "tmp"  # the benchmark's temporary files: none outlives the run
    scratch.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick",
         "--only", "export,coldstart,serving,knobs,allocator,layout",
         "--out", str(tmp_path / "out"), "--weights-dir", str(tmp_path / "weights"),
         "--bundles-dir", str(tmp_path / "bundles")],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
        env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Nothing but ONNX Runtime's own session id (51 bytes, one per temporary directory)
    assert [p.name for p in scratch.iterdir()] in ([], [".ses"])
    assert "baked/torch floor =" in result.stdout
    assert (
        "p50 /predict / bare torch =" in result.stdout and "/ bare onnxruntime =" in result.stdout
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["export"]["resnet18"]["export_s"] > 0
    warm = results["coldstart"]["resnet18"]["warm_cache"]
    assert set(warm) == {"baked", "download", "torch_floor", "ort_floor", "ort_floor_ours"}
    assert all(v["total_s"] > 0 for v in warm.values())
    assert warm["baked"]["phases_s"]["load"] > 0
    assert warm["baked"]["load_work_s"]["digest_data_total"] > 0
    # The start's phases, on one timeline from the launch, beside the bare process's own
    backend = {s["phase"]: s for s in warm["baked"]["trace"]}
    for name in ("interpreter", "imports", "settings", "bundles", "open resnet18",
                 "digest_data resnet18", "load", "first_request"):  # fmt: skip
        assert 0 <= backend[name]["start"] <= backend[name]["end"] <= warm["baked"]["total_s"]
    assert backend["first_request"]["start"] >= backend["digest_data resnet18"]["end"]
    # Cloud Run's startup probe, simulated beside the client: it passes once the load ended
    assert backend["startup probe passed"]["start"] >= backend["load"]["end"]
    assert warm["baked"]["phases_s"]["probe_after_load"] >= 0
    floor = [s["phase"] for s in warm["ort_floor"]["trace"]]
    assert floor == ["interpreter", "import", "open", "decode", "forward"]
    assert "baked: phases of the run of median total" in result.stdout
    assert "ort floor: phases of the run of median total" in result.stdout
    serving = results["serving"]
    served = serving["backend"]["models"]["resnet18"]
    assert served["latency"]["p50_ms"] > 0
    assert all(t["errors"] == 0 and t["ok"] > 0 for t in served["throughput"])
    assert serving["bare_torch"]["resnet18"]["p50_ms"] > 0
    assert serving["bare_ort"]["resnet18"]["p50_ms"] > 0
    assert serving["bare_ort_ours"]["resnet18"]["p50_ms"] > 0
    assert "/predict, 1 client (ms), against bare decode+preprocess+session.run" in result.stdout
    assert serving["backend"]["model_files_mib"] > 40  # resnet18's 45 MB of weights
    assert set(results["knobs"]) >= {"default", "memory_arena=on", "prepacking=on"}
    allocator = results["allocator"]["resnet18"]
    assert {"glibc_default", "fixed_threshold"} <= set(allocator)
    # the backend's modules, imported for its settings, cost the bare process some memory
    assert allocator["fixed_threshold"]["ours_imports_mib"] > 0
    layout = results["layout"]["resnet18"]
    assert layout["ours"]["open_s"] > 0 and layout["saved"]["p50_ms"][0] > 0
    assert (tmp_path / "out" / "chart.png").stat().st_size > 10_000
