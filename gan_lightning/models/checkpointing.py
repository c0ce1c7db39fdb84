"""What a model adds to its checkpoints, and what it refuses to load.

A checkpoint holds the counters that match its weights (iteration, images seen, skipped updates, scheduler epoch
ends), so that resuming from it goes on bit for bit; it is never written with NaN or Inf state (``nonfinite.py``),
and a checkpoint of another model, or of this model with other sizes, is refused in one line.
"""
import functools

import torch
from lightning.pytorch.utilities import rank_zero_warn

from gan_lightning.checkpoints import (
    CheckpointError,
    confine_checkpoint_state,
    optimizer_state_mismatch,
    refuse_other_weights,
    scheduler_state_mismatch,
    structure_mismatch,
)
from gan_lightning.data.loader import position_mismatch
from gan_lightning.errors import ConfigError, first_line


def reopen_cut_epoch(checkpoint: dict) -> None:
    """Record an epoch that a stop cut short (``max_steps``, ``max_time``, ``trainer.should_stop``) as unfinished.

    Lightning ends the epoch loop early on such a stop and counts the epoch as finished (its end hooks run, and
    ``current_epoch`` moves on), so a run resumed from that checkpoint would skip the rest of the epoch's batches
    and start the next epoch with the schedulers one epoch behind. The batches say otherwise: the epoch's last
    batch was never reached. Such an epoch is recorded here as Lightning records a stop inside an epoch (a
    preemption signal's checkpoint): started, not processed, so that the resumed run goes on with its next batch,
    bit for bit as if it had never stopped. Applied when saving and again when loading (files written before)."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {}) if isinstance(checkpoint.get("loops"), dict) else {}
    try:
        epochs, batches = loop.get("epoch_progress"), loop.get("epoch_loop.batch_progress")
        total, current = epochs["total"], epochs["current"]
        cut = (not batches["is_last_batch"] and batches["current"]["completed"] > 0
               and total["processed"] == total["started"] > 0)
    except (KeyError, TypeError, AttributeError):  # no loops (a weights-only file) or another layout: left to the
        return                                     # checks of _refuse_unresumable
    if cut:
        for progress in (total, current):
            progress["processed"] = progress["completed"] = progress["started"] - 1
        checkpoint["epoch"] = current["completed"]
        # A checkpoint written after fit returned (on_train_end, trainer.save_checkpoint) has the loaders' positions
        # in the epoch Lightning moved on to: they are in the reopened one, whose order they must replay.
        loaders = loop.get("state_dict", {}).get("combined_loader", []) if isinstance(loop.get("state_dict"), dict) \
            else []
        for position in loaders if isinstance(loaders, list) else []:
            if isinstance(position, dict) and position.get("epoch_done") is False:
                position["epoch"] = current["completed"]


def count_steps_in_iterations(checkpoint: dict, iteration: int) -> None:
    """Lightning's step counters in a checkpoint set to its iterations (``AdversarialModule.count_iterations``).

    Checkpoints written before the step was an iteration counted one step per player update (BiGAN's
    ``global_step`` 24,000 at iteration 12,000): resumed as they are, ``max_steps`` would stop them early and their
    step-based intervals would be off. Their iteration count (``gan_lightning.iteration``) says where they are."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {}) if isinstance(checkpoint.get("loops"), dict) else {}
    steps = loop.get("epoch_loop.manual_optimization.optim_step_progress") if isinstance(loop, dict) else None
    if isinstance(steps, dict) and isinstance(steps.get("total"), dict):
        steps["total"]["ready"] = steps["total"]["completed"] = iteration
    if isinstance(loop, dict) and isinstance(loop.get("epoch_loop.state_dict"), dict) \
            and "_batches_that_stepped" in loop["epoch_loop.state_dict"]:
        loop["epoch_loop.state_dict"]["_batches_that_stepped"] = iteration
    if "global_step" in checkpoint:
        checkpoint["global_step"] = iteration


def guard_restore(trainer) -> None:
    """Whatever else goes wrong while Lightning restores a checkpoint (``fit``, ``validate``, ``test`` with
    ``--ckpt_path``) becomes one ``CheckpointError`` line naming the file: the checks above name the common
    damage precisely, and this is the net under them. Installed once per trainer (``AdversarialModule.setup``,
    which Lightning calls before restoring)."""
    connector = getattr(trainer, "_checkpoint_connector", None)
    if connector is None or connector.__dict__.get("_one_line_errors"):
        return
    for name in ("_restore_modules_and_callbacks", "restore_training_state"):
        if hasattr(connector, name):
            setattr(connector, name, _one_line(getattr(connector, name), trainer))
    connector.__dict__["_one_line_errors"] = True


def _one_line(restore, trainer):
    @functools.wraps(restore)
    def restoring(*args, **kwargs):
        try:
            return restore(*args, **kwargs)
        except (CheckpointError, ConfigError, torch.OutOfMemoryError):
            raise
        except Exception as err:
            raise CheckpointError(f"checkpoint {trainer.ckpt_path} cannot be restored ({type(err).__name__}: "
                                  f"{first_line(err)}):"
                                  " it was edited, damaged or written by another program; use another checkpoint"
                                  ) from err
    return restoring


class CheckpointState:
    """The checkpoint hooks of an ``AdversarialModule`` (a mixin of it)."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.on_nonfinite != "ignore":  # no checkpoint holds NaN or Inf weights or optimizer state
            self.read_nonfinite_flags(f"before the checkpoint at iteration {self.iteration}, which was not written")
            self._refuse_nonfinite_state(checkpoint)
        checkpoint["gan_lightning"] = {"model": type(self).__name__, "iteration": self.iteration,
                                       "images_seen": self.images_seen, "skipped": dict(self.skipped),
                                       "scheduler_epochs": self.scheduler_epochs}
        reopen_cut_epoch(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("gan_lightning", {})
        reopen_cut_epoch(checkpoint)  # also in files that an earlier version wrote with the epoch closed
        if saved.get("model", type(self).__name__) != type(self).__name__:
            raise CheckpointError(f"this checkpoint holds a {saved['model']} model, but the config builds a "
                             f"{type(self).__name__}: pass the checkpoint of a {type(self).__name__} run, "
                             f"or set model.class_path to {saved['model']}.")
        self._refuse_other_shapes(checkpoint)
        self._refuse_unresumable(checkpoint)
        self._confine_callback_paths(checkpoint)
        self.iteration = saved.get("iteration", 0)
        count_steps_in_iterations(checkpoint, self.iteration)  # also in files that counted one step per player
        self.images_seen = saved.get("images_seen", 0)
        self.skipped = dict(saved.get("skipped", {}))
        self.scheduler_epochs = saved.get("scheduler_epochs", -1)  # -1: an older checkpoint, which did not count
        self.__dict__.pop("_ema_counts", None)  # the loaded counts are read again (on_train_start, update_ema)

    def _confine_callback_paths(self, checkpoint: dict) -> None:
        """Drop, with one warning each, the paths in the checkpoint's ModelCheckpoint states that lie outside that
        callback's folder of this run (``confine_checkpoint_state``): Lightning restores the callbacks after this
        hook, then removes and loads the paths they name."""
        states = checkpoint.get("callbacks")
        if self._trainer is None or not isinstance(states, dict):
            return
        for callback in self.trainer.checkpoint_callbacks:
            key = getattr(callback, "state_key", None)
            if key in states and getattr(callback, "dirpath", None):
                states[key], dropped = confine_checkpoint_state(states[key], callback.dirpath)
                for path in dropped:
                    rank_zero_warn(f"gan_lightning: the checkpoint {self.trainer.ckpt_path} names {path} in its "
                                   f"{type(callback).__name__} state, outside {callback.dirpath}: ignored (neither "
                                   "loaded nor removed)")

    def _refuse_other_shapes(self, checkpoint: dict) -> None:
        """A checkpoint of this model built with other sizes (latent_dim, width, data shape), or with other or
        missing weights: one line naming the settings that differ and the first weights that do not fit, instead
        of a page of size mismatches."""
        theirs, ours = checkpoint.get("state_dict", {}), self.state_dict()
        saved_hp, hp = checkpoint.get("hyper_parameters", {}), dict(self.hparams)
        differ = [f"model.{key}: {saved_hp[key]!r} in the checkpoint, {hp[key]!r} in the config"
                  for key in hp if key in saved_hp and saved_hp[key] != hp[key] and not key.startswith("_")]
        source = f"this checkpoint ({'; '.join(differ) or 'same settings'})"
        refuse_other_weights(ours, theirs, source, type(self).__name__,
                             "set those values as the checkpoint has them to resume it, or start without --ckpt_path")

    def _refuse_unresumable(self, checkpoint: dict) -> None:
        """``fit --ckpt_path``: the checkpoint must hold what resuming restores (optimizers, schedulers, loops), as
        this model's players and Lightning's loops lay it out; else one line, before Lightning reads any of it."""
        trainer = self._trainer
        if trainer is None or getattr(trainer.state.fn, "value", None) != "fit":
            return
        file = trainer.ckpt_path
        missing = [key for key in ("optimizer_states", "loops") if key not in checkpoint]
        if missing:
            raise CheckpointError(f"checkpoint {file} holds no {' or '.join(missing)} (weights only, e.g. "
                                  "ModelCheckpoint(save_weights_only=True)): fit cannot resume training from it. "
                                  "Evaluate or sample it, or resume from a full checkpoint such as last.ckpt")
        players = len(self._players)
        schedulers = sum(scheduler is not None for _, _, scheduler in self._players.values())
        for key, count in (("optimizer_states", players), ("lr_schedulers", schedulers)):
            saved = checkpoint.get(key, [])
            if len(saved) != count:
                raise CheckpointError(f"checkpoint {file} holds {len(saved)} {key.replace('_', ' ')}, where this "
                                      f"{type(self).__name__} has {count}: it was written with other players or "
                                      "schedules; resume with the config that wrote it, or start a new run")
        mismatch = structure_mismatch(trainer.fit_loop.state_dict(), checkpoint["loops"].get("fit_loop"), "fit_loop")
        fit_loop = checkpoint["loops"].get("fit_loop")
        loop_state = fit_loop.get("state_dict", {}) if isinstance(fit_loop, dict) else {}
        loaders = loop_state.get("combined_loader", []) if isinstance(loop_state, dict) else []
        if not isinstance(loaders, list):
            mismatch = mismatch or f"fit_loop's combined_loader is {type(loaders).__name__}, not a list"
        for i, position in enumerate(loaders if isinstance(loaders, list) else []):
            found = position_mismatch(position)
            mismatch = mismatch or (f"fit_loop's loader position {i}: {found}" if found else None)
        # The optimizers and schedulers this model builds, fresh (no state yet): what the saved ones must fit.
        optimizers, schedulers = self.configure_optimizers()
        for i, optimizer in enumerate(optimizers):
            mismatch = mismatch or optimizer_state_mismatch(optimizer, checkpoint["optimizer_states"][i],
                                                            f"optimizer_states[{i}]")
        for i, scheduler in enumerate(schedulers):
            mismatch = mismatch or scheduler_state_mismatch(scheduler["scheduler"], checkpoint["lr_schedulers"][i],
                                                            f"lr_schedulers[{i}]")
        if mismatch:
            raise CheckpointError(f"checkpoint {file}: its training state is not what this {type(self).__name__} "
                                  f"and Lightning write ({mismatch}): it was edited, damaged or written by another "
                                  "program; use another checkpoint")
