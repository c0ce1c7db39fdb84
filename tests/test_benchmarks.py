"""The benchmark scripts run end to end on a tiny budget (their figures come from full runs)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
                    "plain", "su_full", "--seeds", "0", "1", "--epochs", "1", "--limit_train_batches", "5",
                    "--recipe", "fast", "--out", str(out)], cwd=REPO, check=True, timeout=300, capture_output=True)
    report = json.loads(out.with_suffix(".json").read_text())
    assert [r["seed"] for r in report["results"]] == [0, 1, 0, 1] and report["args"]["recipe"] == "fast"
    assert [r["config"] for r in report["results"]] == ["ali_ring"] * 2 + ["ali_ring_su[su_full]"] * 2
    assert [r["loss"] for r in report["results"]] == ["non_saturating"] * 2 + ["su_full"] * 2  # the override ran
    table = out.with_suffix(".md").read_text()
    assert "| ALI | ring | 5 | 2 |" in table and "ALI 6.6 / 97.6 / 0.36" in table  # our row, its budget, the anchor
    assert [r["encoder"] for r in report["results"]] == ["change_of_variables"] * 2 + ["gaussian"] * 2
    assert "| ALI + Su, eq. 40 | ring |" in table


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
def test_probe_trajectory_probes_the_encoder_at_initialisation_and_at_each_validation(tmp_path, data_dir):
    """One epoch, then the same command for two: the second resumes the run in --run_dir, one epoch more."""
    out, run_dir = tmp_path / "trajectory", tmp_path / "run"
    for epochs in ("1", "2"):
        proc = subprocess.run([sys.executable, "benchmarks/probe_trajectory.py", "--epochs", epochs, "--every", "1",
                               "--limit_train_batches", "3", "--n_train", "300", "--no_linear", "--schedule", "1", "1",
                               "--data_dir", str(data_dir), "--run_dir", str(run_dir), "--out", str(out)],
                              cwd=REPO, timeout=600, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    trajectory = report["trajectory"]
    assert [r["epoch"] for r in trajectory] == [0, 1, 2] and report["header"]["config"] == "configs/bigan.yaml"
    assert report["header"]["resumed"] and report["header"]["complete"] and report["header"]["schedule"] == [1, 1]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 3 * 2  # 3 iterations an epoch, over both parts
    lrs = [group["lr"] for state in saved["optimizer_states"] for group in state["param_groups"]]
    assert lrs == pytest.approx([2e-4 * 0.01] * 2)  # --schedule 1 1: one constant epoch, then decayed to 1 % in one
    assert all(0.1 < r[k] <= 1 for r in trajectory for k in ("probe_1nn", "probe_1nn_penultimate"))
    assert 0.5 < trajectory[0]["probe_1nn_pixels"] <= 1 and "probe_linear" not in trajectory[0]
    assert out.with_suffix(".md").read_text().count("\n| ") == 4  # the header and three epochs
    # The last checkpoint, paired with pixels on the same test images: the same model as the last probe.
    final = report["final_paired_with_pixels"]
    assert final["probe_1nn"] == pytest.approx(trajectory[-1]["probe_1nn"], abs=1e-6)
    assert final["probe_1nn_pixels"] == pytest.approx(trajectory[0]["probe_1nn_pixels"], abs=1e-6)
    assert all(0 <= final[f"probe_1nn{s}_vs_pixels_p"] <= 1 and final[f"probe_1nn{s}_vs_pixels_discordant"] >= 0
               for s in ("", "_penultimate"))
    assert 0 <= trajectory[0]["probe_1nn_vs_pixels_p"] <= 1  # the control at initialisation, paired as well
    assert out.with_suffix(".md").read_text().count("McNemar") == 2


@pytest.mark.slow
def test_results_table_trains_scores_and_draws_each_model(tmp_path, data_dir):
    out = tmp_path / "fmnist"
    proc = subprocess.run([sys.executable, "benchmarks/results_table.py", "--models", "flow", "aae_semi_100",
                           "dcgan_plain", "--epochs", "1", "--limit_train_batches", "2", "--n_samples", "200",
                           "--n_train", "300",
                           "--data_dir", str(data_dir), "--out", str(out)], cwd=REPO, timeout=900,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"flow", "aae_semi_100", "dcgan_plain"} and report["header"]["commit"]
    assert all(r["iterations"] == 2 and r["fd_fashion_classifier"] > 0 for r in rows.values())
    semi = rows["aae_semi_100"]
    assert 0 < semi["probe_1nn"] <= 1 and 0 < semi["probe_1nn_pixels"] <= 1 and semi["reconstruction_mse"] > 0
    assert 0 < semi["probe_1nn_penultimate"] <= 1 and "probe_1nn_penultimate" not in rows["flow"]
    assert "probe_1nn" not in rows["flow"] and rows["flow"]["test/bits_per_dim"] > 0
    # the plain loop, scored alike
    assert rows["dcgan_plain"]["class"] == "GAN" and "probe_1nn" not in rows["dcgan_plain"]
    assert 0 <= rows["aae_semi_100"]["test/error"] <= 1 and rows["aae_semi_100"]["labels"] == 100
    table = out.with_suffix(".md").read_text()
    assert "| aae_semi_100 | 2 |" in table and "bits/dim" in table and "logistic regression on the pixels" in table
    assert all((tmp_path / "fmnist_samples" / f"{name}.png").stat().st_size > 0 for name in rows)


def test_the_plain_dcgan_loop_initialises_as_radford_et_al(monkeypatch):
    plain = _load_benchmark("plain_dcgan", monkeypatch)
    from gan_lightning.models import GAN

    G = GAN(data_shape=(1, 28, 28)).generator
    G.apply(plain.radford_init)
    convs = [m for m in G.modules() if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Conv2d, torch.nn.Linear))]
    norms = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert convs and abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.002
    assert norms and all(abs(m.weight.mean().item() - 1) < 0.01 and not m.bias.any() for m in norms)


def _load_benchmark(name: str, monkeypatch):
    """A benchmark script as a module, with benchmarks/ on the path as when it runs as a script."""
    import importlib.util

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gan", "ali", "bigan", "aae", "vae", "flow"])
def test_each_plain_loop_steps_every_player_of_its_model(name, data_dir, monkeypatch):
    """The plain loop that the framework is timed against does the model's whole iteration: two iterations
    move every parameter of every player's optimizer (the flow's zero-initialised coupling outputs keep the
    layers before them still on the first), and the EMA copies where the config keeps them."""
    import torch

    bench = _load_benchmark("throughput_models", monkeypatch)
    model, _ = bench.build(name, str(data_dir), "cpu")
    optimizers, _ = model.configure_optimizers()
    before = {id(p): p.detach().clone() for opt in optimizers for g in opt.param_groups for p in g["params"]}
    ema_before = {n: [p.detach().clone() for p in a.parameters()] for n, a in model.ema.items()}
    x = torch.rand(8, *model.hparams.data_shape) * 2 - 1
    iteration = bench.plain_update(model, optimizers)
    iteration(x)
    iteration(x)
    for opt in optimizers:
        moved = [not torch.equal(before[id(p)], p) for g in opt.param_groups for p in g["params"]]
        assert all(moved), (f"{name}: {moved.count(False)} of {len(moved)} parameters of {type(opt).__name__} "
                            "not updated")
    for n, averaged in model.ema.items():
        assert any(not torch.equal(a, b) for a, b in zip(ema_before[n], averaged.parameters(), strict=True)), n


@pytest.mark.slow
def test_model_throughput_benchmark_times_both_loops_and_writes_the_table(tmp_path, data_dir):
    out = tmp_path / "throughput_models"
    proc = subprocess.run([sys.executable, "benchmarks/throughput_models.py", "--models", "vae", "aae",
                           "--warmup", "1", "--iterations", "3", "--repeats", "1", "--data_dir", str(data_dir),
                           "--out", str(out)], cwd=REPO, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["models"]) == {"vae", "aae"} and report["commit"] and report["machine"]
    for r in report["models"].values():
        assert r["batch_size"] == 100 and r["iterations"] == 3
        assert all(v > 0 for v in r["median"].values()) and set(r["median"]) == {"plain", "framework"}
        assert r["framework_vs_plain"] == pytest.approx(r["median"]["framework"] / r["median"]["plain"])
    table = out.with_suffix(".md").read_text()
    assert "| vae (configs/vae.yaml) | 100 | 3 |" in table and "| aae (configs/aae.yaml) | 100 | 3 |" in table


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_host_overhead_benchmark_interleaves_both_loops_and_writes_the_paired_table(tmp_path, data_dir, precision):
    out = tmp_path / "host_overhead"
    proc = subprocess.run([sys.executable, "benchmarks/host_overhead.py", "--models", "vae", "--rounds", "2",
                           "--warmup", "2", "--iterations", "8", "--iterations_per_batch", "4", "--data_dir",
                           str(data_dir), "--precision", precision, "--out", str(out)],
                          cwd=REPO, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    r = report["models"]["vae"]
    assert report["width"] == 16 and report["commit"] and "1 thread" in report["machine"]
    assert (report["accelerator"], report["precision"]) == ("cpu", precision)
    assert f"cpu, precision {precision}" in out.with_suffix(".md").read_text()
    assert len(r["ms"]["plain"]) == len(r["ms"]["framework"]) == len(r["ratios"]) == 2
    assert all(v > 0 for v in r["ms"]["plain"] + r["ms"]["framework"])
    assert r["framework_vs_plain"] == pytest.approx(sorted(r["ratios"])[0] / 2 + sorted(r["ratios"])[1] / 2)
    assert "| vae (configs/vae.yaml) |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_semi_supervised_baselines_train_on_the_configs_labelled_images_alone(tmp_path, data_dir):
    """The network fits its 100 labelled images (no training error left) and is scored on the 10,000 test images;
    the pixel baselines use the same 100 images, so a wrong subset or split would change the counts."""
    out = tmp_path / "baselines"
    proc = subprocess.run([sys.executable, "benchmarks/semi_supervised_baselines.py", "--seeds", "0",
                           "--steps", "5", "150",
                           "--data_dir", str(data_dir), "--out", str(out)], cwd=REPO, timeout=600,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["header"]["labels"] == 100 and report["header"]["test_images"] == 10_000
    first, last = report["network"][0]["steps"]
    assert (first["step"], last["step"]) == (5, 150)
    assert last["train_error"] == 0.0 < first["train_error"]  # it learns the labelled images, from chance
    assert 0.1 < last["test_error"] < 0.6 and 0.1 < report["pixels_logistic_regression_error"] < 0.6
    assert report["network"][0]["best_on_validation"]["val_error"] == min(s["val_error"] for s in (first, last))
    assert "| q(y|x) network, 150 updates |" in out.with_suffix(".md").read_text()


def test_benchmarks_label_their_output_with_the_commit_and_mark_a_tree_that_differs_from_it(tmp_path, monkeypatch):
    provenance = _load_benchmark("provenance", monkeypatch)
    monkeypatch.delenv("GIT_COMMIT", raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=repo,  # noqa: E731
                                    check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    (repo / "model.py").write_text("lr = 1e-3\n")
    git("add", "model.py")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "--short=7", "HEAD")
    assert provenance.commit(repo) == head
    (repo / "model.py").write_text("lr = 1e-4\n")  # figures from code that is not the commit's
    assert provenance.commit(repo) == f"{head}-dirty"
    monkeypatch.setenv("GIT_COMMIT", "0123abc")  # a copy of the tree elsewhere, its commit known
    assert provenance.commit(repo) == "0123abc"
    monkeypatch.delenv("GIT_COMMIT")
    outside = tmp_path / "not_a_checkout"
    outside.mkdir()
    assert provenance.commit(outside) == "unknown"


@pytest.mark.slow
def test_semi_supervised_seeds_fits_tests_and_resumes_each_seed(tmp_path, data_dir):
    """Two seeds for one epoch, then the same sweep of one seed for two: it resumes that seed's run."""
    out, root = tmp_path / "seeds", tmp_path / "runs"
    tiny = ["--limit_train_batches", "2", "--limit_test_batches", "2", "--data_dir", str(data_dir),
            "--run_root", str(root), "--out", str(out), "--name", "noisy",
            "--overrides", "--trainer.limit_val_batches", "2", "--model.init_args.input_noise", "0.3"]
    for seeds, epochs in ((["0", "1"], "1"), (["1"], "2")):
        proc = subprocess.run([sys.executable, "benchmarks/semi_supervised_seeds.py", "--seeds", *seeds,
                               "--epochs", epochs, *tiny], cwd=REPO, timeout=600, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in root.iterdir()) == ["noisy_seed0", "noisy_seed1"]
    report = json.loads(out.with_suffix(".json").read_text())
    (run,) = report["runs"]
    assert run["seed"] == 1 and run["epochs_completed"] == 2 and run["complete"]
    assert list(run["val_error_by_epoch"]) == ["0", "1"] and 0 <= run["test_error"] <= 1
    assert run["best_val_error"] == min(run["val_error_by_epoch"].values())
    saved = torch.load(root / "noisy_seed1" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["hyper_parameters"]["seed"] == 1 and saved["hyper_parameters"]["input_noise"] == 0.3
    assert saved["epoch"] == 2
    # The second part resumed the first: its log validates epoch 1 alone, not epochs 0 and 1 from scratch.
    import csv
    fits = [list(csv.DictReader(open(f))) for f in sorted((root / "noisy_seed1" / "logs").glob("*/metrics.csv"))]
    validated = [sorted({r["epoch"] for r in rows if r.get("val/error")}) for rows in fits]
    assert [v for v in validated if v] == [["0"], ["1"]]
    assert report["header"]["overrides"][-2:] == ["--model.init_args.input_noise", "0.3"] and report["header"]["commit"]
    assert "| 1 | 2 |" in out.with_suffix(".md").read_text()
