"""Encoder probes, interpolation pictures, and the evaluate / sample commands on a real checkpoint."""
import copy
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_lightning.metrics.probes import (
    linear_probe_accuracy,
    one_nn_accuracy,
    paired_comparison,
    penultimate_features,
    probe_scores,
)
from tests.helpers import tiny_ali

REPO = Path(__file__).resolve().parents[1]


def clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    return centres[labels] + torch.randn(n, 2, generator=g), labels


def test_one_nn_and_linear_probes_find_separable_classes_and_not_shuffled_labels():
    (x, y), (xt, yt) = clusters(300, 0), clusters(200, 1)
    assert one_nn_accuracy(x, y, xt, yt) == 1.0
    assert linear_probe_accuracy(x, y, xt, yt) == 1.0
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(2))]
    assert one_nn_accuracy(x, shuffled, xt, yt) < 0.6  # chance is 1/3


def test_one_nn_takes_the_label_of_the_nearest_training_point():
    train, labels = torch.tensor([[0.0], [1.0], [5.0]]), torch.tensor([0, 1, 2])
    assert one_nn_accuracy(train, labels, torch.tensor([[0.4], [0.6], [4.0]]), torch.tensor([0, 1, 2])) == 1.0
    assert one_nn_accuracy(train, labels, torch.tensor([[0.6]]), torch.tensor([0])) == 0.0


def test_probes_of_the_identity_encoder_equal_the_pixel_baseline_and_a_perfect_autoencoder_has_zero_mse():
    (x, y), (xt, yt) = clusters(200, 0), clusters(100, 1)
    scores = probe_scores(lambda v: v, lambda v, labels: v, (x, y), (xt, yt), torch.device("cpu"))
    assert scores["probe_1nn"] == scores["probe_1nn_pixels"] and scores["probe_linear"] == scores["probe_linear_pixels"]
    assert scores["reconstruction_mse"] == 0.0
    noisy = probe_scores(lambda v: v, lambda v, labels: v + 0.5, (x, y), (xt, yt), torch.device("cpu"), linear=False)
    assert noisy["reconstruction_mse"] == pytest.approx(0.25)


def test_paired_comparison_counts_the_discordant_images_and_gives_mcnemars_exact_p_value():
    a = torch.tensor([True] * 60 + [False] * 10 + [True] * 30)   # 60 only A right, 10 only B right, 30 both
    b = torch.tensor([False] * 60 + [True] * 10 + [True] * 30)
    result = paired_comparison(a, b)
    assert (result["a_only"], result["b_only"]) == (60, 10) and result["difference"] == pytest.approx(0.5)
    # Two-sided binomial tail of 10 or fewer (or 60 or more) heads in 70 fair tosses, summed exactly.
    from math import comb
    tail = 2 * sum(comb(70, k) for k in range(11)) / 2 ** 70
    assert result["p_value"] == pytest.approx(tail, rel=1e-9)
    # Concordant images carry no evidence: the same 50/50 split of discordant pairs among many ties is p = 1.
    balanced = paired_comparison(torch.tensor([True, False] * 5 + [True] * 90),
                                 torch.tensor([False, True] * 5 + [True] * 90))
    assert balanced["p_value"] == pytest.approx(1.0) and balanced["difference"] == 0.0
    assert paired_comparison(torch.ones(5, dtype=torch.bool), torch.ones(5, dtype=torch.bool))["p_value"] == 1.0
    with pytest.raises(ValueError, match="same test points"):
        paired_comparison(torch.ones(5, dtype=torch.bool), torch.ones(4, dtype=torch.bool))


def test_probe_scores_pair_each_feature_sets_one_nn_with_the_pixels_on_the_same_test_images():
    (x, y), (xt, yt) = clusters(300, 0), clusters(400, 1)
    # Identity features agree with pixels on every image: no discordant pair, p = 1.
    same = probe_scores(lambda v: v, lambda v, labels: v, (x, y), (xt, yt), torch.device("cpu"), linear=False)
    assert same["probe_1nn_vs_pixels_discordant"] == 0 and same["probe_1nn_vs_pixels_p"] == 1.0
    # The classes differ along the first coordinate; 50 more are loud noise. Features that keep the first
    # coordinate alone beat the pixels by a real, significant margin.
    def noisy_line(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, 3, (n,), generator=g)
        features = [10.0 * labels[:, None] + torch.randn(n, 1, generator=g), 5 * torch.randn(n, 50, generator=g)]
        return torch.cat(features, 1), labels

    first = probe_scores(lambda v: v[:, :1], lambda v, labels: v, noisy_line(300, 0), noisy_line(400, 1),
                         torch.device("cpu"), linear=False)
    assert first["probe_1nn"] > first["probe_1nn_pixels"] + 0.1
    assert first["probe_1nn_vs_pixels_p"] < 1e-6 and first["probe_1nn_vs_pixels_discordant"] > 40
    # Without the pixel baseline there is nothing to pair with.
    alone = probe_scores(lambda v: v, lambda v, labels: v, (x, y), (xt, yt), torch.device("cpu"), linear=False,
                         pixels=False)
    assert not any("_vs_pixels_" in k for k in alone)
    unpaired = probe_scores(lambda v: v, lambda v, labels: v, (x, y), (xt, yt), torch.device("cpu"), linear=False,
                            paired=False)
    assert "probe_1nn_pixels" in unpaired and not any("_vs_pixels_" in k for k in unpaired)


def test_interpolations_start_and_end_at_the_real_images_and_pass_through_their_reconstructions():
    from gan_lightning.callbacks.images import interpolation_grid

    model = tiny_ali().eval()
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    grid = interpolation_grid(model, x, n_pairs=3, steps=5).unflatten(0, (3, 7))
    assert torch.equal(grid[:, 0], x[:3]) and torch.equal(grid[:, -1], x[3:])
    assert torch.allclose(grid[:, 1], model.reconstruct(x[:3]), atol=1e-6)
    assert torch.allclose(grid[:, 5], model.reconstruct(x[3:]), atol=1e-6)
    prior_walk = interpolation_grid(model, None, n_pairs=2, steps=4)
    assert prior_walk.shape == (8, 1, 8, 8)


# --- the commands ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fashion_checkpoint(tmp_path_factory, data_dir):
    """A BiGAN on Fashion-MNIST trained for a few iterations through the CLI; its last.ckpt."""
    root = tmp_path_factory.mktemp("run")
    run = cli("fit", "--config", str(REPO / "configs/bigan.yaml"),
              "--config", str(REPO / "configs/overlays/smoke.yaml"), "--model.init_args.width", "32",
              "--data.init_args.data_dir", str(data_dir), cwd=root)
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "runs" / "bigan" / "checkpoints" / "last.ckpt"


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "gan_lightning", *args], capture_output=True, text=True, timeout=600,
                          **kwargs)


@pytest.mark.slow
def test_sample_writes_an_npz_of_uint8_images_and_a_png(fashion_checkpoint, tmp_path):
    from gan_lightning.cli import main

    out = tmp_path / "s.npz"
    main(["sample", "--ckpt_path", str(fashion_checkpoint), "--n", "70", "--batch_size", "32", "--out", str(out)])
    x = np.load(out)["x"]
    assert x.shape == (70, 28, 28, 1) and x.dtype == np.uint8 and x.std() > 0
    assert out.with_suffix(".png").stat().st_size > 0
    main(["sample", "--ckpt_path", str(fashion_checkpoint), "--n", "70", "--out", str(tmp_path / "t.npz")])
    assert np.array_equal(np.load(tmp_path / "t.npz")["x"], x)  # same seed, same samples


def test_penultimate_features_are_the_input_of_the_encoders_last_linear_layer_in_eval_mode():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6),
                                  torch.nn.LeakyReLU(0.2), torch.nn.Linear(6, 2)).train()
    encoder[2].running_mean.fill_(3.0)  # eval mode uses these: a train-mode pass would not
    x = torch.randn(5, 1, 2, 2)
    features = penultimate_features(encoder)(x)
    with torch.no_grad():
        expected = encoder[3](copy.deepcopy(encoder[2]).eval()(encoder[1](x.flatten(1))))
    assert torch.allclose(features, expected) and features.shape == (5, 6)
    assert encoder[2].training and not encoder[2].running_mean.ne(3.0).any()  # mode restored, statistics kept
    assert penultimate_features(torch.nn.Conv2d(1, 1, 1)) is None
    # The probes score these features beside E(x)'s: the identity layer before a linear map keeps the clusters.
    (x, y), (xt, yt) = clusters(200, 0), clusters(100, 1)
    head = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(2, 1))
    scores = probe_scores(head, lambda v, labels: v, (x, y), (xt, yt), torch.device("cpu"),
                          penultimate=penultimate_features(head))
    assert scores["probe_1nn_penultimate"] == scores["probe_1nn_pixels"] == 1.0 and "probe_linear_penultimate" in scores


@pytest.mark.slow
def test_evaluate_scores_a_checkpoint_prints_a_table_and_writes_json(fashion_checkpoint, tmp_path, data_dir):
    out = tmp_path / "eval.json"
    run = cli("evaluate", "--ckpt_path", str(fashion_checkpoint), "--n_samples", "200", "--n_real", "500",
              "--n_train", "500", "--cache_dir", str(tmp_path / "stats"), "--out", str(out))
    assert run.returncode == 0, run.stderr
    scores = json.loads(out.read_text())
    for key in ("fd_fashion_classifier", "fd_fashion_classifier_floor", "is_fashion_classifier",
                "kid_fashion_classifier", "probe_1nn", "probe_1nn_pixels", "probe_linear", "reconstruction_mse",
                "probe_1nn_penultimate", "probe_linear_penultimate"):
        assert key in scores and np.isfinite(scores[key]), key
        assert key in run.stdout
    assert scores["feature_extractor"] == "fashion_classifier" and "fid_inception" not in scores
    assert scores["fd_fashion_classifier"] > scores["fd_fashion_classifier_floor"]  # a 4-batch model vs real data
    assert 0.5 < scores["probe_1nn_pixels"] < 1.0


@pytest.mark.slow
def test_load_model_reads_the_data_where_the_user_says_never_where_the_checkpoint_says(fashion_checkpoint,
                                                                                       tmp_path):
    """A checkpoint's data_dir and download are text from a file someone else wrote: the command's --data_dir,
    else the data module's default, decides where the data is read (and downloaded to)."""
    from gan_lightning.commands import load_model
    from gan_lightning.data import GANDataModule

    checkpoint = torch.load(fashion_checkpoint, weights_only=True)
    checkpoint["datamodule_hyper_parameters"].update(data_dir=str(tmp_path / "chosen_by_the_file"), download=True)
    forged = tmp_path / "forged.ckpt"
    torch.save(checkpoint, forged)
    default = inspect.signature(GANDataModule.__init__).parameters["data_dir"].default
    _, by_default = load_model(str(forged))
    assert by_default.hparams.data_dir == default and by_default.root == Path(default)
    _, moved = load_model(str(forged), data_dir=str(tmp_path / "moved"))
    assert moved.root == tmp_path / "moved" and moved.hparams.data_dir == str(tmp_path / "moved")
    assert moved.hparams.dataset == by_default.hparams.dataset == "fashion_mnist"
    assert by_default.hparams.download is False  # the file's download: True is not taken either


@pytest.mark.slow
def test_evaluate_no_linear_runs_the_1nn_probes_and_their_paired_test_only(fashion_checkpoint, tmp_path):
    out = tmp_path / "probes.json"
    run = cli("evaluate", "--ckpt_path", str(fashion_checkpoint), "--metrics", "probes", "--no_linear",
              "--n_train", "500", "--out", str(out))
    assert run.returncode == 0, run.stderr
    scores = json.loads(out.read_text())
    for key in ("probe_1nn", "probe_1nn_penultimate", "probe_1nn_pixels", "probe_1nn_vs_pixels_p",
                "probe_1nn_penultimate_vs_pixels_discordant", "reconstruction_mse"):
        assert key in scores and np.isfinite(scores[key]), key
    assert not [key for key in scores if "linear" in key], scores
    assert "fd_fashion_classifier" not in scores


@pytest.mark.slow
def test_probe_checkpoint_benchmark_pairs_each_training_set_size_with_pixels(fashion_checkpoint, tmp_path):
    from gan_lightning.callbacks.probes import model_probe_scores
    from gan_lightning.commands import load_model

    out = tmp_path / "probes"
    run = subprocess.run([sys.executable, "benchmarks/probe_checkpoint.py", "--ckpt_path", str(fashion_checkpoint),
                          "--n_train", "300", "600", "--n_test", "400", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert [row["n_train"] for row in report["probes"]] == [300, 600]
    assert report["header"]["model"] == "BiGAN" and report["header"]["iteration"] > 0
    model, dm = load_model(str(fashion_checkpoint))
    dm.prepare_data()
    dm.setup("fit")
    for row in report["probes"]:  # the same figures as the probes of the checkpoint's model, in process
        direct = model_probe_scores(model, dm, row["n_train"], 400, linear=False)
        for key in ("probe_1nn", "probe_1nn_penultimate", "probe_1nn_pixels", "probe_1nn_vs_pixels_p",
                    "probe_1nn_penultimate_vs_pixels_discordant"):
            assert row[key] == pytest.approx(direct[key]), key
    assert out.with_suffix(".md").read_text().count("McNemar") == 2 and "| 600 |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_evaluate_refuses_a_missing_or_truncated_checkpoint_in_one_line(fashion_checkpoint, tmp_path):
    run = cli("evaluate", "--ckpt_path", str(tmp_path / "nope.ckpt"))
    assert run.returncode != 0 and "not found" in run.stderr and "Traceback" not in run.stderr
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(fashion_checkpoint.read_bytes()[:5000])
    run = cli("sample", "--ckpt_path", str(broken), "--out", str(tmp_path / "x.npz"))
    assert run.returncode != 0 and "cannot be read" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_evaluate_scores_a_folder_of_images_and_real_images_beat_an_untrained_model(fashion_checkpoint, tmp_path,
                                                                                   data_dir):
    from PIL import Image

    from gan_lightning.data.sources import load_tensors

    x, _ = load_tensors("fashion_mnist", data_dir, "test", download=False)
    (tmp_path / "images" / "all").mkdir(parents=True)
    for i, image in enumerate(x[:300, 0].numpy()):
        Image.fromarray(image).save(tmp_path / "images" / "all" / f"{i}.png")
    common = ["--metrics", "fid", "--n_real", "2000", "--cache_dir", str(tmp_path / "stats")]
    real = cli("evaluate", "--ckpt_path", str(fashion_checkpoint), "--images", str(tmp_path / "images"), *common,
               "--out", str(tmp_path / "real.json"))
    assert real.returncode == 0, real.stderr
    model = cli("evaluate", "--ckpt_path", str(fashion_checkpoint), "--n_samples", "300", *common,
                "--out", str(tmp_path / "model.json"))
    assert model.returncode == 0, model.stderr
    real_scores, model_scores = (json.loads((tmp_path / f).read_text()) for f in ("real.json", "model.json"))
    assert real_scores["n_samples"] == 300 and real_scores["images"].endswith("images")
    assert real_scores["fd_fashion_classifier"] < model_scores["fd_fashion_classifier"]
