"""FID / IS / KID: the maths against torch-fidelity, the cache, DDP, RNG isolation, weights checks."""
import math

import lightning as L
import pytest
import torch
from torch import nn

from gan_lightning.data import GANDataModule, to_uint8
from gan_lightning.metrics.image_scores import Dist, ImageScores, RealStatistics, chunk
from tests.helpers import RecordWarnings, measure_on_ranks, tiny_trainer, unactionable


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


def test_kid_draws_its_subsets_as_torch_fidelity_and_equals_it():
    """100 subsets of 50 from 300 real and 200 generated images: the draws (RandomState(2020), generated rows first)
    decide the value, so only the same draws give torch-fidelity's KID."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    g = torch.Generator().manual_seed(2)
    real = torch.randint(0, 256, (300, 1, 28, 28), generator=g, dtype=torch.uint8)
    fake = torch.randint(30, 220, (200, 1, 28, 28), generator=g, dtype=torch.uint8)
    extractor = SmallExtractor()
    scores = ImageScores(extractor, "fashion_classifier", ["kid"], kid_subsets=100, kid_subset_size=50)
    scores.load_real(lambda: real.split(64), {"dataset": "test"}, cache_dir=None)
    for batch in fake.split(64):
        scores.add_fake(batch)
    ours = scores.compute()
    with torch.no_grad():
        f_real, f_fake = extractor(real)[0].double(), extractor(fake)[0].double()
    theirs = kid_features_to_metric(f_fake, f_real, kid_subsets=100, kid_subset_size=50, verbose=False)
    assert ours["kid_fashion_classifier"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-6)
    assert ours["kid_fashion_classifier_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-6)
    swapped = kid_features_to_metric(f_real, f_fake, kid_subsets=100, kid_subset_size=50, verbose=False)
    assert abs(swapped["kernel_inception_distance_mean"] - ours["kid_fashion_classifier"]) > 1e-6 * abs(
        ours["kid_fashion_classifier"])  # other draws, another value: the test can tell


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


class PooledExtractor(nn.Module):
    """A fixed random net for images of any size and channels: uint8 (B, C, H, W) -> (16 features, 5 logits)."""

    num_features = 16

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(16, 16), nn.Tanh())
        self.head = nn.Linear(16, 5)

    def forward(self, images):
        grey = images.float().mean(1, keepdim=True) / 127.5 - 1
        f = self.body(nn.functional.adaptive_avg_pool2d(grey, 4).flatten(1))
        return f, self.head(f)


def image_folder(root, n: int = 20):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for i in range(n):
        (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        pixels = torch.randint(0, 256, (30, 36, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(root / "ab"[i % 2] / f"{i:03d}.png")
    return root


def test_changing_any_input_of_the_real_set_through_the_data_module_misses_the_cache(tmp_path):
    """The key of real_images as the callback and evaluate build it, from the data module: each input of the real
    images (seed, val_fraction, image_size, resize, split, n_real, the folder's files) gives another cache file."""
    import os

    from torchvision.transforms import v2

    from gan_lightning.metrics.protocols import real_images

    folder, cache = image_folder(tmp_path / "images"), tmp_path / "stats"

    def hit(split="train", n_real=None, transform=None, **data) -> bool:
        dm = GANDataModule("image_folder", **{"data_dir": str(folder), "batch_size": 8, "image_size": 28,
                                               "val_fraction": 0.2, "seed": 0, **data})
        dm.setup("fit")
        if transform is not None:
            dm.splits[split].dataset.transform = transform
        scores = ImageScores(PooledExtractor(), "fashion_classifier", ["fid"])
        images = real_images(dm, split, n_real)
        scores.real_statistics(lambda: images.shard(0, 1, 8), images.key, cache)
        return scores.cache_hit

    assert (hit(), hit()) == (False, True)  # the same real set is read back
    changes = {"seed": dict(seed=1), "val_fraction": dict(val_fraction=0.3), "image_size": dict(image_size=32),
               "split": dict(split="val"), "n_real": dict(n_real=6),
               "resize mode": dict(transform=v2.Compose([v2.Resize(28, interpolation=v2.InterpolationMode.NEAREST),
                                                         v2.CenterCrop(28), v2.PILToTensor()]))}
    missed = {name: not hit(**change) for name, change in changes.items()}
    assert hit()
    image_folder(tmp_path / "images", 21)  # one file added
    missed["a file added"] = not hit()
    assert hit()
    first = folder / "a" / "000.png"
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))  # a file rewritten
    missed["a file changed"] = not hit()
    assert all(missed.values()), f"a changed input read stale statistics (False): {missed}"


def test_the_extractors_resize_and_the_library_versions_are_in_the_cache_key(tmp_path, monkeypatch):
    import importlib.metadata

    real = torch.randint(0, 256, (40, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)

    def hit(resize=None) -> bool:
        extractor = SmallExtractor()
        extractor.resize = resize
        scores = ImageScores(extractor, "fashion_classifier", ["fid"])
        scores.real_statistics(lambda: real.split(20), {"dataset": "test"}, tmp_path)
        return scores.cache_hit

    assert (hit(), hit()) == (False, True)
    assert not hit(resize="bilinear, antialias=True"), "another resize in the extractor read stale statistics"
    version = importlib.metadata.version
    for library in ("torchmetrics", "torch-fidelity"):
        monkeypatch.setattr(importlib.metadata, "version",
                            lambda name, library=library: "0.0.1" if name == library else version(name))
        assert not hit(), f"another {library} version read stale statistics"


@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_the_cache_file_has_the_umasks_permissions_so_a_shared_folder_serves_every_user(tmp_path, umask):
    import os
    import stat

    real = torch.randint(0, 256, (40, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    old = os.umask(umask)
    try:
        ImageScores(SmallExtractor(), "fashion_classifier", ["fid"]).real_statistics(
            lambda: real.split(20), {"dataset": "test"}, tmp_path / "stats")
    finally:
        os.umask(old)
    (file,) = (tmp_path / "stats").glob("real_*.pt")
    assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask


def test_a_cache_folder_that_cannot_be_written_stops_the_run_at_start_up_naming_it(tmp_path, data_dir):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")  # a folder below a file cannot be made, even by root
    model = tiny_fashion_bigan()
    trainer = tiny_trainer(tmp_path, limit_val_batches=1,
                           callbacks=[image_metrics(tmp_path, cache_dir=str(blocker / "stats"))])
    from gan_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=r"cache folder .*not_a_folder/stats.*cache_dir"):
        trainer.fit(model, fashion(data_dir))
    assert model.iteration == 0 and trainer.global_step == 0


def test_a_read_only_cache_folder_holding_the_statistics_is_accepted(tmp_path, monkeypatch):
    import tempfile

    from gan_lightning.errors import ConfigError
    from gan_lightning.metrics.image_scores import check_cache_dir

    present = tmp_path / "real_x.pt"
    present.write_bytes(b"")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    check_cache_dir(tmp_path, [present])  # everything needed is there: nothing will be written
    with pytest.raises(ConfigError, match=rf"{tmp_path}.*Permission denied.*cache_dir"):
        check_cache_dir(tmp_path, [present, tmp_path / "real_y.pt"])


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
    for (name, p), q in zip(plain.state_dict().items(), measured.state_dict().values(), strict=True):
        assert torch.equal(p, q), f"{name} changed because the run was measured"
    assert measured.training  # training mode restored
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert all(k.split(".")[0] in ("generator", "encoder", "discriminator", "ema") for k in ckpt["state_dict"])
    assert sum(v.numel() for v in ckpt["state_dict"].values()) < 200_000  # no classifier / Inception inside


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("n_samples", [60, 32], ids=["a batch per rank", "one batch for two ranks"])
def test_two_ranks_give_the_value_of_one_process_over_the_same_samples(tmp_path, data_dir, n_samples):
    from gan_lightning.distributed import PlayerDDPStrategy
    from gan_lightning.metrics.features import build_extractor
    from gan_lightning.metrics.protocols import real_images

    class Record(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            torch.save({"scores": metric.last, "state": pl_module.state_dict()},
                       tmp_path / f"r{trainer.global_rank}.pt")

    metric = image_metrics(tmp_path, report_floor=False, n_samples=n_samples)
    strategy = PlayerDDPStrategy(start_method="fork", process_group_backend="gloo")
    trainer = tiny_trainer(tmp_path, devices=2, strategy=strategy, limit_val_batches=1, num_sanity_val_steps=0,
                           callbacks=[metric, Record(), RecordWarnings(tmp_path)])
    trainer.fit(tiny_fashion_bigan(), fashion(data_dir))
    r0, r1 = torch.load(tmp_path / "r0.pt"), torch.load(tmp_path / "r1.pt")
    assert r0["scores"] == r1["scores"] and r0["scores"]
    assert unactionable(tmp_path) == []   # the scores, counters and held-out losses say they need no reduction

    model = tiny_fashion_bigan()
    model.load_state_dict(r0["state"])
    dm = fashion(data_dir)
    dm.setup("fit")
    single = ImageScores(build_extractor("fashion_classifier"), "fashion_classifier", ["fid", "is", "kid"],
                         kid_subsets=5, kid_subset_size=50, is_splits=2, dist=Dist())
    reference = real_images(dm, "train", 120)
    single.load_real(lambda: reference.shard(0, 1, 32), reference.key, None)  # no cache
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as Lightning sets each CPU rank: matrix products then sum in the same order
    try:
        single.add_generator(lambda n, noise: model.sample(n, generator=noise), n_samples, 32, seed=0)
        ours = single.compute()
    finally:
        torch.set_num_threads(threads)
    for key in ("fd_fashion_classifier", "is_fashion_classifier", "kid_fashion_classifier"):
        assert ours[key] == pytest.approx(r0["scores"][key], rel=1e-6), key


def _scores_over(dist: Dist, n_real: int, n_fake: int, batch_size: int, nan_batch: int = -1) -> dict:
    """FID / IS / KID of fixed fake images against the first ``n_real`` of fixed real ones, this rank's share;
    batch ``nan_batch`` of the fakes is NaN (a diverged generator) and ``nonfinite`` counts such samples."""
    real = torch.randint(0, 256, (n_real, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    scores = ImageScores(SmallExtractor(), "fashion_classifier", ["fid", "is", "kid"], kid_subsets=3,
                         kid_subset_size=50, is_splits=2, dist=dist)
    scores.load_real(lambda: chunk(real.split(batch_size), dist.rank, dist.world_size), {"dataset": "test"}, None)

    def generate(n, noise):
        x = torch.rand(n, 1, 28, 28, generator=noise) * 2 - 1
        return x.fill_(float("nan")) if noise.initial_seed() == nan_batch else x  # batch b's seed is b (seed 0)

    scores.add_generator(generate, n_fake, batch_size)
    return {**scores.compute(), "nonfinite": getattr(scores, "nonfinite", 0)}


# (n_real, n_fake, batch_size): fewer fake batches than ranks, fewer real batches than ranks, both, neither, one
# image per batch, and fewer real images than ranks (KID's real features: an empty share)
IDLE_RANK_CASES = [(64, 32, 32), (30, 64, 32), (40, 20, 40), (70, 45, 10), (3, 2, 1), (2, 2, 4),
                   (40, 60, 20, 2)]  # and the last rank's batch NaN: every rank's scores are NaN


@pytest.mark.ddp
@pytest.mark.filterwarnings("ignore:std.*degrees of freedom:UserWarning")
@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_without_a_batch_join_and_give_the_value_of_one_process(tmp_path, world_size):
    """A rank that draws no generated (or no real) batch still joins compute(): every combination of n_samples,
    batch size and world size gives, on every rank, the value one process gives over the same samples."""
    per_rank = measure_on_ranks(tmp_path, world_size, _scores_over, IDLE_RANK_CASES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = [_scores_over(Dist(), *case) for case in IDLE_RANK_CASES]
    finally:
        torch.set_num_threads(threads)
    for case, ours in zip(IDLE_RANK_CASES[:-1], single[:-1], strict=True):
        assert all(math.isfinite(v) for k, v in ours.items() if not k.endswith("_std")), (case, ours)
        assert ours["nonfinite"] == 0
    assert all(math.isnan(v) for k, v in single[-1].items() if k != "nonfinite") and single[-1]["nonfinite"] == 20
    for rank, results in enumerate(per_rank):
        for case, theirs, ours in zip(IDLE_RANK_CASES, results, single, strict=True):
            assert theirs.keys() == ours.keys()
            for key in ours:
                assert theirs[key] == pytest.approx(ours[key], rel=1e-6, abs=1e-9, nan_ok=True), (rank, case, key)


def nan_samples(n=None, z=None, generator=None):
    """A diverged generator's samples."""
    return torch.full((n if z is None else len(z), 1, 28, 28), float("nan"))


def test_a_single_nan_sample_makes_every_score_nan_instead_of_scoring_a_black_image():
    real = torch.randint(0, 256, (100, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    scores = ImageScores(SmallExtractor(), "fashion_classifier", ["fid", "is", "kid"], kid_subsets=2,
                         kid_subset_size=20, is_splits=2)
    scores.load_real(lambda: real.split(50), {"dataset": "test"}, None)

    def generate(n, noise):
        x = torch.rand(n, 1, 28, 28, generator=noise) * 2 - 1
        x[0, 0, 3, 3] = float("nan") if noise.initial_seed() == 1 else x[0, 0, 3, 3]  # one pixel of one sample
        return x

    scores.add_generator(generate, 60, 20)
    diverged = scores.compute()
    assert set(diverged) == {"fd_fashion_classifier", "kid_fashion_classifier", "kid_fashion_classifier_std",
                             "is_fashion_classifier", "is_fashion_classifier_std"}
    assert all(math.isnan(v) for v in diverged.values()), diverged
    assert scores.nonfinite == 1
    scores.add_generator(lambda n, noise: torch.rand(n, 1, 28, 28, generator=noise) * 2 - 1, 60, 20)
    healthy = scores.compute()  # the count was reset with the metrics
    assert scores.nonfinite == 0 and all(math.isfinite(healthy[k]) for k in ("fd_fashion_classifier",
                                                                              "is_fashion_classifier"))


@pytest.mark.slow
def test_diverged_samples_are_logged_as_nan_with_a_warning_naming_the_model_and_iteration(tmp_path, data_dir):
    """In training the run goes on, with its checkpoints: the score is NaN (never a best), not a black image's."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    model = tiny_fashion_bigan()
    model.sample = nan_samples
    metric = image_metrics(tmp_path, report_floor=False)
    trainer = tiny_trainer(tmp_path, limit_val_batches=1, num_sanity_val_steps=0, enable_checkpointing=True,
                           callbacks=[metric, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True,
                                                              monitor="val/fd_fashion_classifier")])
    with pytest.warns(UserWarning, match=r"60 of the 60 samples of BiGAN at iteration 3 hold NaN") as caught:
        trainer.fit(model, fashion(data_dir))
    assert model.iteration == 3 and trainer.state.finished
    assert "val/fd_fashion_classifier" in str([str(w.message) for w in caught])
    for key in ("fd_fashion_classifier", "kid_fashion_classifier", "is_fashion_classifier"):
        assert math.isnan(trainer.callback_metrics[f"val/{key}"].item()), key
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


@pytest.mark.slow
def test_evaluate_refuses_diverged_samples_in_one_line_naming_the_model_and_iteration(tmp_path, data_dir,
                                                                                      monkeypatch):
    from gan_lightning import commands
    from gan_lightning.cli import main
    from gan_lightning.metrics import protocols

    def diverged_model(path, device="cpu", data_dir=None, *args, **kwargs):
        model = tiny_fashion_bigan().eval()
        model.iteration = 1234
        model.sample = nan_samples
        return model, fashion(data_dir_for_test)

    data_dir_for_test = data_dir
    monkeypatch.setattr(commands, "load_model", diverged_model)
    images = protocols.real_images  # the floor's whole test split (10,000 images) takes a minute on 2 CPUs
    monkeypatch.setattr(protocols, "real_images", lambda dm, reference, n=None: images(dm, reference, n or 64))
    out = tmp_path / "eval.json"
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--ckpt_path", str(tmp_path / "run.ckpt"), "--metrics", "fid", "kid", "--n_samples", "64",
              "--batch_size", "32", "--n_real", "64", "--cache_dir", str(tmp_path / "stats"), "--device", "cpu",
              "--feature_extractor", "fashion_classifier", "--out", str(out)])
    message = str(exit_.value.code)
    assert message.startswith("gan_lightning: error:") and "\n" not in message, message
    assert "64 of the 64 samples of BiGAN at iteration 1234" in message and "NaN" in message, message
    assert not out.exists()


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
    from gan_lightning.metrics.features import build_extractor, resolve_inception_weights

    fake = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    fake.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match=r"SHA-256 .* not the published 6726825d.*refusing"):
        build_extractor("inception", str(fake), download=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_inception_weights(str(tmp_path / "nowhere.pth"))


class RunsCode:
    """Unpickled by a full unpickler, this creates the file ``marker``: the shape of any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_crafted_inception_weights_file_is_refused_before_anything_in_it_runs(tmp_path, monkeypatch):
    """The SHA-256 prefix is 8 hex digits: about 2**32 tries craft a file that matches it. Such a file (simulated
    by accepting its own prefix) must still be refused, naming it, before torch-fidelity's unpickler runs it."""
    import hashlib
    import re

    from gan_lightning.metrics import features

    probe = tmp_path / "probe_ran"
    torch.save({"payload": RunsCode(probe)}, tmp_path / "probe.pth")
    torch.load(tmp_path / "probe.pth", weights_only=False)  # what torch-fidelity does with the weights file
    assert probe.exists(), "the crafted payload does not run code: the test would prove nothing"

    crafted, ran = tmp_path / "weights-inception-2015-12-05-6726825d.pth", tmp_path / "crafted_ran"
    torch.save({"fc.weight": torch.zeros(1008, 2048), "payload": RunsCode(ran)}, crafted)
    monkeypatch.setattr(features, "INCEPTION_SHA256_PREFIX", hashlib.sha256(crafted.read_bytes()).hexdigest()[:8])
    try:
        features.build_extractor("inception", str(crafted), download=False)
        error = None
    except Exception as err:
        error = err
    assert not ran.exists(), f"the crafted weights file ran its code (then: {error!r})"
    assert isinstance(error, ValueError), repr(error)
    assert re.search(rf"{re.escape(str(crafted))} holds more than tensors.*weights-only.*refusing", str(error)), error


@pytest.mark.slow
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_genuine_inception_weights_pass_the_weights_only_check_and_load(tmp_path, monkeypatch, zip_format):
    """A state dict of Inception's tensors (random values here: the real file cannot be downloaded) in either of
    torch's file formats passes the weights-only loader, and the extractor holds exactly those tensors."""
    import hashlib
    import io

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from gan_lightning.metrics import features

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    monkeypatch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    state = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                        feature_extractor_weights_path=empty).state_dict()
    monkeypatch.undo()
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(state, weights, _use_new_zipfile_serialization=zip_format)
    monkeypatch.setattr(features, "INCEPTION_SHA256_PREFIX", hashlib.sha256(weights.read_bytes()).hexdigest()[:8])
    extractor = features.build_extractor("inception", str(weights), download=False)
    for key, value in state.items():
        assert torch.equal(extractor.net.state_dict()[key], value), key
    f, logits = extractor(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    assert f.shape == (1, 2048) and logits.shape == (1, 1008)


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
