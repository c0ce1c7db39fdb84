"""The failure catalogue (docs/failures.md): for each bad input or fault, the message and the files kept.

The rows tested elsewhere name their tests in the catalogue; these are the rest.
"""
import errno
import hashlib
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import Dataset

import gan_lightning.checkpoints as checkpoints
from gan_lightning.callbacks import EncoderProbe, LatentScatter
from gan_lightning.checkpoints import CheckpointError
from gan_lightning.data.loader import DataLoaderWorkerDied, ResumableDataLoader
from gan_lightning.errors import ConfigError
from gan_lightning.models import BiGAN
from tests.helpers import digits, tiny_bigan, tiny_gan, tiny_trainer


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trained_checkpoint(tmp_path: Path, **model_kwargs) -> Path:
    trainer = tiny_trainer(tmp_path, limit_train_batches=2)
    trainer.fit(tiny_bigan(**model_kwargs), digits())
    path = tmp_path / "good.ckpt"
    trainer.save_checkpoint(path)
    return path


def nan_gradients_of(network: torch.nn.Module, when=lambda: True) -> None:
    """Make the network's first parameter's gradient NaN (the loss stays finite) whenever ``when()``."""
    param = next(network.parameters())
    param.register_hook(lambda grad: grad * float("nan") if when() else grad)


# --- 3. Divergence --------------------------------------------------------------------------------

def test_nan_gradients_under_a_finite_loss_stop_naming_the_player_and_iteration_before_the_step(tmp_path):
    model = tiny_bigan()
    poisoned = [True]
    nan_gradients_of(model.discriminator, when=lambda: poisoned[0] and model.iteration == 1)
    with pytest.raises(FloatingPointError, match="discriminator gradient norm is nan at iteration 1"):
        tiny_trainer(tmp_path).fit(model, digits())
    assert all(torch.isfinite(p).all() for p in model.parameters()), "the NaN step was taken"

    # The cause removed, the same model fits again: the stopped fit's flag does not stop the next one.
    poisoned[0] = False
    trainer = tiny_trainer(tmp_path / "again", limit_train_batches=3)
    trainer.fit(model, digits())
    assert model.iteration == trainer.global_step == 4  # the model counts on; a step is its iteration


@pytest.mark.parametrize("player, network", [("discriminator", "discriminator"),
                                             ("generator_encoder", "generator")])
def test_nan_gradients_in_a_simultaneous_update_stop_naming_the_player_before_its_step(tmp_path, player, network):
    """Players stepping together are checked in one kernel; a NaN in either still names that player and
    stops before its step."""
    model = tiny_bigan(update="simultaneous")
    nan_gradients_of(getattr(model, network), when=lambda: model.iteration == 2)
    with pytest.raises(FloatingPointError, match=f"the {player} gradient norm is nan at iteration 2"):
        tiny_trainer(tmp_path).fit(model, digits())
    assert all(torch.isfinite(p).all() for p in model.parameters()), "the NaN step was taken"


@pytest.fixture
def deferred_checks(monkeypatch):
    """The accelerator's path on the CPU: NaN/Inf flags kept on the device, read every log_every_n_steps."""
    from gan_lightning.models.base import AdversarialModule

    monkeypatch.setattr(AdversarialModule, "defer_nonfinite_checks", True)


def all_finite(checkpoint: dict) -> bool:
    tensors = list(checkpoint["state_dict"].values()) + [value for opt in checkpoint["optimizer_states"]
                                                         for entries in opt["state"].values()
                                                         for value in entries.values()]
    return all(torch.isfinite(t).all() for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point())


def test_deferred_nan_checks_let_no_checkpoint_hold_nan_weights(tmp_path, deferred_checks):
    """With the flag read only every 5 iterations, the NaN step of iteration 3 is taken; the checkpoint after
    iteration 4 (written before the module's own hooks run) must be refused, and the one after 3 kept."""
    model = tiny_bigan()
    nan_gradients_of(model.discriminator, when=lambda: model.iteration == 3)
    every_iteration = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, save_top_k=0,
                                      every_n_train_steps=1)  # a step is an iteration
    trainer = tiny_trainer(tmp_path, limit_train_batches=10, log_every_n_steps=5, enable_checkpointing=True,
                           callbacks=[every_iteration])
    with pytest.raises(FloatingPointError, match="discriminator loss or gradient norm became NaN or Inf at "
                                                 "iteration 3 \\(found before the checkpoint at iteration 4"):
        trainer.fit(model, digits())
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["gan_lightning"]["iteration"] == 3
    assert all_finite(saved)


def test_deferred_nan_checks_stop_within_log_every_n_steps_naming_the_player(tmp_path, deferred_checks):
    model = tiny_bigan()
    nan_gradients_of(model.generator, when=lambda: model.iteration == 1)
    with pytest.raises(FloatingPointError, match="generator_encoder loss or gradient norm became NaN or Inf at "
                                                 "iteration 1 \\(found at iteration 5\\)"):
        tiny_trainer(tmp_path, limit_train_batches=10, log_every_n_steps=5).fit(model, digits())
    assert model.iteration == 5


def test_a_nan_in_the_last_iterations_of_a_run_still_stops_it(tmp_path, deferred_checks):
    """The run ends (7 iterations) before the next read of the flag (at 10): the end of training reads it."""
    model = tiny_bigan()
    nan_gradients_of(model.discriminator, when=lambda: model.iteration == 6)
    with pytest.raises(FloatingPointError, match=r"discriminator .* at iteration 6 \(found at the end of training\)"):
        tiny_trainer(tmp_path, limit_train_batches=7, log_every_n_steps=5).fit(model, digits())


def test_a_checkpoint_of_nan_weights_is_refused_naming_the_weight(tmp_path):
    """However NaN got into the weights (here, set by hand), no checkpoint is written with it."""
    trainer = tiny_trainer(tmp_path, limit_train_batches=2)
    model = tiny_bigan()
    trainer.fit(model, digits())
    trainer.save_checkpoint(tmp_path / "good.ckpt")
    with torch.no_grad():
        model.encoder.net[1].weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"weight encoder\.net\.1\.weight is NaN or Inf at iteration 2"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


def test_skip_mode_drops_the_bad_updates_counts_them_and_trains_on(tmp_path):
    model = tiny_bigan(on_nonfinite="skip")
    nan_gradients_of(model.discriminator, when=lambda: model.iteration in (1, 2))
    weights = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            weights.append(next(pl_module.discriminator.parameters()).detach().clone())

    trainer = tiny_trainer(tmp_path, limit_train_batches=5, callbacks=[Record()], log_every_n_steps=1,
                           logger=CSVLogger(tmp_path))
    with pytest.warns(UserWarning, match="discriminator loss or gradients are NaN or Inf at iteration 1 .*skipping"):
        trainer.fit(model, digits())
    assert model.skipped == {"discriminator": 2}
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[1], weights[2])  # iterations 1, 2 skipped
    assert not torch.equal(weights[2], weights[3]) and torch.isfinite(weights[-1]).all()  # then it trains on
    assert trainer.logged_metrics["train/skipped_discriminator"] == 2
    trainer.save_checkpoint(tmp_path / "skip.ckpt")
    assert BiGAN.load_from_checkpoint(tmp_path / "skip.ckpt").skipped == {"discriminator": 2}


def test_skip_mode_stops_when_a_player_does_not_recover(tmp_path, monkeypatch):
    monkeypatch.setattr(BiGAN, "MAX_CONSECUTIVE_SKIPS", 3)
    model = tiny_bigan(on_nonfinite="skip")
    nan_gradients_of(model.generator)
    with pytest.warns(UserWarning), pytest.raises(
            FloatingPointError, match="generator_encoder loss or gradients were NaN or Inf in 3 iterations in a row"):
        tiny_trainer(tmp_path, limit_train_batches=10).fit(model, digits())


# --- 4. Checkpoints -------------------------------------------------------------------------------

def test_a_full_disk_while_writing_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    good = trained_checkpoint(tmp_path)
    before = digest(good)
    real_save = torch.save

    def save_then_fill_the_disk(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        file.truncate(100)  # what reached the disk before it filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoints.torch, "save", save_then_fill_the_disk)
    trainer = tiny_trainer(tmp_path, limit_train_batches=1)
    trainer.fit(tiny_bigan(), digits())
    with pytest.raises(CheckpointError, match=f"could not write checkpoint {good} \\(No space left on device\\): "
                                              f"{good} is unchanged"):
        trainer.save_checkpoint(good)
    assert digest(good) == before and BiGAN.load_from_checkpoint(good).iteration == 2
    assert list(tmp_path.glob("*.partial")) == []


class Killed(BaseException):
    """Stands in for SIGKILL in the middle of a write (not an Exception: nothing may catch it)."""


def test_a_kill_during_a_periodic_checkpoint_keeps_the_last_whole_one(tmp_path, monkeypatch):
    real_save, saves = torch.save, []

    def killed_on_the_third_save(obj, file, *args, **kwargs):
        saves.append(obj["gan_lightning"]["iteration"])
        # Written beside the destination, not in memory or a temp folder on another disk, then renamed.
        assert Path(file.name) == tmp_path / "ckpt" / "last.ckpt.partial"
        if len(saves) == 3:
            file.write(b"PK\x03\x04 half a zip")
            raise Killed  # the write never finishes
        real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", killed_on_the_third_save)
    every_step = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True, save_top_k=0)
    with pytest.raises(Killed):
        tiny_trainer(tmp_path, limit_train_batches=5, enable_checkpointing=True, callbacks=[every_step]).fit(
            tiny_bigan(), digits())
    assert BiGAN.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt").iteration == saves[1]
    assert list((tmp_path / "ckpt").glob("*.partial")) == []


def test_a_truncated_checkpoint_given_to_fit_is_refused_in_one_line_and_left_alone(tmp_path):
    good = trained_checkpoint(tmp_path)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    before = digest(cut)
    with pytest.raises(CheckpointError, match=f"checkpoint {cut} cannot be read .*truncated, corrupted") as err:
        tiny_trainer(tmp_path).fit(tiny_bigan(), digits(), ckpt_path=cut)
    assert "\n" not in str(err.value) and digest(cut) == before


def test_fit_reads_checkpoints_weights_only_and_says_so_when_a_file_needs_more(tmp_path):
    good = trained_checkpoint(tmp_path)
    ckpt = torch.load(good, weights_only=True)
    ckpt["surprise"] = Path("/")  # any Python object beyond tensors and plain values
    torch.save(ckpt, tmp_path / "pickled.ckpt")
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors.*weights_only false"):
        tiny_trainer(tmp_path, max_epochs=2).fit(tiny_bigan(), digits(), ckpt_path=tmp_path / "pickled.ckpt")
    model = tiny_bigan()  # the user trusts it: weights_only=False (fit --weights_only false) loads it
    tiny_trainer(tmp_path, max_epochs=2).fit(model, digits(), ckpt_path=tmp_path / "pickled.ckpt", weights_only=False)
    assert model.iteration == 5
    resumed = tiny_bigan()  # and our own checkpoints resume under the weights-only loader
    tiny_trainer(tmp_path, max_epochs=2).fit(resumed, digits(), ckpt_path=good)
    assert resumed.iteration == 5


def test_a_checkpoint_of_another_shape_names_the_settings_and_the_weights_that_differ(tmp_path):
    good = trained_checkpoint(tmp_path, latent_dim=4)
    before = digest(good)
    with pytest.raises(CheckpointError, match=r"model.latent_dim: 4 in the checkpoint, 3 in the config\).*"
                                              r"\S+ is \(.*\) there, \(.*\) here"):
        tiny_trainer(tmp_path, max_epochs=2).fit(tiny_bigan(latent_dim=3), digits(), ckpt_path=good)
    assert digest(good) == before


# --- 1. Config ------------------------------------------------------------------------------------

def test_model_and_data_seeds_may_differ_and_both_are_kept(tmp_path):
    trainer = tiny_trainer(tmp_path, logger=CSVLogger(tmp_path))
    trainer.fit(tiny_bigan(seed=1), digits(seed=2))
    trainer.save_checkpoint(tmp_path / "seeds.ckpt")
    ckpt = torch.load(tmp_path / "seeds.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["seed"] == 1 and ckpt["datamodule_hyper_parameters"]["seed"] == 2


@pytest.mark.parametrize("callback", [EncoderProbe, LatentScatter])
def test_encoder_callbacks_refuse_a_model_without_an_encoder(callback, tmp_path):
    with pytest.raises(ConfigError, match=f"{callback.__name__}.*GAN has (none|no encoder).*remove the callback"):
        tiny_trainer(tmp_path, callbacks=[callback()]).fit(tiny_gan(), digits())


# --- 7. Resources ---------------------------------------------------------------------------------

def test_out_of_memory_names_the_batch_size_and_the_fix(tmp_path, monkeypatch):
    model = tiny_bigan()

    def too_big(batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has 1.0 GiB free.")

    monkeypatch.setattr(model, "update_players", too_big)
    with pytest.raises(torch.OutOfMemoryError, match=r"training step of BiGAN with 16 examples per device "
                                                     r"\(data.batch_size=16; CUDA out of memory. Tried to allocate "
                                                     r"20.00 GiB.*--data.batch_size 8, or --trainer.precision bf16"):
        tiny_trainer(tmp_path).fit(model, digits(batch_size=16))


class DiesInWorker(Dataset):
    """A dataset whose worker process is killed (as the out-of-memory killer would) on the third item."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int):
        if i == 2 and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(2), 0


def test_a_killed_dataloader_worker_is_reported_with_its_cause_and_fix():
    loader = ResumableDataLoader(DiesInWorker(), 4, shuffle=False, drop_last=True, seed=0, rank=0, world_size=1,
                                 num_workers=1)
    with pytest.raises(DataLoaderWorkerDied, match="killed by signal: Killed.*num_workers=1.*out-of-memory killer"):
        for _ in loader:
            pass


# --- through the command line: one line, before anything is built ----------------------------------

GAN_RING = Path(__file__).resolve().parents[1] / "configs" / "toy" / "gan_ring.yaml"


def cli_error(*args: str) -> str:
    """The one line ``python -m gan_lightning`` ends with (in-process: the same ``main``)."""
    from gan_lightning.cli import main

    with pytest.raises(SystemExit) as stop:
        main(list(args))
    assert isinstance(stop.value.code, str) and "\n" not in stop.value.code, stop.value.code
    return stop.value.code


def test_fit_refuses_a_checkpoint_of_another_model_or_other_settings_naming_both(tmp_path):
    config = ["fit", "--config", str(GAN_RING), "--trainer.default_root_dir", str(tmp_path)]
    bigan = trained_checkpoint(tmp_path)
    assert cli_error(*config, "--ckpt_path", str(bigan)).startswith(
        f"gan_lightning: error: checkpoint {bigan} holds a BiGAN model, but the config builds a GAN")
    gan_hparams = {"_class_path": "gan_lightning.models.GAN", "latent_dim": 99, "loss": "non_saturating"}
    torch.save({"hyper_parameters": gan_hparams}, tmp_path / "gan.ckpt")
    message = cli_error(*config, "--ckpt_path", str(tmp_path / "gan.ckpt"))
    assert "other settings (model.latent_dim: 99 in the checkpoint, 2 in the config)" in message, message
    assert "drop those overrides" in message and not (tmp_path / "checkpoints").exists()


def test_fit_names_a_truncated_checkpoint_in_one_line(tmp_path):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(trained_checkpoint(tmp_path).read_bytes()[:3000])
    message = cli_error("fit", "--config", str(GAN_RING), "--trainer.default_root_dir", str(tmp_path),
                        "--ckpt_path", str(cut))
    assert message.startswith(f"gan_lightning: error: checkpoint {cut} cannot be read") and "truncated" in message
