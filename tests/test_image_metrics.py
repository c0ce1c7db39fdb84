"""FID / IS / KID: the maths against torch-fidelity, the cache, DDP, RNG isolation, weights checks."""
import math

import lightning as L
import pytest
import torch
from torch import nn

from gan_lightning.data import GANDataModule
from gan_lightning.data import to_uint8
from gan_lightning.metrics.image_scores import Dist, ImageScores, RealStatistics
from tests.helpers import tiny_trainer


class SmallExtractor(nn.Module):
    """A fixed random conv net: uint8 (B, 1, 28, 28) -> (16 features, 5 logits)."""

    num_features = 16

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 16), nn.Tanh())
        self.head = nn.Linear(16, 5)

    def forward(self, images):
        f = self.body(images.float() / 127.5 - 1)
        return f, self.head(f)


def stats_of(features: torch.Tensor) -> RealStatistics:
    f = features.double()
    return RealStatistics(f.sum(0), f.T @ f, len(f), features.float())


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    torch.manual_seed(0)
    f = torch.randn(2000, 8)
    same = stats_of(f).frechet_distance(stats_of(f))
    assert abs(same) < 1e-6
    d1, d2 = (stats_of(f).frechet_distance(stats_of(f + shift)) for shift in (0.5, 1.0))
    assert d1 == pytest.approx(8 * 0.25, rel=1e-3) and d2 == pytest.approx(8 * 1.0, rel=1e-3)  # |mean shift|^2


@pytest.mark.filterwarnings("ignore:std.*degrees of freedom:UserWarning")  # one IS split has no spread
def test_scores_equal_torch_fidelity_on_the_same_features():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    g = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (200, 1, 28, 28), generator=g, dtype=torch.uint8)
    fake = (real.float() * 0.7 + 20).to(torch.uint8).flip(0)  # KID's subsets of 200 are then the whole sets
    extractor = SmallExtractor()
    scores = ImageScores(extractor, "fashion_classifier", ["fid", "is", "kid"], kid_subsets=1, kid_subset_size=200,
                         is_splits=1)
    scores.load_real(lambda: real.split(64), {"dataset": "test"}, cache_dir=None)
    for batch in fake.split(64):
        scores.add_fake(batch)
    ours = scores.compute()

    with torch.no_grad():
        (f_real, _), (f_fake, logits_fake) = extractor(real), extractor(fake)
    theirs_fid = fid_statistics_to_metric(fid_features_to_statistics(f_real), fid_features_to_statistics(f_fake),
                                          verbose=False)["frechet_inception_distance"]
    theirs_kid = kid_features_to_metric(f_real, f_fake, kid_subsets=1, kid_subset_size=200, verbose=False)
    theirs_is = isc_features_to_metric(logits_fake, splits=1, shuffle=False)
    assert ours["fd_fashion_classifier"] == pytest.approx(theirs_fid, rel=1e-3)
    assert ours["kid_fashion_classifier"] == pytest.approx(theirs_kid["kernel_inception_distance_mean"], rel=1e-3)
    assert ours["is_fashion_classifier"] == pytest.approx(theirs_is["inception_score_mean"], rel=1e-3)
    assert ours["fd_fashion_classifier"] > 1e-3  # the fake set really differs


def test_real_statistics_are_cached_and_reused_and_a_new_preprocessing_misses(tmp_path):
    real = torch.randint(0, 256, (100, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    calls = []

    def shard():
        calls.append(1)
        return real.split(50)

    key = {"dataset": "fashion_mnist", "split": "train", "image_size": 28}
    first = ImageScores(SmallExtractor(), "fashion_classifier", ["fid"])
    a = first.load_real(shard, key, tmp_path)
    second = ImageScores(SmallExtractor(), "fashion_classifier", ["fid"])
    b = second.load_real(shard, key, tmp_path)
    assert (first.cache_hit, second.cache_hit, len(calls)) == (False, True, 1)
    assert torch.equal(a.features_cov_sum, b.features_cov_sum) and a.n == b.n == 100
    third = ImageScores(SmallExtractor(), "fashion_classifier", ["fid"])
    third.load_real(shard, {**key, "image_size": 32}, tmp_path)
    assert third.cache_hit is False and len(calls) == 2
    assert len(list(tmp_path.glob("real_*.pt"))) == 2 and not list(tmp_path.glob(".*tmp"))  # renamed into place


def test_to_uint8_rounds_the_model_range():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.9999, 1.0, 1.5])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255, 255]


# --- the callback in training -----------------------------------------------------------------

def tiny_fashion_bigan(**kwargs):
    from gan_lightning.models import BiGAN

    return BiGAN(**{"data_shape": (1, 28, 28), "latent_dim": 4, "width": 16, "seed": 0, **kwargs})


def image_metrics(tmp_path, **kwargs):
    from gan_lightning.callbacks import ImageMetrics

    kwargs = {"feature_extractor": "fashion_classifier", "n_samples": 60, "n_real": 120, "batch_size": 32,
              "kid_subset_size": 50, "kid_subsets": 5, "is_splits": 2, "cache_dir": str(tmp_path / "stats"), **kwargs}
    return ImageMetrics(**kwargs)


def fashion(data_dir, **kwargs):
    return GANDataModule("fashion_mnist", data_dir=str(data_dir), batch_size=32, **kwargs)


@pytest.mark.slow
def test_measuring_does_not_change_the_training_trajectory_and_stays_out_of_checkpoints(tmp_path, data_dir):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(callbacks, root):
        L.seed_everything(0)
        model = tiny_fashion_bigan()
        trainer = tiny_trainer(root, max_epochs=2, limit_val_batches=1, num_sanity_val_steps=0, callbacks=callbacks,
                               enable_checkpointing=True)
        trainer.fit(model, fashion(data_dir))
        return model, trainer

    plain, _ = fit([], tmp_path / "a")
    metric = image_metrics(tmp_path)
    measured, trainer = fit([metric, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)], tmp_path / "b")
    assert set(metric.last) >= {"fd_fashion_classifier", "is_fashion_classifier", "kid_fashion_classifier",
                                "fd_fashion_classifier_floor", "is_fashion_classifier_real"}
    assert math.isfinite(trainer.callback_metrics["val/fd_fashion_classifier"].item())
    for (name, p), q in zip(plain.state_dict().items(), measured.state_dict().values()):
        assert torch.equal(p, q), f"{name} changed because the run was measured"
    assert measured.training  # training mode restored
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert all(k.split(".")[0] in ("generator", "encoder", "discriminator", "ema") for k in ckpt["state_dict"])
    assert sum(v.numel() for v in ckpt["state_dict"].values()) < 200_000  # no classifier / Inception inside


@pytest.mark.slow
@pytest.mark.ddp
def test_two_ranks_give_the_value_of_one_process_over_the_same_samples(tmp_path, data_dir):
    from lightning.pytorch.strategies import DDPStrategy

    from gan_lightning.callbacks.image_metrics import real_key, real_shard
    from gan_lightning.metrics.features import build_extractor

    class Record(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            torch.save({"scores": metric.last, "state": pl_module.state_dict()}, tmp_path / f"r{trainer.global_rank}.pt")

    metric = image_metrics(tmp_path, report_floor=False)
    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo", find_unused_parameters=True)
    trainer = tiny_trainer(tmp_path, devices=2, strategy=strategy, limit_val_batches=1, num_sanity_val_steps=0,
                           callbacks=[metric, Record()])
    trainer.fit(tiny_fashion_bigan(), fashion(data_dir))
    r0, r1 = torch.load(tmp_path / "r0.pt"), torch.load(tmp_path / "r1.pt")
    assert r0["scores"] == r1["scores"] and r0["scores"]

    model = tiny_fashion_bigan()
    model.load_state_dict(r0["state"])
    dm = fashion(data_dir)
    dm.setup("fit")
    single = ImageScores(build_extractor("fashion_classifier"), "fashion_classifier", ["fid", "is", "kid"],
                         kid_subsets=5, kid_subset_size=50, is_splits=2, dist=Dist())
    single.load_real(lambda: real_shard(dm, "train", 0, 1, 32, 120), real_key(dm, "train", 120), None)  # no cache
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as Lightning sets each CPU rank: matrix products then sum in the same order
    try:
        single.add_generator(lambda n, noise: model.sample(n, generator=noise), 60, 32, seed=0)
        ours = single.compute()
    finally:
        torch.set_num_threads(threads)
    for key in ("fd_fashion_classifier", "is_fashion_classifier", "kid_fashion_classifier"):
        assert ours[key] == pytest.approx(r0["scores"][key], rel=1e-6), key


# --- weights ----------------------------------------------------------------------------------

def test_missing_inception_weights_stop_the_run_before_training(tmp_path, monkeypatch, data_dir):
    from gan_lightning.metrics.features import WeightsNotFoundError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = tiny_fashion_bigan()
    trainer = tiny_trainer(tmp_path, callbacks=[image_metrics(tmp_path, feature_extractor="inception",
                                                              download_weights=False)])
    with pytest.raises(WeightsNotFoundError, match=r"weights-inception-2015-12-05-6726825d\.pth.*inception_weights"):
        trainer.fit(model, fashion(data_dir))
    assert model.iteration == 0 and trainer.global_step == 0


def test_an_inception_weights_file_with_the_wrong_checksum_is_refused(tmp_path):
    from gan_lightning.metrics.features import resolve_inception_weights

    fake = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    fake.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="refusing"):
        resolve_inception_weights(str(fake))
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_inception_weights(str(tmp_path / "nowhere.pth"))


def test_the_shipped_classifier_is_checked_and_refuses_other_files(tmp_path):
    from gan_lightning.metrics.classifier import WEIGHTS_SHA256, load_classifier, sha256

    net = load_classifier()
    features, logits = net(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    assert features.shape == (2, 128) and logits.shape == (2, 10)
    other = tmp_path / "w.pt"
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in net.state_dict().items()}, other)
    assert sha256(other) != WEIGHTS_SHA256
    with pytest.raises(ValueError, match="SHA-256"):
        load_classifier(other)


@pytest.mark.slow
def test_the_shipped_classifier_reaches_92_percent_on_the_fashion_mnist_test_set(data_dir):
    from gan_lightning.data.sources import load_tensors
    from gan_lightning.metrics.classifier import accuracy, load_classifier

    x, y = load_tensors("fashion_mnist", data_dir, "test", download=False)
    assert accuracy(load_classifier(), x, y) >= 0.92
