"""The benchmark scripts run end to end on a tiny budget (their figures come from full runs)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_throughput_benchmark_runs_every_variant(tmp_path, data_dir):
    out = tmp_path / "throughput.json"
    subprocess.run([sys.executable, "benchmarks/throughput.py", "--data-dir", str(data_dir), "--hidden", "16",
                    "--warmup", "2", "--iterations", "4", "--repeats", "1", "--out", str(out),
                    "--variants", "plain", "framework", "framework-fast"], cwd=REPO, check=True, timeout=300,
                   capture_output=True)
    report = json.loads(out.read_text())
    assert set(report["medians"]) == {"plain", "framework", "framework-fast"}
    assert all(v > 0 for v in report["medians"].values()) and report["hidden"] == 16
