"""Save, requeue and stop on SLURM's warning signal, at an iteration boundary that all ranks agree on.

SLURM sends ``--signal=USR1@90`` ninety seconds before a job's time limit, and SIGTERM when it
preempts or cancels a job. Lightning's own SLURM handler writes a checkpoint from inside the signal
handler (hangs reported: Lightning #21406) and its HPC checkpoints are never cleaned up. Here the
handler only records the signal; at the end of the next iteration (every ``check_every_n_iterations``)
the ranks agree whether any of them received one, all of them take part in saving
``<checkpoint dir>/last.ckpt`` (written to a temporary file and renamed, so a kill while writing leaves
the previous one intact), rank 0 requeues the job on SIGUSR1, and every rank stops with
``Preempted``. The requeued job runs the same command with ``--ckpt_path last`` and resumes exactly:
Lightning's ``last`` picks the newest ``last*.ckpt`` in the ModelCheckpoint's fixed ``dirpath``.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info

from gan_lightning.early_signals import pop_early_signal
from gan_lightning.errors import ConfigError, Preempted


def slurm_job_id() -> str | None:
    """The id that ``scontrol requeue`` takes: ``ARRAYJOB_TASK`` for array members, else the job id."""
    if "SLURM_ARRAY_JOB_ID" in os.environ and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class Preemption(L.Callback):
    """Checkpoint at the next iteration boundary on a signal; requeue the SLURM job on SIGUSR1.

    Args:
        requeue_signal: the signal SLURM sends before the time limit (``#SBATCH --signal=USR1@90``);
            on it the job is saved and requeued.
        stop_signals: signals on which the run is saved and stopped without a requeue (SIGTERM:
            ``scancel``, or SLURM's own preemption, which requeues by itself with ``--requeue``; SIGINT:
            Ctrl-C, where a second Ctrl-C quits at once without saving).
        requeue: ``auto`` requeues when running in a SLURM job; ``true`` / ``false`` force it.
        check_every_n_iterations: how often the ranks agree whether a signal arrived (one all-reduce of
            one number); SLURM's warning comes ~90 s ahead, so any small value is safe.
    """

    LOG_GRACE_SECONDS = 1.0  # between the last log line and ``scontrol requeue``, which ends the step

    def __init__(self, requeue_signal: str = "SIGUSR1", stop_signals: list[str] = ("SIGTERM", "SIGINT"),
                 requeue: bool | str = "auto", check_every_n_iterations: int = 1):
        if check_every_n_iterations < 1:
            raise ValueError(f"Preemption.check_every_n_iterations must be >= 1, got {check_every_n_iterations}")
        if requeue not in (True, False, "auto"):
            raise ValueError(f"Preemption.requeue must be true, false or auto, got {requeue!r}")
        names = [requeue_signal, *stop_signals]
        unknown = [name for name in names if not hasattr(signal, name)]
        if unknown:
            raise ValueError(f"Preemption: unknown signal name(s) {unknown}; use e.g. SIGUSR1, SIGUSR2, SIGTERM")
        self.requeue_signal = getattr(signal, requeue_signal)
        self.stop_signals = [getattr(signal, name) for name in stop_signals]
        self.requeue, self.check_every = requeue, check_every_n_iterations
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._checked = 0  # the iteration at the last check

    # --- the handler only records ----------------------------------------------------------

    def _record(self, signum: int, frame) -> None:
        if signum == signal.SIGINT:
            if self.received == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: quit now, as someone pressing it twice means
            sys.stderr.write("\ngan_lightning: Ctrl-C: saving at the end of this iteration (Ctrl-C again to quit "
                             "without saving)\n")
        self.received = signum

    def _install(self) -> None:
        for signum in (self.requeue_signal, *self.stop_signals):
            self._previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._record)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.checkpoint_callback(trainer) is None:
            raise ConfigError("the Preemption callback saves into the ModelCheckpoint's folder: add a "
                              "lightning.pytorch.callbacks.ModelCheckpoint with a fixed dirpath to trainer.callbacks")
        environment = getattr(trainer.strategy, "cluster_environment", None)  # parallel strategies only
        if isinstance(environment, SLURMEnvironment):
            environment.auto_requeue = False  # this callback requeues; Lightning's handler saves inside the handler
        self.received = self.received or pop_early_signal()  # one that came during start-up
        self._install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._checked = getattr(pl_module, "iteration", 0)  # a resumed run counts from where it stopped
        self._install()  # again, over the SIGTERM handler that Lightning installed after setup
        # Lightning noted our handler as the one to restore at its teardown: make that the one before ours.
        originals = getattr(getattr(trainer, "_signal_connector", None), "_original_handlers", None)
        if isinstance(originals, dict):
            for signum, handler in list(originals.items()):
                if getattr(handler, "__func__", None) is Preemption._record and signum in self._previous:
                    originals[signum] = self._previous[signum]

    def _restore(self) -> None:
        """Put back the handlers that were there before: a notebook or a sweep driver lives on after the run."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    # --- at the iteration boundary: agree, save, requeue, stop -------------------------------

    @staticmethod
    def checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
        """The first ModelCheckpoint with a fixed folder: where the signal's checkpoint goes."""
        return next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath),
                    None)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        iteration = getattr(pl_module, "iteration", trainer.fit_loop.total_batch_idx + 1)
        # Every check_every_n_iterations: a batch that reached or passed the next multiple (a batch may hold several
        # iterations, data.iterations_per_batch); the ranks count alike, so they all take part in the collective.
        if iteration // self.check_every == self._checked // self.check_every:
            return
        self._checked = iteration
        signum = self.agreed_signal(trainer)
        if signum:
            # At once, also on an epoch's last batch: the schedulers have stepped in its training step
            # (AdversarialModule._step_schedulers), and what the epoch's end would add (validation, image
            # metrics) can outlast SLURM's warning. The resumed run goes on with the next epoch.
            self.save_and_stop(trainer, signal.Signals(signum), iteration)

    def agreed_signal(self, trainer: L.Trainer) -> int:
        """The largest signal number any rank has received (0: none); a collective: every rank must call it."""
        signum = self.received or 0
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            flag = torch.tensor([signum], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signum = int(flag.item())
        return signum

    def save_and_stop(self, trainer: L.Trainer, signum: signal.Signals, iteration: int) -> None:
        callback = self.checkpoint_callback(trainer)
        path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        # Every rank takes part; rank 0 writes (atomically: AdversarialModule installs SafeCheckpointIO, which
        # writes last.ckpt.partial and renames it, so the previous last.ckpt stays whole until the new one is).
        trainer.save_checkpoint(path, weights_only=False)  # a whole checkpoint (and no log line asking which)
        message = f"gan_lightning: {signum.name} received: saved {path} at iteration {iteration}"
        rank_zero_info(message)
        trainer.strategy.barrier("Preemption.save_and_stop")
        job = slurm_job_id()
        if signum == self.requeue_signal and (self.requeue is True or (self.requeue == "auto" and job is not None)):
            action = f"requeueing SLURM job {job}, which resumes from it"
            if trainer.is_global_zero:  # SLURM then ends this run of the job and starts the next
                rank_zero_info(f"gan_lightning: {action}")
                # srun forwards the tasks' output to the job's log asynchronously, and the requeue ends the
                # step at once: give the lines above the time to reach the log before it does.
                time.sleep(self.LOG_GRACE_SECONDS)
                result = subprocess.run(["scontrol", "requeue", str(job)], capture_output=True, text=True)
                if result.returncode != 0:
                    action = (f"could NOT requeue SLURM job {job} ({result.stderr.strip() or result.returncode}): "
                              "resubmit it; the script's --ckpt_path last resumes from the checkpoint")
                    rank_zero_info(f"gan_lightning: {action}")
        else:
            action = "stopped: run the same command with --ckpt_path last to resume"
            rank_zero_info(f"gan_lightning: {action}")
        self._restore()
        raise Preempted(f"{message}; {action}")


def signal_pending(trainer: L.Trainer) -> bool:
    """Whether a Preemption callback of ``trainer`` holds a signal on any rank, so that the run is about to save
    and stop: measuring callbacks (ImageMetrics, EncoderProbe) then skip their work, which could outlast SLURM's
    warning. A collective under DDP: every rank must call it at the same point."""
    callback = next((cb for cb in trainer.callbacks if isinstance(cb, Preemption)), None)
    return callback is not None and bool(callback.agreed_signal(trainer))
