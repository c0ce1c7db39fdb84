"""`evaluate` says first what it will compute and about how long that takes, shows a progress bar per phase on
stderr (the table stays on stdout), and scores a toy mixture's checkpoint by PacGAN's protocol, as the
``ModeCoverage`` callback does in training (issue 34, item 5)."""
import csv
import json
from pathlib import Path

import pytest
import torch

from gan_lightning.cli import main
from tests.helpers import refused
from tests.test_image_metrics import fashion, tiny_fashion_bigan


@pytest.fixture
def tiny(monkeypatch, data_dir):
    """`evaluate` on an untrained tiny BiGAN on Fashion-MNIST (no checkpoint file), each real set capped at 100
    images: seconds, not the minutes of the published protocols."""
    from gan_lightning import commands
    from gan_lightning.metrics import protocols

    datamodule = fashion(data_dir)
    monkeypatch.setattr(commands, "load_model", lambda *args, **kwargs: (tiny_fashion_bigan().eval(), datamodule))
    images = protocols.real_images
    monkeypatch.setattr(protocols, "real_images", lambda dm, reference, n=None: images(dm, reference, n or 100))


def evaluate(tmp_path: Path, capsys, *argv: str) -> tuple[str, str, str, dict]:
    """(the plan line, stdout, stderr, the JSON) of `python -m gan_lightning evaluate ... ARGV`, in-process."""
    capsys.readouterr()
    out = tmp_path / "eval.json"
    main(["evaluate", "--ckpt_path", str(tmp_path / "run.ckpt"), "--device", "cpu", "--batch_size", "32",
          "--cache_dir", str(tmp_path / "stats"), "--out", str(out), *argv])
    said = capsys.readouterr()
    return said.out.splitlines()[0], said.out, said.err, json.loads(out.read_text())


def finished(bar: str, err: str) -> bool:
    """Whether stderr shows the bar named ``bar`` at its end (tqdm's ``DESC: 100%|...``)."""
    return f"{bar}: 100%" in err


# --- the plan line and the bars --------------------------------------------------------------------------------

def test_the_plan_names_the_phases_that_run_and_each_phase_has_a_bar_on_stderr(tiny, tmp_path, capsys):
    image = ["--metrics", "fid", "kid", "--protocol", "test10k", "--n_samples", "64", "--n_real", "80"]
    plan, out, err, results = evaluate(tmp_path, capsys, *image)
    assert plan.startswith("evaluate: ") and " expect " in plan and "on a 2-core CPU" in plan, plan
    assert "real statistics of the floor, 100 train_full images (not cached)" in plan, plan
    assert "real statistics of the reference, 80 test images (not cached)" in plan, plan
    assert ("generating 64 samples and their fashion_classifier features for fd_fashion_classifier, "
            "kid_fashion_classifier (protocol test10k[n_samples=64,n_real=80]") in plan, plan
    assert "kid: 100 subsets of 64 samples" in plan, plan
    assert "probes" not in plan and "precision/recall" not in plan and "is_fashion" not in plan, plan
    for bar in ("real statistics: 100 train_full images (not cached)", "real statistics: 80 test images (not cached)",
                "generating 64 samples and their fashion_classifier features", "kid: 100 subsets of 64 samples"):
        assert finished(bar, err), (bar, err)
    assert "fd_fashion_classifier " in out and "100%" not in out  # the bars stay off stdout, the table on it
    assert set(results["phase_seconds"]) == {"real_statistics_train_full", "real_statistics_test", "samples", "kid",
                                             "total"}

    plan, _, err, _ = evaluate(tmp_path, capsys, *image)  # the same real statistics: read from the cache
    assert "100 train_full images (cached)" in plan and "80 test images (cached)" in plan, plan
    assert "not cached" not in plan and "real statistics" not in err, err
    assert finished("generating 64 samples and their fashion_classifier features", err)

    plan, _, err, _ = evaluate(tmp_path, capsys, *image, "--quiet")
    assert plan.startswith("evaluate: ") and "generating 64 samples" in plan and err.strip() == "", err


def test_probes_and_precision_recall_are_phases_of_their_own_and_no_linear_drops_the_linear_one(tiny, tmp_path,
                                                                                               capsys):
    plan, _, err, results = evaluate(tmp_path, capsys, "--metrics", "prc", "probes", "--protocol", "test10k",
                                     "--n_samples", "64", "--n_train", "200")
    for phase in ("precision/recall of 64", "probes: 1-NN", "probes: linear"):
        assert phase in plan, (phase, plan)
    assert "--no_linear skips them" in plan, plan
    for bar in ("precision/recall (64 generated vs as many real features)",
                "probes: 1-NN (200 training vs 10,000 test images) and reconstruction",
                "probes: linear (logistic regression on 200 training images)"):
        assert finished(bar, err), (bar, err)
    assert {"precision_fashion_classifier", "probe_1nn", "probe_linear_pixels"} <= set(results)

    plan, _, err, results = evaluate(tmp_path, capsys, "--metrics", "probes", "--no_linear", "--n_train", "200")
    assert "probes: 1-NN" in plan and "linear" not in plan, plan
    assert "generating" not in plan and "real statistics" not in plan, plan
    assert finished("probes: 1-NN (200 training vs 10,000 test images) and reconstruction", err), err
    assert "probes: linear" not in err, err
    assert not [key for key in results if "linear" in key], results


def test_the_default_metrics_leave_out_the_probes_of_a_model_without_an_encoder(tmp_path, capsys, monkeypatch,
                                                                                data_dir):
    """Before, the defaults included the probes whatever the model: a GAN was scored for minutes, then refused."""
    from gan_lightning import commands
    from gan_lightning.metrics import protocols
    from gan_lightning.models import GAN

    gan = GAN(data_shape=(1, 28, 28), latent_dim=4, width=16, seed=0).eval()
    monkeypatch.setattr(commands, "load_model", lambda *args, **kwargs: (gan, fashion(data_dir)))
    images = protocols.real_images
    monkeypatch.setattr(protocols, "real_images", lambda dm, reference, n=None: images(dm, reference, n or 100))
    plan, _, _, results = evaluate(tmp_path, capsys, "--protocol", "test10k", "--n_samples", "64")
    assert "fd_fashion_classifier, is_fashion_classifier, kid_fashion_classifier" in plan and "probes" not in plan
    assert "is_fashion_classifier" in results and not [key for key in results if key.startswith("probe")]
    assert "probes needs an encoder" in refused("evaluate", "--ckpt_path", str(tmp_path / "run.ckpt"), "--metrics",
                                                 "probes", "--out", str(tmp_path / "e.json"))


# --- toy checkpoints ---------------------------------------------------------------------------------------------

def logged(run: Path) -> dict[str, float]:
    """The last val/modes, val/high_quality and val/reverse_kl the run's ModeCoverage callback logged."""
    rows = [row for row in csv.DictReader(next(run.rglob("metrics.csv")).open()) if row.get("val/modes")]
    return {key: float(rows[-1][f"val/{key}"]) for key in ("modes", "high_quality", "reverse_kl")}


def test_a_toy_checkpoint_is_scored_by_pacgans_protocol_as_the_callback_logged_it_in_training(toy_run, tmp_path,
                                                                                             capsys):
    out = tmp_path / "toy.json"
    main(["evaluate", "--ckpt_path", str(toy_run / "checkpoints" / "last.ckpt"), "--out", str(out)])
    said = capsys.readouterr()
    plan = said.out.splitlines()[0]
    assert plan.startswith("evaluate: mode coverage and high-quality fraction of 2,500 samples (PacGAN's protocol: "
                           "high quality within 3 std of one of toy_ring's 8 modes)"), plan
    assert "generating" not in plan and "probes" not in plan, plan
    assert finished("mode coverage: 2,500 samples", said.err), said.err
    results = json.loads(out.read_text())
    for key, value in logged(toy_run).items():  # the training callback's figures for the same generator and seed
        assert results[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert results["protocol"]["name"] == "pacgan" and results["protocol"]["n_samples"] == 2500
    assert results["protocol"]["high_quality"] == "within 3 std (0.03) of the nearest mode" and results["n_modes"] == 8
    for row in ("modes ", "high_quality ", "protocol.name ", "protocol.high_quality "):
        assert any(line.startswith(row) for line in said.out.splitlines()), row


def test_toy_scores_equal_the_mode_coverage_callbacks_on_a_generator_that_covers_five_modes(toy_run, tmp_path,
                                                                                           capsys, monkeypatch):
    """A generator with known coverage: 5 of the ring's 8 modes, a fifth of its samples far from every mode."""
    from types import SimpleNamespace

    from gan_lightning import commands
    from gan_lightning.callbacks.toy import ModeCoverage
    from gan_lightning.data.toy import mixture_modes

    model, datamodule = commands.load_model(str(toy_run / "checkpoints" / "last.ckpt"))
    modes, std = mixture_modes("toy_ring")

    def sample(n=None, z=None, generator=None):
        points = modes[torch.randint(0, 5, (n,), generator=generator)] + std * torch.randn(n, 2, generator=generator)
        points[: n // 5, 1] += 3.0  # off the ring: two units or more from every mode
        return points

    model.sample = sample
    monkeypatch.setattr(commands, "load_model", lambda *args, **kwargs: (model, datamodule))
    out = tmp_path / "toy.json"
    main(["evaluate", "--ckpt_path", "toy.ckpt", "--seed", "3", "--n_samples", "1000", "--out", str(out)])
    results = json.loads(out.read_text())
    callback = ModeCoverage(n_samples=1000, seed=3, plot=False)
    callback.setup(SimpleNamespace(datamodule=datamodule), model, "fit")
    _, expected = callback.measure(model)
    assert {key: results[key] for key in expected} == expected
    assert results["modes"] == 5 and 0.75 < results["high_quality"] <= 0.8, results
    assert results["protocol"]["name"] == "pacgan[n_samples=1000]" and results["protocol"]["seed"] == 3


def test_an_image_metric_or_option_on_toy_data_is_refused_in_one_line(toy_run, tmp_path):
    ckpt = str(toy_run / "checkpoints" / "last.ckpt")
    out = str(tmp_path / "e.json")
    message = refused("evaluate", "--ckpt_path", ckpt, "--metrics", "fid", "modes", "--out", out)
    assert "--metrics fid: toy_ring holds 2-D points, not images" in message, message
    assert "mode coverage and high-quality fraction (--metrics modes" in message, message
    message = refused("evaluate", "--ckpt_path", ckpt, "--protocol", "train50k", "--out", out)
    assert "--protocol: toy_ring is scored by PacGAN's protocol" in message, message
    assert not Path(out).exists()


def test_mode_coverage_on_image_data_is_refused_in_one_line(tiny, tmp_path):
    message = refused("evaluate", "--ckpt_path", str(tmp_path / "run.ckpt"), "--metrics", "modes", "--out",
                      str(tmp_path / "e.json"))
    assert "--metrics modes: mode coverage scores the toy mixtures" in message and "'fashion_mnist'" in message
