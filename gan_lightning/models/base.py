"""What every adversarial model shares: the iteration, its counters and logs, evaluation, and the public API.

A *player* is a set of networks behind one optimizer (e.g. BiGAN: the discriminator D, and the
generator G with the encoder E). Subclasses declare their players with ``add_player`` and write
``update_players`` as their paper's algorithm box, one block per player:

    with self.toggled_optimizer(opt):   # only this player's parameters require grad
        loss = ...
        self.step(opt, loss, player="discriminator")
    return {"train/d_loss": loss.detach()}   # logged every trainer.log_every_n_steps iterations

``training_step`` wraps it: it derives this iteration's randomness from (seed, iteration) before, and
advances the iteration counter and the moving averages after, so that a checkpoint written at any
iteration boundary resumes bit for bit (see ``docs/scaling.md``).
"""
import contextlib
import inspect
from collections.abc import Iterator
from typing import Literal

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from gan_lightning.checkpoints import CheckpointError, SafeCheckpointIO
from gan_lightning.console import say
from gan_lightning.data.loader import Batches, iterations_per_batch
from gan_lightning.distributed import GLOBAL_VALUE, PlayerDDPStrategy
from gan_lightning.errors import ConfigError
from gan_lightning.models.checkpointing import CheckpointState, guard_restore
from gan_lightning.models.device_count import hold_cuda_device_count
from gan_lightning.models.direct_steps import DirectSteps, direct_steps
from gan_lightning.models.ema import MovingAverages, ema_with_warmup
from gan_lightning.models.noise import IterationNoise, seed_training_rng
from gan_lightning.models.nonfinite import NonFiniteGuard
from gan_lightning.models.players import Players
from gan_lightning.models.routing import PlayerRouting

__all__ = ["AdversarialModule", "Prior", "Update", "batch_statistics_only", "ema_with_warmup", "eval_mode",
           "seed_training_rng"]


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Evaluate with batch-norm running statistics and no dropout, then restore each module's mode."""
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, was_training, strict=True):
            m.train(mode)


@contextlib.contextmanager
def batch_statistics_only(module: nn.Module) -> Iterator[None]:
    """Batch norm in ``module`` normalises with the batch's own statistics (as in training) but leaves its
    running statistics alone: for a pass over inputs that eval-mode inference should not average in."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


Prior = Literal["gaussian", "uniform"]
# The order of the players' updates in one iteration: ``alternating`` (D steps, then G against the updated D:
# DCGAN's code, Goodfellow et al.'s Algorithm 1 with k = 1) or ``simultaneous`` (every player's gradients from one
# forward pass through the pre-step D, then every step: ALI's and BiGAN's released code).
Update = Literal["simultaneous", "alternating"]


class AdversarialModule(Players, NonFiniteGuard, IterationNoise, MovingAverages, PlayerRouting, CheckpointState,
                        L.LightningModule):
    """Base class of GAN, ALI/BiGAN, AAE and the VAE baseline: manual optimisation of players in turn.

    Each concept lives in its own mixin: ``Players`` (players.py: declaration, optimizers, toggling, steps),
    ``NonFiniteGuard`` (nonfinite.py), ``IterationNoise`` (noise.py), ``MovingAverages`` (ema.py), ``PlayerRouting``
    (routing.py: one DDP per network) and ``CheckpointState`` (checkpointing.py).

    Args:
        latent_dim: dimension of z.
        prior: p(z): a standard ``gaussian`` or ``uniform`` on [-1, 1]^Z.
        n_critic: discriminator steps per generator step; the generator steps on every
            ``n_critic``-th iteration, so each discriminator step sees a fresh batch.
        ema_decay: decay of an exponential moving average of the generator (and encoder) weights;
            ``sample``, ``encode`` and ``reconstruct`` then use the averaged weights. None: off.
        gradient_clip_val: clip each player's gradient norm to this value (after AMP unscaling). None: off.
        seed: seed of the training noise. Each iteration draws the noise of the whole global batch from a
            generator seeded with (seed, iteration) and keeps this rank's rows, and seeds the global RNG
            (dropout) with (seed, iteration, rank): ranks draw different noise, a resumed run draws the
            same, and W ranks draw together what one process would for the W batches concatenated.
        on_nonfinite: what to do when a player's loss or gradients become NaN or Inf: ``stop`` (raise, naming
            the player and the iteration; checkpoints already written stay intact), ``skip`` (drop that
            player's update, count it in ``train/skipped_<player>``, warn once; stop after
            ``MAX_CONSECUTIVE_SKIPS`` in a row) or ``ignore``. With fp16's loss scaler the scaler skips
            overflowing steps itself and only losses are checked.
        su_lambda: weight of Su's generator regulariser ||G(z) - G_old(z)||^2 (mean over elements;
            Su 2018 used 5), G_old(z) being the output before this iteration's generator updates.
        generator_steps: generator updates per discriminator update, on the same z (Su used 2; the
            regulariser is zero on the first).
        compile: compile every network with ``torch.compile`` (in place: checkpoints keep their keys).
        init_std: start every player's network as the papers' Theano code does: weights ~ N(0, init_std), biases 0,
            batch-norm scale 1 and shift 0 (ALI's image experiments 0.01; PacGAN's toy experiments and BiGAN 0.02;
            see ``nets/init.py``). None: torch's default initialisation.
        bn_momentum: the weight of each batch in batch norm's population statistics, which eval-mode samples
            use (ALI's and PacGAN's code: 0.05). None: torch's 0.1.
    """

    # The order of the players' updates (see ``Update``); GAN, ALI and BiGAN take it as an option, the other
    # models' phases run in turn.
    update: str = "alternating"
    iteration: int      # training iterations (batches) completed: the step users see
    images_seen: int    # training examples consumed, summed over all ranks

    def __init__(
        self,
        latent_dim: int,
        prior: Prior = "gaussian",
        n_critic: int = 1,
        ema_decay: float | None = None,
        gradient_clip_val: float | None = None,
        seed: int = 0,
        on_nonfinite: Literal["stop", "skip", "ignore"] = "stop",
        su_lambda: float = 0.0,
        generator_steps: int = 1,
        compile: bool = False,
        init_std: float | None = None,
        bn_momentum: float | None = None,
    ):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {latent_dim}")
        if n_critic < 1:
            raise ValueError(f"model.n_critic must be >= 1, got {n_critic}")
        if generator_steps < 1 or su_lambda < 0:
            raise ValueError(f"model.generator_steps must be >= 1 and model.su_lambda >= 0, got {generator_steps}, "
                             f"{su_lambda}")
        if (init_std is not None and not init_std > 0) or (bn_momentum is not None and not 0 < bn_momentum <= 1):
            raise ValueError(f"model.init_std must be > 0 or null and model.bn_momentum in (0, 1] or null; got "
                             f"{init_std}, {bn_momentum}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in (0, 1) or null, got {ema_decay}")
        self.automatic_optimization = False
        self.latent_dim, self.prior = latent_dim, prior
        self.n_critic, self.ema_decay, self.gradient_clip_val = n_critic, ema_decay, gradient_clip_val
        if on_nonfinite not in ("stop", "skip", "ignore"):
            raise ValueError(f"model.on_nonfinite must be stop, skip or ignore, got {on_nonfinite!r}")
        self.seed, self.on_nonfinite, self.compile_networks = seed, on_nonfinite, compile
        self.su_lambda, self.generator_steps = su_lambda, generator_steps
        self.init_std, self.bn_momentum = init_std, bn_momentum
        self.iteration = 0
        self.images_seen = 0
        self._players: dict[str, tuple[list[str], OptimizerCallable | None, LRSchedulerCallable | None]] = {}
        self.ema = nn.ModuleDict()
        self.noise: torch.Generator | None = None  # the training noise; see training_step
        self._finite: dict[str, torch.Tensor] = {}  # per player, on the device: first non-finite iteration (-1: none)
        self.skipped: dict[str, int] = {}      # per player: updates skipped for NaN/Inf (on_nonfinite: skip)
        self._skipped_in_a_row: dict[str, int] = {}
        self.scheduler_epochs = 0  # epoch ends at which the schedulers stepped (see _resume_schedulers)
        self._direct: DirectSteps | None = None  # how to call backward and step during fit (see direct_steps)

    def check_update(self, update: str) -> str:
        """Validate a model's ``update`` option (see ``Update``); returns it."""
        if update not in ("simultaneous", "alternating"):
            raise ConfigError(f"model.update must be simultaneous or alternating, got {update!r}")
        if update == "simultaneous" and self.generator_steps > 1:
            raise ConfigError(f"model.generator_steps {self.generator_steps} (Su 2018) takes further generator steps "
                              "against the updated discriminator, which is the alternating order: set model.update "
                              "alternating, or model.generator_steps 1")
        return update

    def setup(self, stage: str) -> None:
        """Write and read checkpoints with ``SafeCheckpointIO`` (atomic, weights-only; see
        ``gan_lightning/checkpoints.py``), and refuse Lightning's one-DDP-per-module strategy, which fails on
        the first player step (or, with ``find_unused_parameters``, all-reduces every network's gradients
        at every step)."""
        strategy = self.trainer.strategy
        if self.update == "simultaneous" and getattr(self.trainer.precision_plugin, "scaler", None):
            raise ConfigError("model.update simultaneous steps two players after one loss scale, which fp16's "
                              "scaler may change between their steps: set trainer.precision bf16-mixed (or 32), or "
                              "model.update alternating")
        per_batch, max_steps = iterations_per_batch(self.trainer), self.trainer.max_steps
        if stage == "fit" and per_batch > 1 and max_steps is not None and max_steps > 0 and max_steps % per_batch:
            raise ConfigError(f"trainer.max_steps {max_steps} is not a multiple of data.iterations_per_batch "
                              f"{per_batch}: a run stops between Lightning's batches, each {per_batch} iterations; "
                              f"set trainer.max_steps {max_steps // per_batch * per_batch or per_batch} or "
                              f"{-(-max_steps // per_batch) * per_batch}, or data.iterations_per_batch 1")
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # atomic writes, weights-only reads
            strategy.checkpoint_io = SafeCheckpointIO()
        guard_restore(self.trainer)  # any failure restoring a checkpoint: one line naming it
        if isinstance(strategy.checkpoint_io, SafeCheckpointIO):  # removes checkpoint files of these folders only
            strategy.checkpoint_io.folders = [cb.dirpath for cb in self.trainer.checkpoint_callbacks
                                              if getattr(cb, "dirpath", None)]
        if stage == "fit" and isinstance(strategy, DDPStrategy) and not isinstance(strategy, PlayerDDPStrategy):
            fix = "set trainer.strategy to player_ddp (one DDP per player network: each step sends only its gradients)"
            if self.update == "simultaneous":
                raise ConfigError(f"model.update simultaneous takes two players' gradients from one forward pass, "
                                  f"which one DDP around the whole {type(self).__name__} cannot all-reduce: {fix}, "
                                  "or set model.update alternating.")
            if not strategy._ddp_kwargs.get("find_unused_parameters"):
                raise ConfigError(f"trainer.strategy {type(strategy).__name__} wraps the whole {type(self).__name__} "
                                  f"in one DDP, which fails when a player's step leaves the other players' "
                                  f"networks unused: {fix}.")
            rank_zero_warn(f"{type(strategy).__name__} with find_unused_parameters all-reduces every network's "
                           f"gradients at every step (twice the bytes of player_ddp): {fix}.")

    def on_train_start(self) -> None:
        self._direct = direct_steps(self, base=AdversarialModule)
        optimizers = self.optimizers() if self._players else []
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        self.__dict__["_player_optimizers"] = dict(zip(self._players, optimizers, strict=True)) if optimizers else None
        # The moving averages' update counts on the host (update_ema), read here rather than in a training step.
        self.__dict__["_ema_counts"] = {name: int(averaged.n_averaged) for name, averaged in self.ema.items()}
        self.__dict__["_fit_place"] = (self.trainer.world_size, self.global_rank, self.device)
        self.__dict__["_nonfinite_flags"] = {}  # each player's flag of NaN or Inf (see NonFiniteGuard._nonfinite)
        # Adam asks torch.cuda.is_available() at every step: counted once per fit (see device_count.py).
        self.__dict__["_release_device_count"] = hold_cuda_device_count()
        self._resume_schedulers()

    def on_train_end(self) -> None:
        self._direct = None
        self.__dict__["_fit_place"] = None
        self.__dict__["_player_optimizers"] = None
        self.__dict__.pop("_release_device_count", lambda: None)()
        if self.on_nonfinite != "ignore":  # a NaN in the run's last log_every_n_steps iterations still stops it
            self.read_nonfinite_flags("at the end of training")

    # --- an iteration: noise, the paper's algorithm, counters ------------------------------------------------

    @property
    def generator_turn(self) -> bool:
        """Whether this iteration ends with the generator's updates (every ``n_critic``-th iteration)."""
        return (self.iteration + 1) % self.n_critic == 0

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """One iteration per batch (each of a ``Batches``: ``data.iterations_per_batch``): seed its randomness, run
        the algorithm (``update_players``), advance the counters; returns the last iteration's logs.

        The counters and the moving averages advance here rather than in ``on_train_batch_end`` because
        callbacks (checkpointing, preemption) run before the module's own hooks: a checkpoint written in
        any ``on_train_batch_end`` then holds an iteration count that matches its weights.
        """
        for one in batch if isinstance(batch, Batches) else (batch,):
            logs = self.train_iteration(one)
        if batch_idx + 1 == self.trainer.num_training_batches:  # the epoch's last batch: see _resume_schedulers
            self._step_schedulers()
        self.count_iterations()
        return logs

    def count_iterations(self) -> None:
        """Lightning's step is our iteration: ``trainer.global_step`` (``max_steps``, ``every_n_train_steps``, the
        ``step`` of checkpoint names and W&B's x-axis) and the logged rows' ``step`` count iterations, whatever the
        number of players, ``n_critic`` and ``data.iterations_per_batch``.

        Lightning counts one step per optimizer step under manual optimisation (Lightning issue #17958): BiGAN's
        two players would end ``max_steps 20`` at iteration 10. Its counters are set here, after the batch's
        iterations and before its callbacks, to ``self.iteration``; checkpoints save them, and
        ``count_steps_in_iterations`` sets those of older checkpoints as they load."""
        epoch_loop = self.trainer.fit_loop.epoch_loop
        steps = epoch_loop.manual_optimization.optim_step_progress.total
        steps.ready = steps.completed = self.iteration
        # Lightning adds 1 after the batch's logs are written, which are then at step iteration - 1 (as with one
        # iteration per batch before), and writes them when (that step + 1) % log_every_n_steps == 0.
        epoch_loop._batches_that_stepped = self.iteration - 1

    def train_iteration(self, batch) -> dict[str, torch.Tensor]:
        """One iteration of the paper's algorithm on one batch, between the counters it advances."""
        self.seed_iteration(self.iteration)
        try:  # not explain_out_of_memory's context manager: a try costs nothing per iteration
            logs = self.update_players(batch)
        except torch.OutOfMemoryError as err:
            raise self.out_of_memory_error(err, batch, "training") from None
        if self.generator_turn:
            self.update_ema()
        self.iteration += 1
        self.images_seen += len(batch[0]) * self.place()[0]
        if self._finite and self.iteration % max(self.trainer.log_every_n_steps, 1) == 0:
            # Here, not in on_train_batch_end: callbacks (checkpoints, preemption) run before the module's hook.
            self.read_nonfinite_flags(f"at iteration {self.iteration}")
        return logs

    def update_players(self, batch) -> dict[str, torch.Tensor]:
        """The paper's algorithm box for one batch: each player's update in turn; returns the logs (detached
        scalars, or detached per-example values, which are averaged only in the iterations whose logs are
        written: every ``trainer.log_every_n_steps``)."""
        raise NotImplementedError

    # --- logs, counters and schedulers --------------------------------------------------------------------

    def on_train_batch_end(self, outputs: dict | None, batch, batch_idx: int) -> None:
        """Log ``training_step``'s returned dict and the counters.

        Logging happens every ``trainer.log_every_n_steps`` iterations only: Lightning's ``self.log``
        costs about 2 ms a call, a few per cent of a small GAN's iteration on a CPU.
        """
        if self._trainer_writes_logs():
            logs = {name: value.mean() if isinstance(value, torch.Tensor) and value.ndim else value
                    for name, value in (outputs or {}).items()}  # per-example values are averaged only now
            self.log_dict({**logs, **self._counters()}, prog_bar=True, on_step=True, on_epoch=False)

    def _trainer_writes_logs(self) -> bool:
        """Whether Lightning writes step logs on this batch (every ``log_every_n_steps`` batches)."""
        connector = getattr(self.trainer, "_logger_connector", None)
        writes = getattr(connector, "should_update_logs", None)
        if writes is None:  # another Lightning: its batches are our iterations with data.iterations_per_batch 1
            return self.iteration % max(self.trainer.log_every_n_steps, 1) == 0
        return bool(writes)

    def _counters(self) -> dict[str, float]:
        skipped = {f"train/skipped_{player}": float(n) for player, n in self.skipped.items()}
        return {"iteration": float(self.iteration), "images_seen": float(self.images_seen), **skipped}

    def on_train_epoch_end(self) -> None:
        # Checkpoint names use {iteration}; the counters are equal on every rank: nothing to reduce.
        self.log_dict(self._counters(), on_step=False, on_epoch=True, **GLOBAL_VALUE)

    def _step_schedulers(self) -> None:
        """Step every player's (per-epoch) scheduler once: at the end of an epoch's last training step.

        Inside ``training_step`` rather than in ``on_train_epoch_end``: a checkpoint written after the epoch's last
        batch (``ModelCheckpoint(every_n_train_steps)`` aligned with the epoch, or a preemption signal there) then
        holds the stepped schedulers, and Lightning, resuming from it, goes on with the next epoch without
        running this one's end again."""
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()
        self.scheduler_epochs += 1

    def _resume_schedulers(self) -> None:
        """A resumed run starts where the checkpoint's schedulers are: at the epoch after the last one stepped.

        The schedulers step in the training step of an epoch's last batch, and Lightning resumes a checkpoint written
        after that batch but before the epoch's end (at the end of a validation that runs only every few epochs)
        in that epoch, with nothing left but its end: its schedulers have stepped once more than its number."""
        epoch = self.trainer.current_epoch
        loop = self.trainer.fit_loop
        batches_done = loop.epoch_progress.total.started > loop.epoch_progress.total.processed \
            and loop.epoch_loop.batch_progress.is_last_batch
        if self.scheduler_epochs == -1:
            self.scheduler_epochs = epoch + batches_done
        if epoch + batches_done != self.scheduler_epochs and self.lr_schedulers():
            raise CheckpointError(
                f"the learning-rate schedulers stepped at {self.scheduler_epochs} epoch ends, but training starts at "
                f"epoch {epoch}{' after its last batch' if batches_done else ''}: the checkpoint's loop state was "
                "edited or written by another program; resume from another checkpoint or start a new run")
        if self.iteration:  # says where a resumed run starts, so that a user (and a test) can see it did resume
            rates = sorted({group["lr"] for opt in self.trainer.optimizers for group in opt.param_groups})
            say(self.trainer, f"gan_lightning: resuming at iteration {self.iteration}, epoch {epoch}"
                f"{' (its end)' if batches_done else ''}, learning rate {', '.join(f'{r:.4g}' for r in rates)}")

    # --- evaluation --------------------------------------------------------------------------

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str,
                 y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The model's held-out figures on one batch, keyed ``{stage}/name``; ``y`` are the batch's labels
        (None for unlabelled data), for the models whose figures need them (the AAEs)."""
        raise NotImplementedError

    def validation_step(self, batch, batch_idx: int) -> None:
        with self.explain_out_of_memory(batch, "validation"):
            metrics = self.evaluate(batch[0], batch_idx, "val", batch[1] if len(batch) > 1 else None)
        self.log_dict(metrics, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        # The counters beside the held-out metrics: every logged row carries its iteration, the x-axis.
        self.log_dict(self._counters(), **GLOBAL_VALUE)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._counters(), **GLOBAL_VALUE)

    def test_step(self, batch, batch_idx: int) -> None:
        with self.explain_out_of_memory(batch, "test"):
            metrics = self.evaluate(batch[0], batch_idx, "test", batch[1] if len(batch) > 1 else None)
        self.log_dict(metrics, sync_dist=True)

    @contextlib.contextmanager
    def explain_out_of_memory(self, batch, stage: str) -> Iterator[None]:
        """Re-raise torch's out-of-memory error with the batch size that caused it and what to change."""
        try:
            yield
        except torch.OutOfMemoryError as err:
            raise self.out_of_memory_error(err, batch, stage) from None

    def out_of_memory_error(self, err: torch.OutOfMemoryError, batch, stage: str) -> torch.OutOfMemoryError:
        """torch's out-of-memory error in a ``stage`` step, restated with the batch size and what to change."""
        n = len(batch[0])
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        setting = "data.batch_size" + (f"={datamodule.hparams.batch_size}" if datamodule is not None else "")
        precision = str(self.trainer.precision) if self._trainer is not None else "32"
        amp = ("" if "bf16" in precision or "16" in precision
               else ", or --trainer.precision bf16-mixed to halve activations")
        torch_says = ". ".join(str(err).splitlines()[0].split(". ")[:3]).rstrip(". ")  # what, how much, free
        device = "GPU" if self.device.type == "cuda" else self.device.type
        return torch.OutOfMemoryError(
            f"out of {device} memory in a {stage} step of {type(self).__name__} with {n} examples per "
            f"device ({setting}; {torch_says}): lower it, e.g. --data.batch_size "
            f"{max(n // 2, 1)}{amp}; checkpoints already written are intact")

    # --- predict: samples, and the encoder's codes and reconstructions (callbacks/predictions.py) ------------

    def configure_callbacks(self) -> list[L.Callback]:
        """``predict`` writes its files with ``callbacks.PredictionWriter``: one with the defaults when the config
        names no prediction writer."""
        from lightning.pytorch.callbacks import BasePredictionWriter

        from gan_lightning.callbacks.predictions import PredictionWriter

        if self._trainer is None or self.trainer.state.fn != "predict" or \
                any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            return []
        return [PredictionWriter()]

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """One batch of the predict split (``GANDataModule.predict_dataloader``: ``(x, y, index)``, index the examples'
        positions in the split): a sample per example ``x`` from the draws ``z_prior`` (``prediction_noise``), and
        with an encoder (``encode`` and ``reconstruct``) the examples ``x_real``, their codes ``z`` and
        ``reconstruction``; ``y`` (labels) and ``index``. Model-range tensors; ``PredictionWriter`` writes them."""
        from gan_lightning.callbacks.predictions import PredictionWriter

        x, y, index = self._predict_batch(batch, batch_idx)
        writers = [cb for cb in self.trainer.callbacks if isinstance(cb, PredictionWriter)]
        with self.explain_out_of_memory((x,), "predict"), torch.no_grad():
            noise = self.prediction_noise(index, writers[0].seed if writers else 0)  # the writer's seed (default 0)
            out = {"index": index, "x": self.sample(**noise), "z_prior": noise["z"]}
            if "labels" in noise:
                out["y_prior"] = noise["labels"]
            if hasattr(self, "encode") and hasattr(self, "reconstruct"):
                out.update(x_real=x, z=self.encode(x), reconstruction=self.reconstruct(x, y))
                if y is not None:
                    out["y"] = y
        return out

    def _predict_batch(self, batch, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(x, labels or None, positions) of a predict batch: ``predict_dataloader``'s (x, y, index), or another
        loader's x, (x,) or (x, y), whose positions are counted on this process."""
        if isinstance(batch, torch.Tensor):
            batch = (batch,)
        if len(batch) == 3:
            return batch[0], batch[1], batch[2].to(torch.long)
        start = 0 if batch_idx == 0 else self.__dict__.get("_predicted", 0)
        self.__dict__["_predicted"] = start + len(batch[0])
        index = torch.arange(start, start + len(batch[0]), device=batch[0].device)
        return batch[0], batch[1] if len(batch) > 1 else None, index

    # Example i of the predict split draws its noise from block i // PREDICT_BLOCK's generator.
    PREDICT_BLOCK = 1024

    def prediction_noise(self, index: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """``sample``'s inputs for the examples at positions ``index``: ``{"z": (n, Z)}``, and ``"labels"`` for a
        decoder that takes classes (the supervised AAE). Example i's are row i % 1024 of 1024 draws with a CPU
        generator seeded with (seed, i // 1024): the same whatever the batch size, the ranks or the device. The
        flow's draws are scaled by its ``temperature``, as its ``sample`` does."""
        index = index.cpu()
        blocks = index.div(self.PREDICT_BLOCK, rounding_mode="floor")
        rows: dict[str, list[torch.Tensor]] = {}
        picked = torch.empty(0, dtype=torch.long)
        for block in blocks.unique().tolist():
            g = torch.Generator().manual_seed(hash((seed, block, -1)) & (2**63 - 1))
            draws = {"z": self.draw_prior(self.PREDICT_BLOCK, g) * getattr(self, "temperature", 1.0)}
            if getattr(self, "class_conditional", False) and "labels" in inspect.signature(self.sample).parameters:
                draws["labels"] = torch.randint(self.n_classes, (self.PREDICT_BLOCK,), generator=g)
            mine = (blocks == block).nonzero().flatten()
            picked = torch.cat([picked, mine])
            for name, value in draws.items():
                rows.setdefault(name, []).append(value[(index[mine] % self.PREDICT_BLOCK).to(value.device)])
        back = torch.empty_like(picked)
        back[picked] = torch.arange(len(picked))  # the rows in the order of index
        return {name: torch.cat(values)[back.to(values[0].device)].to(self.device) for name, values in rows.items()}

    # --- the public API that callbacks and users call ----------------------------------------

    def draw_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from p(z) with the caller's generator (the global RNG when None): (n, Z)."""
        device = generator.device if generator is not None else self.device
        z = torch.rand(n, self.latent_dim, generator=generator, device=device) * 2 - 1 if self.prior == "uniform" \
            else torch.randn(n, self.latent_dim, generator=generator, device=device)
        return z.to(self.device)

    def sample(self, n: int | None = None, z: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """G(z) for z given, or for n draws from the prior: (n, Z) -> (n, *data_shape).

        Draws use ``generator`` when given, so callers get fixed z without touching the training
        noise or the global RNG. Uses the moving-average generator when there is one.
        """
        if z is None:
            z = self.draw_prior(n, generator)
        net = self.net("generator")
        with eval_mode(net):
            return net(z.to(self.device))
