"""What a model adds to its checkpoints, and what it refuses to load.

A checkpoint holds the counters that match its weights (iteration, images seen, skipped updates, scheduler epoch
ends), so that resuming from it goes on bit for bit; it is never written with NaN or Inf state (``nonfinite.py``),
and a checkpoint of another model, or of this model with other sizes, is refused in one line.
"""
from lightning.pytorch.utilities import rank_zero_warn

from gan_lightning.checkpoints import CheckpointError, confine_checkpoint_state


def reopen_cut_epoch(checkpoint: dict) -> None:
    """Record an epoch that a stop cut short (``max_steps``, ``max_time``, ``trainer.should_stop``) as unfinished.

    Lightning ends the epoch loop early on such a stop and counts the epoch as finished (its end hooks run, and
    ``current_epoch`` moves on), so a run resumed from that checkpoint would skip the rest of the epoch's batches
    and start the next epoch with the schedulers one epoch behind. The batches say otherwise: the epoch's last
    batch was never reached. Such an epoch is recorded here as Lightning records a stop inside an epoch (a
    preemption signal's checkpoint): started, not processed, so that the resumed run goes on with its next batch,
    bit for bit as if it had never stopped. Applied when saving and again when loading (files written before)."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {}) if isinstance(checkpoint.get("loops"), dict) else {}
    epochs, batches = loop.get("epoch_progress"), loop.get("epoch_loop.batch_progress")
    try:
        total, current = epochs["total"], epochs["current"]
        cut = (not batches["is_last_batch"] and batches["current"]["completed"] > 0
               and total["processed"] == total["started"] > 0)
    except (KeyError, TypeError):  # no loops (a weights-only file) or another layout: read as it is
        return
    if cut:
        for progress in (total, current):
            progress["processed"] = progress["completed"] = progress["started"] - 1
        checkpoint["epoch"] = current["completed"]


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
        self._confine_callback_paths(checkpoint)
        self.iteration = saved.get("iteration", 0)
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
        """A checkpoint of this model built with other sizes (latent_dim, width, data shape): one line naming
        the settings that differ and the first weights that do not fit, instead of a page of size mismatches."""
        theirs, ours = checkpoint.get("state_dict", {}), self.state_dict()
        misfits = [f"{key} is {tuple(theirs[key].shape)} there, {tuple(value.shape)} here"
                   for key, value in ours.items() if key in theirs and theirs[key].shape != value.shape]
        if not misfits:
            return
        saved_hp, hp = checkpoint.get("hyper_parameters", {}), dict(self.hparams)
        differ = [f"model.{key}: {saved_hp[key]!r} in the checkpoint, {hp[key]!r} in the config"
                  for key in hp if key in saved_hp and saved_hp[key] != hp[key] and not key.startswith("_")]
        more = f" and {len(misfits) - 1} more" if len(misfits) > 1 else ""
        raise CheckpointError(
            f"this checkpoint's {type(self).__name__} has other shapes than the config builds "
            f"({'; '.join(differ) or 'same settings'}; {misfits[0]}{more}): "
            f"set those values as the checkpoint has them to resume it, or start without --ckpt_path")
