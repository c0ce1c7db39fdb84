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


@pytest.mark.slow
def test_toy_mode_benchmark_writes_the_table_over_seeds(tmp_path):
    out = tmp_path / "toy"
    subprocess.run([sys.executable, "benchmarks/toy_modes.py", "--models", "ali", "--datasets", "ring", "--variants",
                    "plain", "--seeds", "0", "1", "--epochs", "1", "--limit_train_batches", "5", "--recipe", "fast",
                    "--out", str(out)], cwd=REPO, check=True, timeout=300, capture_output=True)
    report = json.loads(out.with_suffix(".json").read_text())
    assert [r["seed"] for r in report["results"]] == [0, 1] and report["args"]["recipe"] == "fast"
    table = out.with_suffix(".md").read_text()
    assert "| ALI | ring |" in table and "ALI 6.6 / 97.6" in table  # our row beside PacGAN's anchor


@pytest.mark.slow
def test_evaluation_overhead_benchmark_times_both_paths(tmp_path, data_dir):
    out = tmp_path / "eval"
    subprocess.run([sys.executable, "benchmarks/eval_overhead.py", "--n_samples", "200", "--batch_size", "100",
                    "--n_real", "500", "--repeats", "1", "--data_dir", str(data_dir), "--out", str(out)],
                   cwd=REPO, check=True, timeout=300, capture_output=True)
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["seconds_median"]) == {"bare", "scores[fid,is]", "scores[fid,is,kid]"}
    assert all(v > 0 for v in report["seconds_median"].values()) and report["n_real"] == 500
    assert {"fd_fashion_classifier", "is_fashion_classifier", "kid_fashion_classifier"} <= set(report["last_scores"])


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_communication_benchmark_counts_both_strategies(tmp_path, data_dir):
    out = tmp_path / "ddp"
    subprocess.run([sys.executable, "benchmarks/ddp_communication.py", "--iterations", "2", "--models", "wgan_gp",
                    "--data-dir", str(data_dir), "--out", str(out)], cwd=REPO, check=True, timeout=300,
                   capture_output=True)
    (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert row["model"] == "WGAN-GP, n_critic 5" and row["iterations"] == 2
    assert row["player_ddp_ratio"] == 1.0  # two D steps, no G step: D's bytes twice, nothing else
    assert row["lightning_ddp_ratio"] > 1.9  # every backward sends G's zeros too
    assert "| WGAN-GP, n_critic 5 |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_results_table_trains_scores_and_draws_each_model(tmp_path, data_dir):
    out = tmp_path / "fmnist"
    proc = subprocess.run([sys.executable, "benchmarks/results_table.py", "--models", "flow", "aae_semi_100",
                           "--epochs", "1", "--limit_train_batches", "2", "--n_samples", "200", "--n_train", "300",
                           "--data_dir", str(data_dir), "--out", str(out)], cwd=REPO, timeout=900,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"flow", "aae_semi_100"} and report["header"]["commit"]
    assert all(r["iterations"] == 2 and r["fd_fashion_classifier"] > 0 for r in rows.values())
    semi = rows["aae_semi_100"]
    assert 0 < semi["probe_1nn"] <= 1 and 0 < semi["probe_1nn_pixels"] <= 1 and semi["reconstruction_mse"] > 0
    assert "probe_1nn" not in rows["flow"] and rows["flow"]["test/bits_per_dim"] > 0
    assert 0 <= rows["aae_semi_100"]["test/error"] <= 1 and rows["aae_semi_100"]["labels"] == 100
    table = out.with_suffix(".md").read_text()
    assert "| aae_semi_100 | 2 |" in table and "bits/dim" in table and "logistic regression on the pixels" in table
    assert all((tmp_path / "fmnist_samples" / f"{name}.png").stat().st_size > 0 for name in rows)
