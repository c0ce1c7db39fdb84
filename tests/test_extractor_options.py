"""The extractor's weights file and its SHA-256, given as options (`evaluate --extractor_weights/--extractor_sha256`,
ImageMetrics' `extractor_weights`/`extractor_sha256`), reach the extractor: checked as the torch.hub cache's file is,
and named, by their digest, in the protocol every output writes."""
import json
import re

import pytest

from gan_lightning.cli import main
from gan_lightning.data import GANDataModule
from gan_lightning.errors import ConfigError
from gan_lightning.metrics import dinov2_clip, features
from gan_lightning.metrics.features import WeightsNotFoundError, build_extractor, extractor_fingerprint
from tests.helpers import tiny_trainer
from tests.test_extractors import clip_archive, crafted_file, fake_dinov2_checkout, sha256_of
from tests.test_image_metrics import image_folder, image_metrics, tiny_fashion_bigan

NOT_PINNED = "ab" * 32  # a digest no file here has


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch.hub cache (the options must not fall back on a file there) and no pinned digest in the
    environment (the option must be what pins it)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("GAN_LIGHTNING_SHA256_DINOV2_VIT_S_14", raising=False)
    return tmp_path / "torch" / "hub"


@pytest.fixture
def folder_run(tmp_path, monkeypatch):
    """`evaluate` on a checkpoint, stood in for by a tiny BiGAN on a folder of 20 images (no file, no dataset)."""
    from gan_lightning import commands

    datamodule = GANDataModule("image_folder", data_dir=str(image_folder(tmp_path / "images")), image_size=16,
                               val_fraction=0.2, batch_size=8)
    model = tiny_fashion_bigan(data_shape=(3, 16, 16)).eval()
    monkeypatch.setattr(commands, "load_model", lambda *args, **kwargs: (model, datamodule))
    return datamodule


def evaluate(tmp_path, *options: str) -> str:
    """`python -m gan_lightning evaluate ... OPTIONS`'s one-line error."""
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--ckpt_path", str(tmp_path / "run.ckpt"), "--metrics", "fid", "--device", "cpu",
              "--cache_dir", str(tmp_path / "stats"), "--out", str(tmp_path / "eval.json"), *options])
    message = str(exit_.value.code)
    assert message.startswith("gan_lightning: error:") and "\n" not in message, message
    return message


# --- evaluate ------------------------------------------------------------------------------------------------

def test_evaluate_reads_the_weights_file_given_by_extractor_weights_and_names_it_when_missing(
        tmp_path, torch_home, folder_run):
    missing = tmp_path / "downloads" / "ViT-B-32.pt"
    message = evaluate(tmp_path, "--feature_extractor", "clip_vit_b_32", "--extractor_weights", str(missing))
    assert f"clip_vit_b_32 weights file {missing} not found" in message, message


def test_evaluate_pins_the_digest_given_by_extractor_sha256_and_refuses_another_file_before_unpickling_it(
        tmp_path, torch_home, folder_run):
    crafted, ran = tmp_path / "downloads" / "dinov2_vits14_pretrain.pth", tmp_path / "ran"
    crafted_file(crafted, ran)
    fake_dinov2_checkout(torch_home / "facebookresearch_dinov2_main")
    message = evaluate(tmp_path, "--feature_extractor", "dinov2_vit_s_14", "--extractor_weights", str(crafted),
                       "--extractor_sha256", NOT_PINNED)
    assert re.search(rf"{re.escape(str(crafted))} has SHA-256 [0-9a-f]{{64}}, not the pinned {NOT_PINNED}.*refusing",
                     message), message
    assert not ran.exists(), "the crafted DINOv2 file ran its code"


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_evaluate_writes_the_digest_of_the_weights_given_by_extractor_weights_into_its_protocol(
        tmp_path, torch_home, folder_run, monkeypatch):
    file = tmp_path / "downloads" / "ViT-B-32.pt"
    file.parent.mkdir()
    file.write_bytes(clip_archive())
    monkeypatch.setitem(dinov2_clip.CLIP_METADATA["clip-vit-b-32"], "hash", sha256_of(file))
    main(["evaluate", "--ckpt_path", str(tmp_path / "run.ckpt"), "--metrics", "fid", "--device", "cpu",
          "--feature_extractor", "clip_vit_b_32", "--extractor_weights", str(file), "--n_samples", "8",
          "--batch_size", "8", "--cache_dir", str(tmp_path / "stats"), "--out", str(tmp_path / "eval.json")])
    digest = extractor_fingerprint("clip_vit_b_32", build_extractor("clip_vit_b_32", weights=str(file)))
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["protocol"]["extractor"] == digest and "fd_clip_vit_b_32" in written, written


# --- ImageMetrics ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("what", ["missing file", "wrong digest"])
def test_image_metrics_passes_its_weights_options_to_the_extractor_before_any_training(
        tmp_path, torch_home, what):
    crafted, ran = tmp_path / "downloads" / "dinov2_vits14_pretrain.pth", tmp_path / "ran"
    if what == "wrong digest":
        crafted_file(crafted, ran)
        fake_dinov2_checkout(torch_home / "facebookresearch_dinov2_main")
    metric = image_metrics(tmp_path, feature_extractor="dinov2_vit_s_14", metrics=["fid"],
                           extractor_weights=str(crafted), extractor_sha256=NOT_PINNED)
    datamodule = GANDataModule("image_folder", data_dir=str(image_folder(tmp_path / "images")), image_size=16,
                               val_fraction=0.2, batch_size=8)
    model = tiny_fashion_bigan(data_shape=(3, 16, 16))
    if what == "missing file":
        error, pattern = WeightsNotFoundError, re.escape(f"dinov2_vit_s_14 weights file {crafted} not found")
    else:
        error = ConfigError
        pattern = rf"{re.escape(str(crafted))} has SHA-256 [0-9a-f]{{64}}, not the pinned {NOT_PINNED}"
    with pytest.raises(error, match=pattern):
        tiny_trainer(tmp_path, callbacks=[metric]).fit(model, datamodule)
    assert model.iteration == 0 and not ran.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_image_metrics_names_the_digest_of_the_weights_given_by_extractor_weights_in_its_protocol(
        tmp_path, torch_home, monkeypatch):
    file = tmp_path / "downloads" / "ViT-B-32.pt"
    file.parent.mkdir()
    file.write_bytes(clip_archive())
    monkeypatch.setitem(dinov2_clip.CLIP_METADATA["clip-vit-b-32"], "hash", sha256_of(file))
    metric = image_metrics(tmp_path, feature_extractor="clip_vit_b_32", metrics=["fid"], n_samples=8, n_real=8,
                           report_floor=False, extractor_weights=str(file))
    datamodule = GANDataModule("image_folder", data_dir=str(image_folder(tmp_path / "images")), image_size=16,
                               val_fraction=0.2, batch_size=8)
    tiny_trainer(tmp_path, callbacks=[metric]).validate(tiny_fashion_bigan(data_shape=(3, 16, 16)), datamodule)
    digest = extractor_fingerprint("clip_vit_b_32", build_extractor("clip_vit_b_32", weights=str(file)))
    assert metric.protocol_info["extractor"] == digest


# --- options an extractor would otherwise ignore -----------------------------------------------------------------

def test_an_inception_file_matching_the_prefix_but_not_the_pinned_digest_is_refused_before_unpickling(
        tmp_path, monkeypatch):
    crafted, ran = tmp_path / "weights-inception-2015-12-05-6726825d.pth", tmp_path / "ran"
    crafted_file(crafted, ran)
    monkeypatch.setattr(features, "INCEPTION_SHA256_PREFIX", sha256_of(crafted)[:8])  # ~2**32 tries find such a file
    with pytest.raises(ConfigError, match=rf"{re.escape(str(crafted))} has SHA-256 [0-9a-f]{{64}}, not the pinned "
                                          rf"{NOT_PINNED}: refusing"):
        build_extractor("inception", weights=str(crafted), download=False, sha256=NOT_PINNED)
    assert not ran.exists(), "the crafted Inception file ran its code"


@pytest.mark.parametrize("name,options,expected", [
    ("fashion_classifier", {"weights": "w.pt"}, "fashion_classifier ships with the package"),
    ("fashion_classifier", {"sha256": NOT_PINNED}, "drop extractor_weights and extractor_sha256"),
    ("clip_vit_b_32", {"sha256": NOT_PINNED}, "pinned to OpenAI's SHA-256 40d36571"),
    ("dinov2_vit_s_14", {"sha256": "abc"}, "64 hex digits (sha256sum FILE); got 'abc'"),
    ("inception", {"inception_weights": "a.pth", "weights": "b.pth"}, "name two Inception weights files"),
])
def test_weights_options_an_extractor_cannot_use_are_refused_in_one_line(name, options, expected, torch_home):
    with pytest.raises(ConfigError, match=re.escape(expected)) as err:
        build_extractor(name, **options)
    assert "\n" not in str(err.value)
