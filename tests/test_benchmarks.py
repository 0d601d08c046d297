"""The benchmark command runs end to end (a smoke run: one small model, one start each)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.backend_process import ROOT

pytestmark = pytest.mark.slow


def test_quick_benchmark_measures_every_variant_and_writes_results(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "coldstart,serving",
         "--out", str(tmp_path / "out"), "--weights-dir", str(tmp_path / "weights")],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "baked/floor =" in result.stdout and "p50 ratio /predict / bare =" in result.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    warm = results["coldstart"]["resnet18"]["warm_cache"]
    assert set(warm) == {"baked", "download", "floor"}
    assert all(v["total_s"] > 0 for v in warm.values())
    assert warm["baked"]["phases_s"]["verify"] > 0
    served = results["serving"]["backend"]["models"]["resnet18"]
    assert served["latency"]["p50_ms"] > 0
    assert all(t["errors"] == 0 and t["ok"] > 0 for t in served["throughput"])
    assert (tmp_path / "out" / "chart.png").stat().st_size > 10_000
