"""Each damaged or hostile input that a review found, as a test (docs/failures.md, "Files from elsewhere").

Every case got a Python traceback, a hang, a silent wrong answer or an allocation of terabytes before; each now
gets one line naming the file and the fix, and nothing is built before the file is checked. The property-based
fuzzing of the same readers is tests/test_fuzz_inputs.py.
"""
import ast
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_lightning.cli import main
from tests.conftest import REPO
from tests.conftest import toy_fit_args as toy_fit
from tests.helpers import refused


@pytest.fixture
def toy(toy_run) -> Path:
    """A real checkpoint: a small BiGAN on the ring, 4 iterations through the CLI."""
    return toy_run / "checkpoints" / "last.ckpt"


def forged(toy: Path, folder: Path, change) -> Path:
    """The toy checkpoint after ``change(checkpoint)`` (which may return a replacement), saved in ``folder``."""
    checkpoint = torch.load(toy, weights_only=True)
    checkpoint = change(checkpoint) or checkpoint
    path = folder / "forged.ckpt"
    torch.save(checkpoint, path)
    return path


def sample(ckpt: Path, folder: Path, *extra: str) -> list[str]:
    return ["sample", "--ckpt_path", str(ckpt), "--n", "10", "--out", str(folder / "s.npz"), *extra]


def put(path: tuple, value):
    def change(checkpoint):
        parent = checkpoint
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    return change


def drop(path: tuple):
    def change(checkpoint):
        parent = checkpoint
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
    return change


FIRST_WEIGHT = "generator.net.0.weight"
DAMAGE = {  # the list: (change, what the one line must name)
    "the file holds a list": (lambda c: [1, 2, 3], "the file holds [1, 2, 3]"),
    "hyper_parameters is an int": (put(("hyper_parameters",), 7), "entry 'hyper_parameters' holds 7"),
    "the gan_lightning entry is a string": (put(("gan_lightning",), "abc"), "entry 'gan_lightning' holds 'abc'"),
    "its skipped is a string": (put(("gan_lightning", "skipped"), "abc"), "gan_lightning['skipped'] holds 'abc'"),
    "a missing state_dict entry": (drop(("state_dict", FIRST_WEIGHT)), "1 weights missing"),
    "an unexpected state_dict entry": (put(("state_dict", "extra.weight"), torch.zeros(2)), "1 unknown weights"),
    "a wrong-shape state_dict entry": (put(("state_dict", FIRST_WEIGHT), torch.zeros(3, 3)),
                                       f"{FIRST_WEIGHT} is (3, 3) there"),
    "an integer state_dict entry": (put(("state_dict", FIRST_WEIGHT), 5), f"state_dict entry '{FIRST_WEIGHT}' holds 5"),
    "latent_dim 'abc'": (put(("hyper_parameters", "latent_dim"), "abc"), "model.latent_dim"),
    "an unknown architecture": (put(("hyper_parameters", "architecture"), "resnet9000"), "model.architecture"),
    "width 10**7": (put(("hyper_parameters", "width"), 10**7), "does not hold the weights of this BiGAN"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_sample_refuses_a_damaged_checkpoint_in_one_line_naming_the_file_and_the_entry(case, toy, tmp_path):
    change, named = DAMAGE[case]
    ckpt = forged(toy, tmp_path, change)
    message = refused(*sample(ckpt, tmp_path))
    assert str(ckpt) in message and named in message, message
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("case", ["the file holds a list", "hyper_parameters is an int", "its skipped is a string",
                                  "a missing state_dict entry", "an integer state_dict entry", "latent_dim 'abc'",
                                  "width 10**7"])
def test_fit_refuses_a_damaged_checkpoint_in_one_line_and_writes_nothing(case, toy, tmp_path):
    change, _ = DAMAGE[case]
    ckpt = forged(toy, tmp_path, change)
    message = refused(*toy_fit(tmp_path / "run", "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt)))
    assert "checkpoint" in message and str(ckpt) in message, message
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


@pytest.mark.parametrize("setting, value, named", [("batch_size", "x", "data.batch_size"),
                                                   ("dataset", "no_such_data", "data.dataset")])
def test_a_checkpoints_data_settings_are_checked_against_the_data_modules_signature(toy, tmp_path, setting, value,
                                                                                  named):
    ckpt = forged(toy, tmp_path, put(("datamodule_hyper_parameters", setting), value))
    message = refused("evaluate", "--ckpt_path", str(ckpt), "--metrics", "probes", "--n_train", "100",
                      "--out", str(tmp_path / "e.json"))
    assert named in message and str(ckpt) in message, message


def test_a_data_shape_other_than_the_models_is_refused(toy, tmp_path):
    """A forged image_size (or dataset) would make evaluate read every image at the size the file says."""
    ckpt = forged(toy, tmp_path, put(("datamodule_hyper_parameters", "dataset"), "digits"))
    message = refused("evaluate", "--ckpt_path", str(ckpt), "--metrics", "probes", "--out", str(tmp_path / "e.json"))
    assert "examples of shape (1, 8, 8), its model was trained on (2,)" in message, message


def test_data_shape_abc_is_refused_by_the_models_signature(toy, tmp_path):
    ckpt = forged(toy, tmp_path, put(("hyper_parameters", "data_shape"), "abc"))
    assert "model.data_shape" in refused(*sample(ckpt, tmp_path))


def test_a_setting_that_would_allocate_terabytes_is_refused_before_anything_is_built(toy, tmp_path, monkeypatch):
    """width 10**7 builds 10**14-element layers: the meta-device build sees it, and no real tensor of that size is
    ever asked for (a real build would raise here)."""
    from gan_lightning.commands import load_model

    ckpt = forged(toy, tmp_path, put(("hyper_parameters", "width"), 10**7))
    real_empty = torch.empty

    def bounded_empty(*size, **kwargs):
        shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        on_meta = str(kwargs.get("device", "")) == "meta" or torch.get_default_device().type == "meta"
        assert on_meta or math.prod(shape) < 10**9, f"asked to allocate {shape}"
        return real_empty(*size, **kwargs)

    monkeypatch.setattr(torch, "empty", bounded_empty)
    with pytest.raises(Exception, match="does not hold the weights of this BiGAN"):
        load_model(str(ckpt))


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    """Entries that inflate to 64 MiB from a file of a few KiB: torch.save never writes such a file."""
    bomb = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * 2**26)
    assert bomb.stat().st_size < 2**20
    message = refused(*sample(bomb, tmp_path))
    assert "inflate to 67,108,864 bytes" in message and str(bomb) in message, message


def test_fit_refuses_a_weights_only_checkpoint_naming_what_it_lacks(toy, tmp_path):
    def weights_only(checkpoint):
        return {key: checkpoint[key] for key in ("epoch", "global_step", "pytorch-lightning_version", "state_dict",
                                                 "hyper_parameters", "gan_lightning")}
    ckpt = forged(toy, tmp_path, weights_only)
    message = refused(*toy_fit(tmp_path / "run", "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt)))
    assert "holds no optimizer_states or loops" in message and "evaluate or sample it" in message.lower(), message


def test_fit_refuses_a_loops_state_that_is_a_string(toy, tmp_path):
    ckpt = forged(toy, tmp_path, put(("loops", "fit_loop"), "abc"))
    message = refused(*toy_fit(tmp_path / "run", "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt)))
    assert "fit_loop is 'abc', not a dict" in message, message


def test_any_other_failure_while_lightning_restores_is_one_line_naming_the_file(toy, tmp_path):
    """What no check above looks at (here a callback's state: Lightning's Timer reads it with .get) still fails in
    one line naming the checkpoint: the net under the checks (``guard_restore``)."""
    ckpt = forged(toy, tmp_path, lambda c: c.setdefault("callbacks", {}).update(Timer="abc"))
    message = refused(*toy_fit(tmp_path / "run", "--trainer.max_epochs", "2", "--trainer.max_time", "00:00:10:00",
                               "--ckpt_path", str(ckpt)))
    assert f"checkpoint {ckpt} cannot be restored (AttributeError" in message, message


# --- what a checkpoint may not choose -----------------------------------------------------------------------


def test_sample_refuses_a_checkpoint_whose_generator_gives_nan(toy, tmp_path):
    def nan_weights(checkpoint):
        for key, value in checkpoint["state_dict"].items():
            if key.startswith("generator") and value.is_floating_point():
                value.fill_(float("nan"))
    ckpt = forged(toy, tmp_path, nan_weights)
    message = refused(*sample(ckpt, tmp_path))
    assert "hold NaN or Inf" in message and "nothing was written" in message, message
    assert not (tmp_path / "s.npz").exists()


def test_an_inf_learning_rate_never_reaches_a_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from gan_lightning.checkpoints import read_checkpoint
    from tests.helpers import digits, tiny_bigan, tiny_trainer

    explode = lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=math.inf)  # noqa: E731
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, enable_version_counter=False)
    trainer = tiny_trainer(tmp_path, max_epochs=2, enable_checkpointing=True, callbacks=[checkpoint])
    with pytest.raises(FloatingPointError, match=r"param_groups\[0\]\.lr is inf .*not written"):
        trainer.fit(tiny_bigan(scheduler_ge=explode), digits())
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists() or all(
        math.isfinite(group["lr"]) for opt in read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")[
            "optimizer_states"] for group in opt["param_groups"])


def test_a_mid_epoch_resume_with_another_data_order_is_refused_in_one_line(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from gan_lightning.checkpoints import CheckpointError
    from tests.helpers import digits, tiny_bigan, tiny_trainer

    def fit(seed, **kwargs):
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, enable_version_counter=False)
        trainer = tiny_trainer(tmp_path, enable_checkpointing=True, callbacks=[checkpoint], limit_train_batches=6,
                               **kwargs)
        trainer.fit(tiny_bigan(), digits(seed=seed), ckpt_path="last" if "max_epochs" in kwargs else None)

    fit(0, max_steps=3)  # 3 iterations: inside the first epoch
    with pytest.raises(CheckpointError, match=r"another order of the data \(dataset digits, seed 0.*this run: "
                                              r"dataset digits, seed 1"):
        fit(1, max_epochs=2)


def test_a_forged_cache_file_under_another_key_is_refused(tmp_path):
    """The review's forgery: scaled features with meta {"dataset": "anything"} moved an FD from 174.5 to 80.7."""
    from gan_lightning.metrics.image_scores import CacheFileError, read_cached

    features = torch.randn(8, 3)
    path = tmp_path / "real.pt"
    torch.save({"features_sum": features.double().sum(0), "features_cov_sum": features.double().T @ features.double(),
                "n": 8, "features": features, "inception_score": [1.0, 0.0], "meta": {"dataset": "anything"}}, path)
    with pytest.raises(CacheFileError, match="describes other statistics than its name stands for"):
        read_cached(path, 3, {"dataset": "fashion_mnist", "split": "train"})


# --- careless input to the commands ---------------------------------------------------------------------------


def test_evaluate_refuses_batch_size_0(toy, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--ckpt_path", str(toy), "--batch_size", "0"])
    assert stop.value.code == 2 and "--batch_size: must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_an_out_under_an_existing_file_is_refused_before_any_work(toy, tmp_path, command):
    (tmp_path / "a_file").write_text("x")
    out = str(tmp_path / "a_file" / "result")
    args = sample(toy, tmp_path) if command == "sample" else ["evaluate", "--ckpt_path", str(toy), "--metrics",
                                                               "probes"]
    message = refused(*args, "--out", out)
    assert f"--out {out}" in message and "is a file" in message, message


@pytest.mark.parametrize("device, said", [("cuda", "CUDA device"), ("bogus", "is not a device"),
                                          ("cuda:7", "CUDA device")])
def test_sample_checks_the_device_first(toy, tmp_path, device, said):
    if torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has a GPU")
    assert said in refused(*sample(toy, tmp_path, "--device", device))


def test_sample_says_the_name_it_writes(toy, tmp_path, capsys):
    main(["sample", "--ckpt_path", str(toy), "--n", "10", "--out", str(tmp_path / "s")])
    said = capsys.readouterr().out
    assert f"to {tmp_path / 's.npz'} " in said and (tmp_path / "s.npz").is_file(), said
    assert np.load(tmp_path / "s.npz")["x"].shape == (10, 2)


@pytest.mark.timeout(60)
def test_compare_says_the_name_it_writes_and_refuses_bad_csvs_in_one_line(toy, tmp_path, capsys):
    run = toy.parent.parent
    main(["compare", str(run), "--out", str(tmp_path / "plot")])
    assert f"wrote {tmp_path / 'plot.png'}" in capsys.readouterr().out and (tmp_path / "plot.png").is_file()
    folder = tmp_path / "run"
    (folder / "logs" / "version_0" / "metrics.csv").mkdir(parents=True)
    os.mkfifo(folder / "logs" / "metrics.csv")  # opening it would block until someone writes
    assert "no metrics.csv under" in refused("compare", str(folder))
    big = tmp_path / "big.csv"
    big.write_text("iteration,val/x\n1," + "9" * 131_073 + "\n")
    assert "is not a metrics CSV" in refused("compare", str(big))


# --- image folders ---------------------------------------------------------------------------------------------


def image_folder(root: Path) -> Path:
    from PIL import Image

    (root / "a").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(root / "a" / f"{i}.png")
    return root


@pytest.mark.timeout(60)
def test_an_image_folder_with_a_fifo_and_a_symlink_loop_is_read_without_hanging(tmp_path):
    from gan_lightning.metrics.protocols import folder_images

    root = image_folder(tmp_path / "images")
    os.mkfifo(root / "a" / "blocks.png")
    (root / "a" / "loop1").symlink_to(root / "a")
    (root / "a" / "loop2").symlink_to(root)
    images = folder_images(root, (3, 8, 8))
    assert len(images) == 3 and images[0][0].shape == (3, 8, 8)


def test_a_png_over_pils_pixel_limit_is_one_line(tmp_path, monkeypatch):
    from PIL import Image

    from gan_lightning.data.sources import DatasetCorruptError
    from gan_lightning.metrics.protocols import folder_images

    root = image_folder(tmp_path / "images")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 8x8 = 64 pixels: over twice the limit
    with pytest.raises(DatasetCorruptError, match=r"cannot be read \(Image size \(64 pixels\) exceeds limit"):
        folder_images(root, (3, 8, 8))[0]


def test_evaluate_ignores_the_checkpoints_data_dir_and_download(toy, tmp_path):
    """A checkpoint's data_dir and download chose where the data was read and downloaded; now the command does."""
    from gan_lightning.commands import load_model

    ckpt = forged(toy, tmp_path, lambda c: c["datamodule_hyper_parameters"].update(
        data_dir=str(tmp_path / "chosen"), download=True))
    _, datamodule = load_model(str(ckpt))
    assert datamodule.hparams.data_dir != str(tmp_path / "chosen") and datamodule.hparams.download is False
    _, datamodule = load_model(str(ckpt), data_dir=str(tmp_path / "mine"), download=True)  # --download_data
    assert datamodule.hparams.data_dir == str(tmp_path / "mine") and datamodule.hparams.download is True


def test_checkpoints_py_imports_no_model():
    """checkpoints.py knows files and schemas only: the models declare what may be loaded (models/registry.py)."""
    tree = ast.parse((REPO / "gan_lightning" / "checkpoints.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    named = {f"{node.module}.{alias.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             for alias in node.names}
    ours = {name for name in imported | named if name and name.startswith("gan_lightning")}
    assert ours <= {"gan_lightning.errors", "gan_lightning.errors.first_line"}, ours
