"""Evaluation protocols: named reference sets, the protocol in every output, IS and KID as torch-fidelity computes
them (each metric with its own random numbers), untrusted cache files, and grey images from RGB files."""
import json
import math

import numpy as np
import pytest
import torch

from gan_lightning.data import GANDataModule
from gan_lightning.errors import ConfigError
from gan_lightning.metrics.image_scores import ImageScores
from gan_lightning.metrics.protocols import PROTOCOLS, get_protocol, protocol_images, real_images
from tests.helpers import tiny_trainer
from tests.test_image_metrics import SmallExtractor, fashion, image_folder, image_metrics, tiny_fashion_bigan


def fake_and_real(n_fake: int = 300, n_real: int = 200):
    g = torch.Generator().manual_seed(3)
    real = torch.randint(0, 256, (n_real, 1, 28, 28), generator=g, dtype=torch.uint8)
    fake = torch.randint(0, 200, (n_fake, 1, 28, 28), generator=g, dtype=torch.uint8)
    return fake, real


def scored(metrics, fake, real, rng_seed: int = 0, **kwargs) -> dict:
    """The scores of ``fake`` against ``real``, computed with the global RNG seeded by ``rng_seed`` (what training
    or another metric left in it)."""
    scores = ImageScores(SmallExtractor(), "fashion_classifier", metrics, kid_subsets=20, kid_subset_size=50, **kwargs)
    scores.load_real(lambda: real.split(64), {"dataset": "test"}, None)
    for batch in fake.split(64):
        scores.add_fake(batch)
    torch.manual_seed(rng_seed)
    return scores.compute()


# --- IS and KID as torch-fidelity computes them --------------------------------------------------------------

def test_the_inception_score_and_its_spread_equal_torch_fidelitys_which_divides_by_n():
    """torch-fidelity shuffles with its own RandomState(2020), splits at i N / splits, and takes np.std (over n);
    torchmetrics' InceptionScore shuffles with the global RNG and takes the spread over n - 1."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    fake, real = fake_and_real()
    ours = scored(["is"], fake, real, is_splits=10)
    with torch.no_grad():
        _, logits = SmallExtractor()(fake)
    theirs = isc_features_to_metric(logits, splits=10)  # its defaults: shuffle with rng_seed 2020
    assert ours["is_fashion_classifier"] == pytest.approx(theirs["inception_score_mean"], rel=1e-9)
    assert ours["is_fashion_classifier_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-9)


def test_each_metric_draws_its_own_random_numbers_so_is_and_kid_do_not_depend_on_the_metric_list():
    fake, real = fake_and_real()
    alone_is, alone_kid = scored(["is"], fake, real, rng_seed=1), scored(["kid"], fake, real, rng_seed=2)
    both, all_three = scored(["fid", "is"], fake, real), scored(["fid", "is", "kid"], fake, real)
    assert both["is_fashion_classifier"] == all_three["is_fashion_classifier"] == alone_is["is_fashion_classifier"]
    assert all_three["kid_fashion_classifier"] == alone_kid["kid_fashion_classifier"]
    state = torch.get_rng_state()
    scored(["fid", "is", "kid"], fake, real)
    assert torch.equal(state, torch.get_rng_state())  # and the global RNG is left as it was


# --- protocols by name -----------------------------------------------------------------------------------

def test_protocols_are_chosen_by_name_and_a_changed_one_is_never_reported_under_the_published_name():
    assert {name: (p.n_samples, p.reference) for name, p in PROTOCOLS.items()} == {
        "train50k": (50_000, "train_full"), "test10k": (10_000, "test"), "trainsplit10k": (10_000, "train"),
        "val10k": (10_000, "val")}
    assert get_protocol("train50k") == PROTOCOLS["train50k"]
    assert get_protocol("train50k", n_samples=50_000).name == "train50k"  # the published count: still train50k
    changed = get_protocol("train50k", n_samples=200, n_real=500)
    assert (changed.name, changed.n_samples, changed.n_real) == ("train50k[n_samples=200,n_real=500]", 200, 500)
    with pytest.raises(ConfigError, match=r"unknown evaluation protocol 'fid50k': choose one of train50k, test10k"):
        get_protocol("fid50k")
    from gan_lightning.callbacks import ImageMetrics

    with pytest.raises(ConfigError, match="unknown evaluation protocol 'train'"):
        ImageMetrics(feature_extractor="fashion_classifier", protocol="train")


def test_train50k_scores_against_the_full_official_training_set_whatever_the_val_fraction(data_dir):
    from gan_lightning.data.sources import load_tensors

    official_train, _ = load_tensors("fashion_mnist", data_dir, "train", False)
    official_test, _ = load_tensors("fashion_mnist", data_dir, "test", False)
    keys = {}
    for val_fraction in (0.1, 0.3, 0.0):
        dm = fashion(data_dir, val_fraction=val_fraction)
        reference, floor = protocol_images(dm, get_protocol("train50k"))
        assert (reference.reference, reference.size, floor.reference, floor.size) == ("train_full", 60_000, "test",
                                                                                      10_000)
        assert torch.equal(torch.cat(list(reference.shard(0, 1, 10_000))), official_train)  # in file order
        assert torch.equal(torch.cat(list(floor.shard(0, 1, 10_000))), official_test)
        keys[val_fraction] = reference.key
        split, _ = protocol_images(dm, get_protocol("trainsplit10k"))  # today's reference: the training split
        assert split.size == 60_000 - int(60_000 * val_fraction)
    assert keys[0.1] == keys[0.3] == keys[0.0]  # one cache file serves every val_fraction
    assert real_images(fashion(data_dir, val_fraction=0.1), "train").key != real_images(
        fashion(data_dir, val_fraction=0.3), "train").key


def test_val_fraction_0_trains_on_every_training_image_and_a_protocol_needing_val_names_the_setting(data_dir):
    dm = fashion(data_dir, val_fraction=0.0)
    dm.setup("fit")
    assert (len(dm.splits["train"]), len(dm.splits["val"]), len(dm.splits["test"])) == (60_000, 0, 10_000)
    with pytest.raises(ConfigError, match=r"^protocol val10k .*data\.val_fraction=0 leaves it empty: set "
                                          r"data\.val_fraction > 0, or use protocol train50k"):
        protocol_images(dm, get_protocol("val10k"))
    assert protocol_images(fashion(data_dir, val_fraction=0.1), get_protocol("val10k"))[0].size == 6_000
    with pytest.raises(ValueError, match=r"data\.val_fraction must be in \[0, 1\), got -0\.1"):
        fashion(data_dir, val_fraction=-0.1)


def test_an_image_folder_has_no_official_test_set_and_its_full_training_set_is_every_file(tmp_path):
    folder = image_folder(tmp_path / "images", 20)
    dm = GANDataModule("image_folder", data_dir=str(folder), image_size=16, val_fraction=0.2)
    with pytest.raises(ConfigError, match=r"^protocol test10k scores against the official test set, and "
                                          r"'image_folder' has none .*use protocol train50k or trainsplit10k$"):
        protocol_images(dm, get_protocol("test10k"))
    reference, floor = protocol_images(dm, get_protocol("train50k"))
    assert reference.size == 20 and floor is None  # the carved test images are among the files: no honest floor
    reference, floor = protocol_images(dm, get_protocol("trainsplit10k"))
    assert (reference.size, floor.reference, floor.size) == (12, "test", 4)
    with pytest.raises(ValueError, match=r"data\.val_fraction=0: 'image_folder' carves .* no test images"):
        GANDataModule("image_folder", data_dir=str(folder), val_fraction=0.0)


# --- the protocol in every output ------------------------------------------------------------------------

class StubRun:
    """What WandbLogger touches of a W&B run, kept in memory."""

    id = "stub"

    def __init__(self):
        self.summary, self.config, self.logged = {}, {}, []
        self.config_update = lambda values, allow_val_change=False: self.config.update(values)

    def log(self, row):
        self.logged.append(row)

    def finish(self):
        pass


@pytest.mark.slow
def test_training_writes_the_protocol_into_the_csv_logs_hparams_and_the_wandb_summary(tmp_path, data_dir):
    import yaml
    from lightning.pytorch.loggers import CSVLogger

    from gan_lightning.metrics.classifier import load_classifier
    from gan_lightning.metrics.features import extractor_fingerprint
    from gan_lightning.tracking import WandbLogger

    csv = CSVLogger(tmp_path / "logs")
    wandb = WandbLogger(project="p", offline=True, mode="offline", save_dir=str(tmp_path))
    run = StubRun()
    run.config = type("Config", (dict,), {"update": lambda self, values, allow_val_change=False:
                                          dict.update(self, values)})()
    wandb._experiment = run
    metric = image_metrics(tmp_path, protocol="test10k", n_samples=60, n_real=120, report_floor=False)
    trainer = tiny_trainer(tmp_path, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[metric],
                           logger=[csv, wandb])
    trainer.fit(tiny_fashion_bigan(), fashion(data_dir))
    digest = extractor_fingerprint("fashion_classifier", load_classifier())
    expected = {"name": "test10k[n_samples=60,n_real=120]", "n_samples": 60, "reference": "test",
                "reference_size": 120, "floor_reference": None, "floor_size": None, "extractor": digest}
    logs = tmp_path / "logs" / "lightning_logs" / "version_0"
    written = yaml.load((logs / "hparams.yaml").read_text(), yaml.FullLoader)
    assert expected.items() <= written["eval_protocol"].items(), written
    assert {"extractor_resize", "data_resize", "dataset", "reference_is"} <= set(written["eval_protocol"])
    assert {f"eval_protocol/{k}": v for k, v in expected.items()}.items() <= run.summary.items(), run.summary
    assert "val/fd_fashion_classifier" in (logs / "metrics.csv").read_text()


@pytest.mark.slow
def test_a_run_with_val_fraction_0_warns_that_imagemetrics_measures_only_at_its_end(tmp_path, data_dir):
    callback = image_metrics(tmp_path, report_floor=False)
    trainer = tiny_trainer(tmp_path, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[callback])
    with pytest.warns(UserWarning, match=r"data\.val_fraction=0 leaves no validation batches.*once, at the end of "
                                         r"fit.*evaluate"):
        trainer.fit(tiny_fashion_bigan(), fashion(data_dir, val_fraction=0.0))
    assert trainer.state.finished and "val/fd_fashion_classifier" in trainer.callback_metrics
    assert callback.last_iteration == trainer.lightning_module.iteration   # the final weights' scores


def evaluate_tiny(tmp_path, monkeypatch, data_dir, datamodule, *argv):
    """``python -m gan_lightning evaluate`` on an untrained tiny BiGAN, each real set capped at 100 images."""
    from gan_lightning import commands
    from gan_lightning.cli import main
    from gan_lightning.metrics import protocols

    monkeypatch.setattr(commands, "load_model", lambda *args, **kwargs: (tiny_fashion_bigan().eval(), datamodule))
    images = protocols.real_images
    monkeypatch.setattr(protocols, "real_images", lambda dm, reference, n=None: images(dm, reference, n or 100))
    out = tmp_path / "eval.json"
    main(["evaluate", "--ckpt_path", str(tmp_path / "run.ckpt"), "--metrics", "fid", "is", "kid", "--batch_size", "32",
          "--cache_dir", str(tmp_path / "stats"), "--device", "cpu", "--out", str(out), *argv])
    return json.loads(out.read_text())


def test_evaluate_writes_the_protocol_into_its_table_and_json(tmp_path, monkeypatch, data_dir, capsys):
    from gan_lightning.metrics.classifier import load_classifier
    from gan_lightning.metrics.features import extractor_fingerprint

    results = evaluate_tiny(tmp_path, monkeypatch, data_dir, fashion(data_dir), "--protocol", "test10k",
                            "--n_samples", "64", "--n_real", "80")
    protocol = results["protocol"]
    assert {k: protocol[k] for k in ("name", "n_samples", "reference", "reference_size", "floor_reference",
                                     "floor_size", "extractor")} == {
        "name": "test10k[n_samples=64,n_real=80]", "n_samples": 64, "reference": "test", "reference_size": 80,
        "floor_reference": "train_full", "floor_size": 100,
        "extractor": extractor_fingerprint("fashion_classifier", load_classifier())}
    assert protocol["extractor_resize"].startswith("none") and protocol["data_resize"].startswith("none")
    assert math.isfinite(results["fd_fashion_classifier"]) and results["n_samples"] == 64
    table = capsys.readouterr().out
    for key in ("name", "reference", "reference_size", "extractor", "extractor_resize"):
        assert f"protocol.{key} " in table and str(protocol[key]) in table, key


def test_evaluate_refuses_a_protocol_whose_split_the_data_lack_in_one_line(tmp_path, monkeypatch, data_dir):
    folder = image_folder(tmp_path / "images", 20)
    with pytest.raises(SystemExit) as exit_:
        evaluate_tiny(tmp_path, monkeypatch, data_dir,
                      GANDataModule("image_folder", data_dir=str(folder), image_size=28, val_fraction=0.2),
                      "--protocol", "test10k", "--feature_extractor", "fashion_classifier")
    message = str(exit_.value.code)
    assert message.startswith("gan_lightning: error: protocol test10k") and "\n" not in message, message
    assert "use protocol train50k or trainsplit10k" in message
    assert not (tmp_path / "eval.json").exists()


# --- cache files are untrusted ---------------------------------------------------------------------------

def test_a_cache_file_that_is_not_ours_is_refused_naming_it_and_the_fix(tmp_path):
    from gan_lightning.metrics.image_scores import CacheFileError

    real = torch.randint(0, 256, (40, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    scores = ImageScores(SmallExtractor(), "fashion_classifier", ["fid"])
    scores.real_statistics(lambda: real.split(20), {"dataset": "test"}, tmp_path)
    (path,) = tmp_path.glob("real_*.pt")
    good = torch.load(path, weights_only=True)
    forged = {"n counts other rows": {**good, "n": 10_000},
              "wrong feature width": {**good, "features": good["features"][:, :3]},
              "not a dict": [1, 2, 3],
              "no inception score": {k: v for k, v in good.items() if k != "inception_score"}}
    for what, content in [*forged.items(), ("truncated", None)]:
        if content is None:
            path.write_bytes(path.read_bytes()[:100])
        else:
            torch.save(content, path)
        fresh = ImageScores(SmallExtractor(), "fashion_classifier", ["fid"])
        with pytest.raises(CacheFileError, match=rf"^cached real statistics {path} .*delete it") as caught:
            fresh.real_statistics(lambda: real.split(20), {"dataset": "test"}, tmp_path)
        assert "\n" not in str(caught.value), what


def test_a_cache_file_whose_count_differs_from_the_reference_is_refused(tmp_path, data_dir):
    """A well-formed file for the wrong set (e.g. copied under another key) must not be reported as the protocol's."""
    from gan_lightning.metrics.protocols import load_statistics

    dm = fashion(data_dir)
    small, large = real_images(dm, "test", 50), real_images(dm, "test", 60)
    scores = ImageScores(SmallExtractor(), "fashion_classifier", ["fid"])
    load_statistics(scores, small, tmp_path, 25)
    scores.cache_path(small.key, tmp_path).rename(scores.cache_path(large.key, tmp_path))
    with pytest.raises(ValueError, match=r"describes other statistics than its name stands for \(n_real differ\)"):
        load_statistics(ImageScores(SmallExtractor(), "fashion_classifier", ["fid"]), large, tmp_path, 25)


# --- evaluate --images -----------------------------------------------------------------------------------

def test_rgb_files_scored_for_grey_data_are_converted_as_pils_l_mode_not_cut_to_the_red_channel(tmp_path):
    from PIL import Image

    from gan_lightning.metrics.protocols import folder_images

    g = torch.Generator().manual_seed(0)
    (tmp_path / "x").mkdir()
    files = []
    for i in range(3):
        pixels = torch.randint(0, 256, (28, 28, 3), generator=g, dtype=torch.uint8).numpy()
        files.append(tmp_path / "x" / f"{i}.png")
        Image.fromarray(pixels).save(files[-1])
    images = folder_images(tmp_path, (1, 28, 28))
    for (image, _), file in zip(images, files, strict=True):
        assert image.shape == (1, 28, 28) and image.dtype == torch.uint8
        assert np.array_equal(image[0].numpy(), np.asarray(Image.open(file).convert("L")))
    colour = folder_images(tmp_path, (3, 28, 28))[0][0]
    assert colour.shape == (3, 28, 28) and np.array_equal(colour.permute(1, 2, 0).numpy(),
                                                          np.asarray(Image.open(files[0]).convert("RGB")))
