"""Exact resume: training 2N iterations equals training N, stopping (signal or crash), and resuming.

Bitwise on the CPU: parameters, EMA, optimizer states and the iteration counter. The runs use dropout
(the global RNG), a Gaussian encoder (reparameterisation noise), an EMA and a learning-rate schedule, so
every piece of state that Lightning does not save by itself is exercised.
"""
import os
import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from gan_lightning.callbacks import Preemption
from gan_lightning.errors import Preempted
from tests.helpers import assert_same_training_state, digits, tiny_ali, tiny_trainer

EPOCHS, BATCHES = 2, 6  # 12 iterations in all


class SignalAt(L.Callback):
    """Sends this process ``signum`` at the end of iteration ``iteration``, as SLURM would mid-run."""

    def __init__(self, iteration: int, signum: int = signal.SIGUSR1):
        self.iteration, self.signum = iteration, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.iteration == self.iteration:
            os.kill(os.getpid(), self.signum)


class CrashAt(L.Callback):
    """Dies at the end of iteration ``iteration`` without saving, like a SIGKILL between checkpoints."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.iteration == self.iteration:
            raise KeyboardInterrupt  # Lightning shuts down without writing anything


class StartedAt(L.Callback):
    """Records where a run starts training: its iteration counter, epoch and learning rates, after any resume."""

    def __init__(self):
        self.iteration = self.epoch = self.lr = None

    def on_train_start(self, trainer, pl_module):
        self.iteration, self.epoch = pl_module.iteration, trainer.current_epoch
        self.lr = [opt.param_groups[0]["lr"] for opt in trainer.optimizers]


class Validations(L.Callback):
    """Counts the validation epochs that start (the sanity check's aside)."""

    def __init__(self):
        self.count = 0

    def on_validation_epoch_start(self, trainer, pl_module):
        self.count += not trainer.sanity_checking


LR = 1e-4  # tiny_ali's learning rate, halved at every epoch end by the StepLR of model()


def assert_started_at(started: StartedAt, iteration: int, epoch: int) -> None:
    """The resumed run began where the checkpoint left off (a run that ignored it would start at 0 with LR)."""
    assert (started.iteration, started.epoch) == (iteration, epoch), \
        f"started at iteration {started.iteration}, epoch {started.epoch}; the checkpoint is at {iteration}, {epoch}"
    assert started.lr == [LR * 0.5**epoch] * 2


def model():
    torch.manual_seed(0)
    step_lr = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)  # noqa: E731
    return tiny_ali(seed=5, encoder="gaussian", dropout=0.3, ema_decay=0.9, scheduler_d=step_lr, scheduler_ge=step_lr)


def fit(root, *callbacks, ckpt_path=None, on_device=True, every_n_train_steps=None, limit_val_batches=0):
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True,
                                 save_top_k=-1 if every_n_train_steps else 0,
                                 every_n_train_steps=every_n_train_steps, enable_version_counter=False)
    net = model()
    trainer = tiny_trainer(root, max_epochs=EPOCHS, limit_train_batches=BATCHES, enable_checkpointing=True,
                           limit_val_batches=limit_val_batches, callbacks=[*callbacks, checkpoint])
    trainer.fit(net, digits(batch_size=16, on_device=on_device), ckpt_path=ckpt_path)
    return net, trainer


def resume(root, *callbacks, **kwargs) -> tuple[dict, StartedAt]:
    """``fit(..., ckpt_path="last")``: the final state and where the resumed run started."""
    started = StartedAt()
    return state(*fit(root, *callbacks, started, ckpt_path="last", **kwargs)), started


def saved_iteration(root) -> int:
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["gan_lightning"]["iteration"]


def state(net, trainer):
    return {"model": net.state_dict(), "optimizers": [opt.state_dict() for opt in trainer.optimizers],
            "iteration": net.iteration, "lr": [opt.param_groups[0]["lr"] for opt in trainer.optimizers]}


def assert_identical(a, b):
    assert a["iteration"] == b["iteration"] == EPOCHS * BATCHES
    assert a["lr"] == b["lr"]
    assert_same_training_state(a["model"], b["model"], a["optimizers"], b["optimizers"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return {on_device: state(*fit(tmp_path_factory.mktemp("whole"), on_device=on_device))
            for on_device in (True, False)}


@pytest.mark.parametrize("stop_at", [4, 6, 9])  # mid-epoch, on the epoch's last batch, in the second epoch
@pytest.mark.parametrize("on_device", [True, False])
def test_signal_saves_at_the_iteration_boundary_and_resumes_bit_for_bit(tmp_path, uninterrupted, stop_at, on_device):
    with pytest.raises(Preempted, match=f"SIGUSR1 received: saved .*last.ckpt at iteration {stop_at}"):
        fit(tmp_path, SignalAt(stop_at), Preemption(requeue=False), on_device=on_device)
    assert saved_iteration(tmp_path) == stop_at
    assert not (tmp_path / "checkpoints" / "last.ckpt.partial").exists()
    resumed, started = resume(tmp_path, Preemption(requeue=False), on_device=on_device)
    assert_started_at(started, iteration=stop_at, epoch=stop_at // BATCHES)
    assert_identical(resumed, uninterrupted[on_device])


@pytest.mark.parametrize("stop_at", [4, 6])  # mid-epoch; on the epoch's last batch, just before validation
def test_resume_with_validation_on_is_bit_for_bit(tmp_path, uninterrupted, stop_at):
    """Validation (eval mode, its own noise) between iterations changes nothing that training resumes from."""
    whole = state(*fit(tmp_path / "whole", limit_val_batches=2))
    assert_identical(whole, uninterrupted[True])
    with pytest.raises(Preempted):
        fit(tmp_path / "cut", SignalAt(stop_at), Preemption(requeue=False), limit_val_batches=2)
    resumed, started = resume(tmp_path / "cut", Preemption(requeue=False), limit_val_batches=2)
    assert_started_at(started, iteration=stop_at, epoch=stop_at // BATCHES)
    assert_identical(resumed, whole)


def test_a_signal_on_an_epochs_last_batch_saves_before_validation(tmp_path):
    """Validation and the measuring callbacks at an epoch's end can outlast SLURM's 90 s warning: the signal's
    checkpoint comes first, and the run stops without validating."""
    validations = Validations()
    with pytest.raises(Preempted, match=f"saved .*last.ckpt at iteration {BATCHES}"):
        fit(tmp_path, SignalAt(BATCHES), Preemption(requeue=False), validations, limit_val_batches=2)
    assert validations.count == 0
    assert saved_iteration(tmp_path) == BATCHES


def test_a_signal_during_validation_skips_the_measuring_callbacks_and_saves_at_the_next_iteration(tmp_path):
    from gan_lightning.callbacks import EncoderProbe

    class SignalDuringValidation(L.Callback):
        def on_validation_batch_end(self, trainer, pl_module, *args):
            if pl_module.iteration == BATCHES and not trainer.sanity_checking:
                os.kill(os.getpid(), signal.SIGUSR1)

    probe = EncoderProbe(n_train=64, n_test=32, linear=False, penultimate=False)
    with pytest.raises(Preempted, match=f"saved .*last.ckpt at iteration {BATCHES + 1}"):
        fit(tmp_path, SignalDuringValidation(), Preemption(requeue=False), probe, limit_val_batches=2)
    assert probe.last == {}, "the probe measured while the run was about to stop"
    assert saved_iteration(tmp_path) == BATCHES + 1


def test_image_metrics_skip_their_samples_while_a_signal_is_pending():
    from types import SimpleNamespace

    from gan_lightning.callbacks import ImageMetrics

    preemption, metrics = Preemption(requeue=False), ImageMetrics(feature_extractor="fashion_classifier")
    measured = []
    metrics.evaluate = lambda trainer, pl_module: measured.append(1) or {}
    from lightning.pytorch.trainer.states import TrainerFn

    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, callbacks=[preemption, metrics], world_size=1,
                              state=SimpleNamespace(fn=TrainerFn.FITTING), max_epochs=10, max_steps=-1,
                              should_stop=False, global_step=0, loggers=[], callback_metrics={},
                              datamodule=SimpleNamespace(splits={}))
    pl_module = SimpleNamespace(log_dict=lambda *args, **kwargs: None, iteration=1)
    metrics.scores = SimpleNamespace()  # as after setup
    metrics.on_validation_epoch_end(trainer, pl_module)
    assert measured == [1]
    preemption._record(signal.SIGUSR1, None)
    metrics.on_validation_epoch_end(trainer, pl_module)
    assert measured == [1], "ImageMetrics generated its samples with a signal pending"
    metrics.on_train_end(trainer, pl_module)   # nor at the end of fit: saving comes first
    assert measured == [1], "ImageMetrics measured the final weights with a signal pending"


def test_after_preempted_the_signal_handlers_are_restored(tmp_path):
    """A notebook or a sweep driver goes on after the run: its own handlers must be back."""
    def mine(signum, frame):
        pass

    previous = {signum: signal.signal(signum, mine) for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)}
    try:
        with pytest.raises(Preempted):
            fit(tmp_path, SignalAt(2), Preemption(requeue=False))
        for signum in previous:
            assert signal.getsignal(signum) is mine, f"{signal.Signals(signum).name} handler not restored"
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_sigterm_saves_and_stops_too(tmp_path, uninterrupted):
    with pytest.raises(Preempted, match="SIGTERM received"):
        fit(tmp_path, SignalAt(3, signal.SIGTERM), Preemption())
    assert saved_iteration(tmp_path) == 3
    resumed, started = resume(tmp_path, Preemption())
    assert_started_at(started, iteration=3, epoch=0)
    assert_identical(resumed, uninterrupted[True])


def test_ctrl_c_saves_at_the_iteration_boundary_and_resumes_bit_for_bit(tmp_path, uninterrupted, capsys):
    with pytest.raises(Preempted, match="SIGINT received: saved .*last.ckpt at iteration 3"):
        fit(tmp_path, SignalAt(3, signal.SIGINT), Preemption())
    assert "Ctrl-C again to quit without saving" in capsys.readouterr().err
    assert saved_iteration(tmp_path) == 3
    resumed, started = resume(tmp_path, Preemption())
    assert_started_at(started, iteration=3, epoch=0)
    assert_identical(resumed, uninterrupted[True])


def test_a_second_ctrl_c_quits_at_once_without_saving(tmp_path):
    preemption = Preemption()
    preemption._record(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        preemption._record(signal.SIGINT, None)


def test_a_crash_between_checkpoints_resumes_from_the_newest_periodic_one(tmp_path, uninterrupted):
    # every_n_train_steps counts iterations (2 optimizer steps each here): a checkpoint every 4 iterations.
    with pytest.raises(SystemExit):
        fit(tmp_path, CrashAt(7), every_n_train_steps=4)
    assert saved_iteration(tmp_path) == 4
    resumed, started = resume(tmp_path, every_n_train_steps=4)
    assert_started_at(started, iteration=4, epoch=0)
    assert_identical(resumed, uninterrupted[True])


def test_a_periodic_checkpoint_on_an_epochs_last_batch_keeps_the_schedulers_step(tmp_path, uninterrupted):
    """A checkpoint every epoch's worth of iterations is written after the epoch's last batch, before the
    epoch's end; resuming from it starts the next epoch, so the schedulers must already have stepped."""
    with pytest.raises(SystemExit):
        fit(tmp_path, CrashAt(BATCHES + 2), every_n_train_steps=BATCHES)
    assert saved_iteration(tmp_path) == BATCHES
    resumed, started = resume(tmp_path, every_n_train_steps=BATCHES)
    assert_started_at(started, iteration=BATCHES, epoch=1)
    assert_identical(resumed, uninterrupted[True])


def test_a_checkpoint_whose_scheduler_steps_do_not_match_its_epoch_is_refused(tmp_path):
    """Training on from it would follow another learning-rate schedule than the run it continues."""
    from gan_lightning.checkpoints import CheckpointError

    with pytest.raises(Preempted):
        fit(tmp_path, SignalAt(BATCHES + 2), Preemption(requeue=False))
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["gan_lightning"]["scheduler_epochs"] == 1
    checkpoint["gan_lightning"]["scheduler_epochs"] = 0  # as if the epoch's step had been lost
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="schedulers stepped at 0 epoch ends, but training starts at epoch 1"):
        fit(tmp_path, ckpt_path="last")


def test_preemption_needs_a_checkpoint_folder(tmp_path):
    from gan_lightning.errors import ConfigError

    trainer = tiny_trainer(tmp_path, callbacks=[Preemption()])
    with pytest.raises(ConfigError, match="ModelCheckpoint"):
        trainer.fit(model(), digits())


@pytest.mark.slow
def test_sigkill_between_periodic_checkpoints_loses_only_the_iterations_since_the_last(tmp_path):
    """A real process killed with SIGKILL; the same command with --ckpt_path last ends where an
    uninterrupted run ends, bit for bit."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]

    def command(run_dir):  # the toy config, plus a checkpoint every 20 iterations
        return [sys.executable, "-m", "gan_lightning", "fit", "--config", "configs/toy/bigan_ring.yaml",
                "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "120", "--trainer.limit_val_batches", "0",
                "--model.init_args.width", "64", "--run_dir", str(run_dir), "--ckpt_path", "last",
                "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                "--trainer.callbacks.dirpath", str(run_dir / "periodic"),
                "--trainer.callbacks.every_n_train_steps", "20",
                "--trainer.callbacks.save_last", "true", "--trainer.callbacks.save_top_k", "0"]

    subprocess.run(command(tmp_path / "whole"), cwd=repo, check=True, capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    periodic = killed / "periodic" / "last.ckpt"
    deadline = time.time() + 240
    while not periodic.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.kill()  # somewhere after the first periodic checkpoint
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    saved = torch.load(periodic, weights_only=True)["gan_lightning"]["iteration"]
    assert 0 < saved < 120 and saved % 20 == 0
    output = subprocess.run(command(killed), cwd=repo, check=True, capture_output=True, text=True, timeout=300)
    assert f"resuming at iteration {saved}, epoch 0" in output.stdout + output.stderr, "the run did not resume"
    whole, resumed = (torch.load(run / "periodic" / "last.ckpt", weights_only=True)
                      for run in (tmp_path / "whole", killed))
    assert whole["gan_lightning"]["iteration"] == resumed["gan_lightning"]["iteration"] == 120
    assert_same_training_state(whole["state_dict"], resumed["state_dict"], whole["optimizer_states"],
                               resumed["optimizer_states"])


@pytest.mark.slow
def test_a_signal_during_start_up_is_held_until_the_first_iteration(tmp_path):
    """SLURM may send its warning while Python still imports torch: the run must not die of it."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    process = subprocess.Popen([sys.executable, "-m", "gan_lightning", "fit", "--config", "configs/toy/bigan_ring.yaml",
                                "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "50",
                                "--trainer.limit_val_batches", "0", "--run_dir", str(tmp_path)],
                               cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    time.sleep(0.3)
    # The signal is for the start-up: wait (on a loaded machine) until the recorder's handler is in place, as it is
    # before SLURM could send anything to a job whose first line is `python -m gan_lightning`.
    def caught() -> int:
        with open(f"/proc/{process.pid}/status") as status:
            return int(next(line for line in status if line.startswith("SigCgt")).split()[1], 16)

    deadline = time.time() + 60
    while not caught() >> (signal.SIGUSR1 - 1) & 1 and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGUSR1)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-2000:]
    assert "SIGUSR1 received: saved" in output and "at iteration 1" in output
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["gan_lightning"]["iteration"] == 1
