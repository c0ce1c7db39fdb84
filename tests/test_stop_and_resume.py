"""Every way a run stops, then resumes: the matrix of docs/scaling.md ("Stop and resume").

A cell is a way of stopping (``STOPS``) met with a model family and a pair of settings (a learning-rate schedule
or none; ``data.iterations_per_batch`` 1 or 2). The cells are chosen pairwise rather than as the full product:
every stop meets every family, and every (schedule, iterations_per_batch) pair meets every stop (``cells``).

Each cell trains to ``N`` iterations in two parts (a run that stops, then the same run resumed with
``ckpt_path="last"``) and asserts:

- the stopped run left ``last.ckpt`` at the iteration the stop implies;
- the resumed run started at that iteration, at its epoch and at its learning rate (a run that ignored the
  checkpoint, or skipped the rest of a cut epoch, starts elsewhere);
- it ended bit for bit where one uninterrupted run to ``N`` ends: weights and moving averages, optimizer states,
  learning rates, counters, and the global RNG after the last iteration.

Tiny widths, 8x8 digits held in memory, 3 epochs of 4 iterations. Budget: about 5 minutes of CI (2 CPU cores).
"""
import os
import signal
from dataclasses import dataclass, field
from types import SimpleNamespace
from unittest import mock

import lightning as L
import lightning.pytorch.callbacks.timer
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from gan_lightning.callbacks import Preemption
from gan_lightning.errors import Preempted
from gan_lightning.models import AAE, VAE, RealNVP
from tests.helpers import assert_same_training_state, digits, tiny_bigan, tiny_gan, tiny_trainer

pytestmark = pytest.mark.timeout(900)

EPOCHS, PER_EPOCH = 3, 4  # iterations per epoch, whatever iterations_per_batch is
N = EPOCHS * PER_EPOCH
GAMMA = 0.5  # StepLR's factor at every epoch end, where a cell has a schedule


def step_lr(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=GAMMA)


def _with_schedules(names: list[str], schedule: bool) -> dict:
    return {name: step_lr for name in names} if schedule else {}


FAMILIES = {  # a model of each family, tiny, with its schedulers' argument names
    "gan": lambda s: tiny_gan(width=16, ema_decay=0.9, **_with_schedules(["scheduler_d", "scheduler_g"], s)),
    "bigan": lambda s: tiny_bigan(width=16, ema_decay=0.9, **_with_schedules(["scheduler_d", "scheduler_ge"], s)),
    "aae": lambda s: AAE(data_shape=(1, 8, 8), latent_dim=2, width=16, discriminator_width=16, ema_decay=0.9,
                         **_with_schedules(["scheduler_ae", "scheduler_d", "scheduler_e"], s)),
    "vae": lambda s: VAE(data_shape=(1, 8, 8), latent_dim=2, width=16, seed=3, **_with_schedules(["scheduler"], s)),
    "flow": lambda s: RealNVP(data_shape=(1, 8, 8), levels=2, steps_per_level=1, hidden=8,
                              **_with_schedules(["scheduler"], s)),
}


@dataclass(frozen=True)
class Stop:
    """How the first part of a run stops, and where its last checkpoint must then be."""

    name: str
    saved_at: object           # the iteration of last.ckpt: an int, or a function of iterations_per_batch
    raises: type | None = None
    trainer: dict = field(default_factory=dict)    # the stopped run's trainer arguments (max_steps in iterations)
    validation: str = "every_epoch"                 # the trainer's validation of both parts (see VALIDATION)
    signal_at: tuple | None = None   # (signal, "train" | "validation", iteration) sent to this process
    poison_at: int | None = None     # a NaN put into the weights before this iteration (on_nonfinite: stop)
    raise_at: int | None = None      # a callback raises at the end of this iteration
    resumes_in_epoch: int | None = None  # Lightning's current_epoch at the resume, where not saved_at // PER_EPOCH

    def saved_iteration(self, k: int) -> int:
        return self.saved_at(k) if callable(self.saved_at) else self.saved_at


VALIDATION = {"every_epoch": {"limit_val_batches": 1},
              "mid_epoch": {"limit_val_batches": 1, "val_check_interval": 0.5},
              "every_2_epochs": {"limit_val_batches": 1, "check_val_every_n_epoch": 2}}

STOPS = [
    Stop("max_steps mid-epoch", saved_at=2, trainer={"max_steps": 2}),
    Stop("max_steps on an epoch's last batch", saved_at=PER_EPOCH, trainer={"max_steps": PER_EPOCH}),
    Stop("max_epochs", saved_at=PER_EPOCH, trainer={"max_epochs": 1}),
    # Lightning's Timer (trainer.max_time) on a clock that reads the iteration: it stops after the batch reaching 2.
    Stop("max_time", saved_at=2, trainer={"max_time": {"seconds": 2}}),
    Stop("SIGTERM mid-epoch", saved_at=6, raises=Preempted, signal_at=(signal.SIGTERM, "train", 6)),
    Stop("SIGUSR1 mid-epoch", saved_at=2, raises=Preempted, signal_at=(signal.SIGUSR1, "train", 2)),
    Stop("Ctrl-C mid-epoch", saved_at=6, raises=Preempted, signal_at=(signal.SIGINT, "train", 6)),
    # A signal during the validation at an epoch's end is acted on at the next batch's end.
    Stop("SIGTERM during validation", saved_at=lambda k: PER_EPOCH + k, raises=Preempted,
         signal_at=(signal.SIGTERM, "validation", PER_EPOCH)),
    Stop("SIGUSR1 during validation", saved_at=lambda k: PER_EPOCH + k, raises=Preempted,
         signal_at=(signal.SIGUSR1, "validation", PER_EPOCH)),
    Stop("Ctrl-C during validation", saved_at=lambda k: 2 * PER_EPOCH + k, raises=Preempted,
         signal_at=(signal.SIGINT, "validation", 2 * PER_EPOCH)),
    # NaN weights before iteration 7: the check before epoch 1's checkpoint stops the run; epoch 0's stays.
    Stop("NaN stop", saved_at=PER_EPOCH, raises=FloatingPointError, poison_at=6),
    Stop("exception in a callback", saved_at=PER_EPOCH, raises=RuntimeError, raise_at=6),
    # Validation twice an epoch: its checkpoint mid-epoch (iteration 6) is the one a crash at 8 leaves.
    Stop("val_check_interval 0.5, crash", saved_at=6, raises=RuntimeError, raise_at=8, validation="mid_epoch"),
    # Validation (and with it the checkpoint) every second epoch: a crash in epoch 2 leaves epoch 1's, written
    # after its last batch and before its end, which Lightning resumes in epoch 1 with only its end left to run.
    Stop("check_val_every_n_epoch 2, crash", saved_at=2 * PER_EPOCH, raises=RuntimeError, raise_at=10,
         validation="every_2_epochs", resumes_in_epoch=1),
]

SETTINGS = [(False, 1), (True, 2), (True, 1), (False, 2)]  # (a schedule, iterations_per_batch)


def cells() -> list:
    """Stop i with family j takes settings (i + j) mod 4: each stop meets all five families and all four settings."""
    return [pytest.param(stop, family, *SETTINGS[(i + j) % len(SETTINGS)],
                         id=f"{stop.name}-{family}-{'schedule' if SETTINGS[(i + j) % 4][0] else 'constant'}"
                            f"-k{SETTINGS[(i + j) % 4][1]}".replace(" ", "_"))
            for i, stop in enumerate(STOPS) for j, family in enumerate(FAMILIES)]


# --- the callbacks that stop a run, and the one that records where a run started -------------------------------


class StopAt(L.Callback):
    """Sends a signal, poisons the weights, or raises, at the iteration a ``Stop`` names."""

    def __init__(self, stop: Stop):
        self.stop = stop

    def _signal(self, pl_module, where: str) -> None:
        if self.stop.signal_at and self.stop.signal_at[1:] == (where, pl_module.iteration):
            os.kill(os.getpid(), self.stop.signal_at[0])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.stop.poison_at is not None and pl_module.iteration == self.stop.poison_at:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._signal(pl_module, "train")
        if self.stop.raise_at is not None and pl_module.iteration == self.stop.raise_at:
            raise RuntimeError(f"a callback failed at iteration {pl_module.iteration}")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._signal(pl_module, "validation")


class Recorder(L.Callback):
    """Where a run started (iteration, epoch, learning rates, after any resume) and the global RNG after the
    iteration ``N``."""

    def __init__(self):
        self.started, self.rng = None, None

    def on_train_start(self, trainer, pl_module):
        self.started = (pl_module.iteration, trainer.current_epoch,
                        [group["lr"] for opt in trainer.optimizers for group in opt.param_groups])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.iteration == N:
            self.rng = torch.get_rng_state()


def fit(root, family: str, schedule: bool, k: int, validation: str, stop: Stop | None = None,
        ckpt_path=None) -> tuple:
    """One part of a cell's run (the whole run when ``stop`` is None): (final state, Recorder)."""
    torch.manual_seed(0)
    model = FAMILIES[family](schedule)
    recorder = Recorder()
    callbacks = [StopAt(stop)] if stop else []
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=1,
                                 enable_version_counter=False)
    stop_args = dict(stop.trainer) if stop else {}  # max_steps: iterations, whatever the players (count_iterations)
    trainer_args = {"max_epochs": EPOCHS, "limit_train_batches": PER_EPOCH // k, "enable_checkpointing": True,
                    "num_sanity_val_steps": 0, "callbacks": [*callbacks, recorder, Preemption(requeue=False),
                                                             checkpoint],
                    **VALIDATION[validation], **stop_args}
    trainer = tiny_trainer(root, **trainer_args)
    # max_time's Timer reads time.monotonic(): here a clock of one second per iteration, so that it stops in one place
    clock = SimpleNamespace(monotonic=lambda: float(model.iteration))
    with mock.patch.object(lightning.pytorch.callbacks.timer, "time", clock):
        trainer.fit(model, digits(batch_size=16, on_device=True, iterations_per_batch=k), ckpt_path=ckpt_path)
    return state(model, trainer), recorder


def state(model, trainer) -> dict:
    return {"model": model.state_dict(), "optimizers": [opt.state_dict() for opt in trainer.optimizers],
            "lr": [group["lr"] for opt in trainer.optimizers for group in opt.param_groups],
            "counters": (model.iteration, model.images_seen, dict(model.skipped))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Each setting's run to N without a stop, made once for all the cells that share it."""
    runs = {}

    def run(family, schedule, k, validation):
        key = (family, schedule, k, validation)
        if key not in runs:
            runs[key] = fit(tmp_path_factory.mktemp("whole"), *key)
        return runs[key]

    return run


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "family", "schedule", "k"), cells())
def test_a_stopped_run_resumes_where_it_stopped_and_ends_as_one_run(tmp_path, uninterrupted, stop, family, schedule,
                                                                    k):
    if stop.raises is None:
        fit(tmp_path, family, schedule, k, stop.validation, stop)
    else:
        with pytest.raises(stop.raises):
            fit(tmp_path, family, schedule, k, stop.validation, stop)
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    saved_at = stop.saved_iteration(k)
    assert saved["gan_lightning"]["iteration"] == saved_at

    resumed, recorder = fit(tmp_path, family, schedule, k, stop.validation, ckpt_path="last")
    whole, whole_recorder = uninterrupted(family, schedule, k, stop.validation)
    epochs_done = saved_at // PER_EPOCH  # the schedulers step with an epoch's last batch
    epoch = epochs_done if stop.resumes_in_epoch is None else stop.resumes_in_epoch
    base_lr = whole_recorder.started[2]
    lr = [rate * GAMMA**epochs_done if schedule else rate for rate in base_lr]
    assert recorder.started == (saved_at, epoch, lr), \
        f"the resumed run started at (iteration, epoch, lr) {recorder.started}; the checkpoint is at {saved_at}"
    assert resumed["counters"] == whole["counters"]
    assert resumed["lr"] == whole["lr"]
    assert_same_training_state(whole["model"], resumed["model"], whole["optimizers"], resumed["optimizers"])
    assert torch.equal(recorder.rng, whole_recorder.rng)


def test_the_cells_are_pairwise():
    """Every stop meets every family, and every (schedule, iterations_per_batch) pair meets every stop."""
    chosen = [param.values for param in cells()]
    assert {(stop.name, family) for stop, family, *_ in chosen} == {(s.name, f) for s in STOPS for f in FAMILIES}
    assert {(stop.name, schedule, k) for stop, _, schedule, k in chosen} == \
        {(s.name, schedule, k) for s in STOPS for schedule, k in SETTINGS}


@pytest.mark.slow
def test_a_checkpoint_saved_after_fit_returned_on_max_steps_resumes_in_its_epochs_order(tmp_path, uninterrupted):
    """``trainer.save_checkpoint`` after fit stopped inside an epoch: Lightning has moved its loaders' positions on
    to the next epoch; the reopened epoch takes them back, so the resumed run replays the cut epoch's order."""
    torch.manual_seed(0)
    model = FAMILIES["gan"](True)
    trainer = tiny_trainer(tmp_path, max_epochs=EPOCHS, max_steps=6,
                           limit_train_batches=PER_EPOCH, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, digits(batch_size=16, on_device=True))
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    saved = torch.load(tmp_path / "after.ckpt", weights_only=True)
    positions = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert saved["epoch"] == 1 and all(p["epoch"] == 1 for p in positions if p), positions
    resumed, recorder = fit(tmp_path / "resumed", "gan", True, 1, "every_epoch", ckpt_path=tmp_path / "after.ckpt")
    whole, _ = uninterrupted("gan", True, 1, "every_epoch")
    assert recorder.started[:2] == (6, 1)
    assert_same_training_state(whole["model"], resumed["model"], whole["optimizers"], resumed["optimizers"])


@pytest.mark.slow
def test_a_checkpoint_of_an_older_torch_still_resumes(tmp_path, uninterrupted):
    """An older torch wrote fewer keys (Adam's decoupled_weight_decay, StepLR's _is_initial), which today's fills in
    when it loads them: the checks compare what the optimizers and schedulers hold once loaded, as torch will."""
    with pytest.raises(Preempted):
        fit(tmp_path, "gan", True, 1, "every_epoch", STOPS[4])  # SIGTERM at iteration 6
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    for optimizer in checkpoint["optimizer_states"]:
        for group in optimizer["param_groups"]:
            group.pop("decoupled_weight_decay", None)
    for scheduler in checkpoint["lr_schedulers"]:
        scheduler.pop("_is_initial", None)
    torch.save(checkpoint, path)
    resumed, recorder = fit(tmp_path, "gan", True, 1, "every_epoch", ckpt_path="last")
    whole, _ = uninterrupted("gan", True, 1, "every_epoch")
    assert recorder.started[:2] == (6, 1)
    assert_same_training_state(whole["model"], resumed["model"], whole["optimizers"], resumed["optimizers"])
