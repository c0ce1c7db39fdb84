"""``predict``: the generator's samples, and an encoder's codes and reconstructions of the predict split, written by
``callbacks.PredictionWriter`` in ``sample``'s layout into the run's folder."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_lightning.callbacks.predictions import PredictionWriter
from gan_lightning.cli import main
from gan_lightning.commands import load_model
from gan_lightning.data import GANDataModule, to_model_range, to_uint8
from tests.conftest import BIGAN_RING, REPO, SMOKE, toy_fit_args

WROTE = re.compile(r"wrote (\d+) predictions of (\w+) at iteration (\d+) to (\S+\.npz) .* and (\S+\.png)")


def predict(capsys, run: Path, config: Path, *extra: str) -> tuple[dict, Path]:
    """``predict`` in-process; the arrays of the .npz it says it wrote, and that path (checked to lie in ``run``)."""
    capsys.readouterr()
    main(["predict", "--config", str(config), "--config", str(SMOKE), "--run_dir", str(run), "--wandb.mode", "off",
          "--trainer.enable_progress_bar", "false", *extra])
    said = WROTE.search(capsys.readouterr().out)
    assert said, "predict printed no paths"
    npz, png = Path(said.group(4)), Path(said.group(5))
    assert npz.is_file() and png.is_file() and png.parent == npz.parent
    assert npz.resolve().is_relative_to(run.resolve())  # never outside the run's folder
    assert f"iteration_{said.group(3)}" in npz.parts
    with np.load(npz) as file:
        return dict(file), npz


@pytest.fixture
def captured(monkeypatch) -> list:
    """The models PredictionWriter writes the predictions of."""
    models, write = [], PredictionWriter.write

    def recording(self, arrays, trainer, pl_module):
        models.append(pl_module)
        return write(self, arrays, trainer, pl_module)

    monkeypatch.setattr(PredictionWriter, "write", recording)
    return models


def assert_same(a: np.ndarray, b: np.ndarray, name: str) -> None:
    """Equal, up to float rounding that depends on the batch's size (a network's outputs: 1 in uint8 images)."""
    if name in ("index", "y", "x_real", "z_prior"):  # positions, the data and the draws: bit for bit
        np.testing.assert_array_equal(a, b, err_msg=name)
    else:
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=0,
                                   atol=1.0 if a.dtype == np.uint8 else 1e-5, err_msg=name)


def images_in(array: np.ndarray) -> torch.Tensor:
    """The file's uint8 NHWC images as the model sees them: NCHW in [-1, 1]."""
    return to_model_range(torch.from_numpy(array).permute(0, 3, 1, 2))


def test_bigan_writes_samples_codes_and_reconstructions_of_the_test_split(tmp_path, capsys, captured, data_dir):
    arrays, npz = predict(capsys, tmp_path / "run", REPO / "configs" / "bigan.yaml", "--model.init_args.width", "32",
                          "--data.init_args.data_dir", str(data_dir), "--data.init_args.batch_size", "16",
                          "--trainer.limit_predict_batches", "2")
    model = captured[0]
    assert (npz.parent / "reconstructions.png").is_file()
    assert arrays["x"].dtype == np.uint8 and arrays["x"].shape == (32, 28, 28, 1)  # as `sample`: NHWC
    assert int(arrays["iteration"]) == 0 and int(arrays["seed"]) == 0
    test = GANDataModule("fashion_mnist", data_dir=str(data_dir))
    test.setup("predict")
    x_test, y_test = test._tensors("test")[:2]
    np.testing.assert_array_equal(arrays["x_real"], x_test[:32].permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(arrays["y"], y_test[:32].numpy())
    np.testing.assert_array_equal(arrays["index"], np.arange(32))
    assert arrays["z"].shape == (32, model.latent_dim) == (32, 50) and arrays["z"].dtype == np.float32
    x_real = images_in(arrays["x_real"])
    torch.testing.assert_close(torch.from_numpy(arrays["z"]), model.encode(x_real))
    np.testing.assert_array_equal(arrays["reconstruction"], to_uint8(model.reconstruct(x_real)).permute(0, 2, 3, 1))
    np.testing.assert_array_equal(arrays["x"], to_uint8(model.sample(z=torch.from_numpy(arrays["z_prior"])))
                                  .permute(0, 2, 3, 1))


def test_gan_writes_samples_only(tmp_path, capsys, captured, data_dir):
    arrays, npz = predict(capsys, tmp_path / "run", REPO / "configs" / "gan.yaml", "--model.init_args.width", "8",
                          "--data.init_args.data_dir", str(data_dir), "--data.init_args.batch_size", "8",
                          "--trainer.limit_predict_batches", "2")
    assert set(arrays) == {"x", "z_prior", "index", "iteration", "seed"}  # no encoder: no codes, no reconstructions
    assert not (npz.parent / "reconstructions.png").exists()
    model = captured[0]
    assert arrays["x"].dtype == np.uint8 and arrays["x"].shape == (16, *model.hparams.data_shape[1:], 1)
    assert arrays["z_prior"].shape == (16, 100)
    np.testing.assert_array_equal(arrays["x"], to_uint8(model.sample(z=torch.from_numpy(arrays["z_prior"])))
                                  .permute(0, 2, 3, 1))


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory) -> Path:
    """A toy BiGAN fitted for the smoke overlay's 4 iterations, keeping a moving average."""
    run = tmp_path_factory.mktemp("ema") / "run"
    main(toy_fit_args(run, "--model.init_args.ema_decay", "0.5"))
    return run


def test_a_checkpoints_toy_predictions_use_its_iteration_and_moving_averages(ema_run, capsys):
    ckpt = ema_run / "checkpoints" / "last.ckpt"
    arrays, npz = predict(capsys, ema_run, BIGAN_RING, "--model.init_args.width", "16", "--model.init_args.ema_decay",
                          "0.5", "--ckpt_path", str(ckpt), "--trainer.limit_predict_batches", "3")
    assert "iteration_4" in npz.parts and int(arrays["iteration"]) == 4  # the checkpoint's
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (300, 2)  # as `sample`: float points
    model, _ = load_model(str(ckpt))
    assert arrays["z"].shape == (300, model.latent_dim)
    x_real = torch.from_numpy(arrays["x_real"])
    torch.testing.assert_close(torch.from_numpy(arrays["reconstruction"]), model.reconstruct(x_real))
    torch.testing.assert_close(torch.from_numpy(arrays["z"]), model.encode(x_real))
    z_prior = torch.from_numpy(arrays["z_prior"])
    torch.testing.assert_close(torch.from_numpy(arrays["x"]), model.sample(z=z_prior))
    with torch.no_grad():
        live = model.generator.eval()(z_prior)
    assert not torch.allclose(torch.from_numpy(arrays["x"]), live)  # the averaged generator, not the trained one


def test_the_same_seed_writes_the_same_arrays_whatever_the_batch_size(ema_run, capsys):
    ckpt = str(ema_run / "checkpoints" / "last.ckpt")
    args = ("--model.init_args.width", "16", "--model.init_args.ema_decay", "0.5", "--ckpt_path", ckpt,
            "--trainer.limit_predict_batches", "0.03")
    first, _ = predict(capsys, ema_run, BIGAN_RING, *args)
    rerun, _ = predict(capsys, ema_run, BIGAN_RING, *args)
    assert set(rerun) == set(first)
    for name in first:
        np.testing.assert_array_equal(rerun[name], first[name], err_msg=name)
    again, _ = predict(capsys, ema_run, BIGAN_RING, *args, "--data.init_args.batch_size", "7")
    n = len(again["index"])  # 42 batches of 7 against 3 of 100
    assert n == 294 and len(first["index"]) == 300
    for name in ("x", "z_prior", "x_real", "z", "reconstruction", "y", "index"):
        assert_same(first[name][:n], again[name], name)
    other, _ = predict(capsys, ema_run, BIGAN_RING, *args, "--trainer.callbacks+=PredictionWriter",
                       "--trainer.callbacks.seed", "1")  # the writer's seed, as docs/configs.md says
    assert int(other["seed"]) == 1 and not np.allclose(other["x"], first["x"])
    np.testing.assert_array_equal(other["reconstruction"], first["reconstruction"])


@pytest.mark.ddp
def test_two_ranks_write_one_file_equal_to_one_process(tmp_path):
    """Each rank predicts its share (that of val and test); rank 0 gathers them and writes the one file."""
    import lightning as L

    from tests.helpers import digits, tiny_bigan

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # forked ranks hang under several intra-op threads (tests/test_ddp.py)
    model = tiny_bigan()
    try:
        for devices, strategy in [(1, "auto"), (2, "ddp_fork")]:
            L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False, enable_progress_bar=False,
                      default_root_dir=tmp_path / str(devices)).predict(model, datamodule=digits())
    finally:
        torch.set_num_threads(threads)
    one, two = (dict(np.load(tmp_path / str(devices) / "predictions" / "iteration_0" / "predictions.npz"))
                for devices in (1, 2))
    assert len(one["index"]) == 179 and len(two["index"]) == 178  # 2 x 89: the shares of val and test
    for name in ("index", "x", "z_prior", "x_real", "z", "reconstruction", "y"):
        assert_same(one[name][:178], two[name], name)
