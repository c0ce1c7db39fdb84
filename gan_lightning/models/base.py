"""What every adversarial model shares: players, their optimizers, the iteration counter, noise, EMA.

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
from typing import Callable, Iterator, Literal, Optional, Sequence

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.optim.swa_utils import AveragedModel

from gan_lightning.checkpoints import CheckpointError, SafeCheckpointIO
from gan_lightning.data.loader import Batches
from gan_lightning.distributed import GLOBAL_VALUE, PlayerDDPStrategy, RanksDivergedError
from gan_lightning.errors import ConfigError
from gan_lightning.losses import su_regulariser
from gan_lightning.models.direct_steps import DirectSteps, FitParameters, by_device_and_dtype, direct_steps


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
        for m, mode in zip(modules, was_training):
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


def ema_with_warmup(decay: float) -> Callable:
    """``AveragedModel``'s ``multi_avg_fn`` for an exponential moving average whose decay ramps up as
    min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's ``ExponentialMovingAverage(num_updates)``), so
    that the average forgets the initial weights within its first updates instead of keeping a share decay ** n.
    The decay stays a tensor on the device: no host synchronisation per update."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = num_averaged.to(averaged[0].device)
        step_decay = torch.clamp((1 + n) / (10 + n), max=decay)
        torch._foreach_lerp_(averaged, current, (1 - step_decay).to(averaged[0].dtype))

    return update


def seed_training_rng(seed: int, device: torch.device) -> None:
    """``torch.manual_seed(seed)`` for the generators a training step draws from: the CPU's and, on a CUDA device,
    that device's. ``torch.manual_seed`` also seeds every other backend (every CUDA device, XPU, MTIA); with a torch
    built for CUDA and no GPU it queues each as a lazy call that formats a stack trace, 0.2 to 0.5 ms a call, every
    iteration (benchmarks/host_overhead.py). Other accelerators (MPS, XPU) keep ``torch.manual_seed``."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()
                                      ].manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)


Prior = Literal["gaussian", "uniform"]
# The order of the players' updates in one iteration: ``alternating`` (D steps, then G against the updated D:
# DCGAN's code, Goodfellow et al.'s Algorithm 1 with k = 1) or ``simultaneous`` (every player's gradients from one
# forward pass through the pre-step D, then every step: ALI's and BiGAN's released code).
Update = Literal["simultaneous", "alternating"]


class AdversarialModule(L.LightningModule):
    """Base class of GAN, ALI/BiGAN, AAE and the VAE baseline: manual optimisation of players in turn.

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
    """

    MAX_CONSECUTIVE_SKIPS = 20  # on_nonfinite: skip stops after this many skipped updates of a player in a row
    # Whether on_nonfinite: stop keeps a flag on the device (read every log_every_n_steps iterations and before
    # every checkpoint) instead of checking each value at once. None: off the CPU only. Tests force it on the CPU.
    defer_nonfinite_checks: Optional[bool] = None

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
        ema_decay: Optional[float] = None,
        gradient_clip_val: Optional[float] = None,
        seed: int = 0,
        on_nonfinite: Literal["stop", "skip", "ignore"] = "stop",
        su_lambda: float = 0.0,
        generator_steps: int = 1,
        compile: bool = False,
    ):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {latent_dim}")
        if n_critic < 1:
            raise ValueError(f"model.n_critic must be >= 1, got {n_critic}")
        if generator_steps < 1 or su_lambda < 0:
            raise ValueError(f"model.generator_steps must be >= 1 and model.su_lambda >= 0, got {generator_steps}, "
                             f"{su_lambda}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in (0, 1) or null, got {ema_decay}")
        self.automatic_optimization = False
        self.latent_dim, self.prior = latent_dim, prior
        self.n_critic, self.ema_decay, self.gradient_clip_val = n_critic, ema_decay, gradient_clip_val
        if on_nonfinite not in ("stop", "skip", "ignore"):
            raise ValueError(f"model.on_nonfinite must be stop, skip or ignore, got {on_nonfinite!r}")
        self.seed, self.on_nonfinite, self.compile_networks = seed, on_nonfinite, compile
        self.su_lambda, self.generator_steps = su_lambda, generator_steps
        self.iteration = 0
        self.images_seen = 0
        self._players: dict[str, tuple[list[str], Optional[OptimizerCallable], Optional[LRSchedulerCallable]]] = {}
        self.ema = nn.ModuleDict()
        self.noise: Optional[torch.Generator] = None  # the training noise; see training_step
        self._finite: dict[str, torch.Tensor] = {}  # per player, on the device: first non-finite iteration (-1: none)
        self.skipped: dict[str, int] = {}      # per player: updates skipped for NaN/Inf (on_nonfinite: skip)
        self._skipped_in_a_row: dict[str, int] = {}
        self.scheduler_epochs = 0  # epoch ends at which the schedulers stepped (see _resume_schedulers)
        self._direct: Optional[DirectSteps] = None  # how to call backward and step during fit (see direct_steps)

    # --- players and their optimizers -------------------------------------------------------

    def add_player(self, name: str, networks: list[str], optimizer: OptimizerCallable,
                   scheduler: Optional[LRSchedulerCallable] = None) -> None:
        """Declare a player: the attribute names of its networks, its optimizer and optional scheduler."""
        self._players[name] = (networks, optimizer, scheduler)

    def add_ema(self, *networks: str) -> None:
        """Keep an exponential moving average of these networks' weights when ``ema_decay`` is set.

        As StyleGAN2-ADA's ``G_ema``: the weights are averaged, with a warm-up (``ema_with_warmup``), and the
        buffers (batch-norm running statistics) are copied from the live network at every update, not averaged:
        an average of running statistics that starts from their initial values (variance 1) keeps a share
        ``decay ** n`` of them, and normalises the averaged network's activations to a flat grey output."""
        if self.ema_decay is None:
            return
        for name in networks:
            averaged = AveragedModel(getattr(self, name), multi_avg_fn=ema_with_warmup(self.ema_decay),
                                     use_buffers=False)
            self.ema[name] = averaged.requires_grad_(False)

    def update_ema(self) -> None:
        """One update of every moving average: the weights averaged, the buffers copied from the live network.

        What ``AveragedModel.update_parameters`` (``use_buffers=False``) does, without its two reads of the update
        count on the host (``bool(n_averaged == 0)``, ``n_averaged > 0``), which wait for the device at every
        update on an accelerator: the count is mirrored on the host, read once per fit."""
        counts = self.__dict__.setdefault("_ema_counts", {})
        for name, averaged in self.ema.items():
            live = self.get_submodule(name)
            if name not in counts:
                counts[name] = int(averaged.n_averaged)  # outside fit (fit reads them in on_train_start)
            ours = [p.detach() for p in averaged.module.parameters()]
            theirs = [p.detach() for p in live.parameters()]
            if counts[name] == 0:
                torch._foreach_copy_(ours, theirs)
            else:
                averaged.multi_avg_fn(ours, theirs, averaged.n_averaged)
            buffers = [b.detach() for b in averaged.module.buffers()]
            if buffers:
                torch._foreach_copy_(buffers, [b.detach() for b in live.buffers()])
            averaged.n_averaged += 1
            counts[name] += 1

    def check_update(self, update: str) -> str:
        """Validate a model's ``update`` option (see ``Update``); returns it."""
        if update not in ("simultaneous", "alternating"):
            raise ConfigError(f"model.update must be simultaneous or alternating, got {update!r}")
        if update == "simultaneous" and self.generator_steps > 1:
            raise ConfigError(f"model.generator_steps {self.generator_steps} (Su 2018) takes further generator steps "
                              "against the updated discriminator, which is the alternating order: set model.update "
                              "alternating, or model.generator_steps 1")
        return update

    def player_networks(self) -> list[str]:
        """The attribute names of every player's networks, in the order the players were declared."""
        return [name for networks, _, _ in self._players.values() for name in networks]

    # --- distributed training: one DDP per network (see gan_lightning/distributed.py) ---------

    def distribute(self, wrappers: dict[str, nn.Module]) -> None:
        """Route calls of these networks through their DDP wrappers while they can receive gradients.

        The wrappers live outside the module tree (``self.__dict__``), so state dicts and checkpoints
        keep the networks' own keys. ``{}`` removes them.
        """
        self.__dict__["_distributed"] = dict(wrappers)
        # Each network's parameters, listed once here: the routing below looks at them on every access.
        self.__dict__["_distributed_parameters"] = {name: list(ddp.module.parameters())
                                                    for name, ddp in wrappers.items()}

    @property
    def distributed_networks(self) -> dict[str, nn.Module]:
        return self.__dict__.get("_distributed", {})

    def __getattr__(self, name: str):
        """``self.discriminator`` is D's DDP wrapper whenever a call could produce gradients for D: grad enabled
        and *any* of its parameters requiring grad (its player toggled on), in training or eval mode alike.
        Otherwise (under ``no_grad``, or while another player steps and D is frozen), and without DDP, the
        network itself: such a call sends nothing, and needs to send nothing."""
        wrappers = self.__dict__.get("_distributed")
        if wrappers and name in wrappers and torch.is_grad_enabled():
            if any(p.requires_grad for p in self.__dict__["_distributed_parameters"][name]):
                return wrappers[name]
        return super().__getattr__(name)

    def check_ranks_agree(self, when: str) -> None:
        """Stop every rank, naming the networks, if the ranks' parameters are not identical (under DDP they
        must be: each update applies the same all-reduced gradients). A checksum per parameter tensor (its sum
        and norm, in float64), gathered once: one pass over the weights and one small all-gather, at each
        validation and before each checkpoint. ``when``: where it runs, for the message ("at validation")."""
        from lightning.pytorch.strategies import DeepSpeedStrategy

        if self._trainer is None or self.trainer.world_size < 2 or not torch.distributed.is_initialized():
            return
        strategy = self.trainer.strategy
        if not isinstance(strategy, DDPStrategy) or isinstance(strategy, DeepSpeedStrategy):
            return  # sharded strategies (FSDP, DeepSpeed) hold different parts of the weights on each rank
        names = list(dict.fromkeys(self.player_networks()))  # a network of several players, once
        params = [[p.detach() for p in self._modules[name].parameters()] for name in names]
        if not any(params):
            return
        sums = torch.stack([torch.stack([p.sum(dtype=torch.float64), torch.linalg.vector_norm(p, dtype=torch.float64)])
                            for ps in params for p in ps])
        gathered = [torch.empty_like(sums) for _ in range(self.trainer.world_size)]
        torch.distributed.all_gather(gathered, sums)  # not strategy.all_gather: its torch call is deprecated
        gathered = torch.stack(gathered)  # (world, tensors, 2), the same on every rank
        same = (gathered == gathered[0]) | (gathered.isnan() & gathered[0].isnan())
        same_per_tensor = same.flatten(2).all(dim=2)  # (world, tensors)
        differ, start = {}, 0
        for name, ps in zip(names, params):
            ranks = [r for r in range(len(gathered)) if not bool(same_per_tensor[r, start : start + len(ps)].all())]
            start += len(ps)
            if ranks:
                differ[name] = ranks
        if not differ:
            return
        ranks = sorted({r for rs in differ.values() for r in rs})
        raise RanksDivergedError(
            f"the parameters of {', '.join(differ)} differ between rank 0 and rank{'s' if len(ranks) > 1 else ''} "
            f"{', '.join(map(str, ranks))} {when} (iteration {self.iteration}): the ranks have drifted apart, so "
            "training stops before a checkpoint records one rank's weights as everyone's. Some update bypassed its "
            "network's DDP all-reduce (e.g. a network called through a reference kept from before training, or "
            "weights changed on one rank by a callback); resume from the last checkpoint written before this one, "
            "and report it if it happens again")

    def setup(self, stage: str) -> None:
        """Write and read checkpoints with ``SafeCheckpointIO`` (atomic, weights-only; see
        ``gan_lightning/checkpoints.py``), and refuse Lightning's one-DDP-per-module strategy, which fails on
        the first player step (or, with ``find_unused_parameters``, all-reduces every network's gradients
        at every step)."""
        from lightning.pytorch.strategies import DDPStrategy

        from gan_lightning.distributed import PlayerDDPStrategy

        strategy = self.trainer.strategy
        if self.update == "simultaneous" and getattr(self.trainer.precision_plugin, "scaler", None):
            raise ConfigError("model.update simultaneous steps two players after one loss scale, which fp16's "
                              "scaler may change between their steps: set trainer.precision bf16-mixed (or 32), or "
                              "model.update alternating")
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # atomic writes, weights-only reads
            strategy.checkpoint_io = SafeCheckpointIO()
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

    def configure_model(self) -> None:
        if self.compile_networks:
            for networks, _, _ in self._players.values():
                for name in networks:
                    getattr(self, name).compile()

    def configure_optimizers(self):
        optimizers, schedulers = [], []
        for player, (networks, make_optimizer, make_scheduler) in self._players.items():
            params = [p for name in networks for p in getattr(self, name).parameters()]
            try:
                optimizers.append(make_optimizer(params))
            except ValueError as err:  # torch's check of lr, betas, eps, weight_decay
                raise ConfigError(f"the {player} player's optimizer refuses its settings ({err}): fix that value in "
                                  f"the model's optimizer options (e.g. model.init_args.optimizer_*.init_args.lr)") from None
            if make_scheduler is not None:
                schedulers.append({"scheduler": make_scheduler(optimizers[-1]), "interval": "epoch"})
        return optimizers, schedulers

    def optimizer(self, player: str):
        """The LightningOptimizer of a player, by name (kept per fit: ``self.optimizers()`` builds a list)."""
        kept = self.__dict__.get("_player_optimizers")
        if kept is not None:
            return kept[player]
        optimizers = self.optimizers()  # Lightning returns a lone optimizer unwrapped
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return optimizers[list(self._players).index(player)]

    def step(self, optimizer, loss: torch.Tensor, player: str) -> None:
        """One update of a player: zero its gradients, backpropagate, check the loss and gradients are finite
        (``on_nonfinite``), step."""
        self._backward(optimizer, loss)
        self._step_if_finite(optimizer, loss, player)

    def step_together(self, *updates: tuple) -> None:
        """Simultaneous updates, as ALI's and BiGAN's released code make them: each ``(optimizer, loss, player)``
        takes the gradients of its loss with respect to its own parameters only, all from the same graph and so
        from the same forward pass through every network (e.g. D as it was before either step), and only then
        does any player step. Under ``player_ddp`` each network is still all-reduced once, by its own backward."""
        for k, (optimizer, loss, player) in enumerate(updates):
            own = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
            self._backward(optimizer, loss, inputs=own, retain_graph=k + 1 < len(updates))
        for optimizer, loss, player in updates:
            self._step_if_finite(optimizer, loss, player)

    # --- Lightning's backward and optimizer step, without its per-call wrappers where they do nothing ---------

    def on_train_start(self) -> None:
        self._direct = direct_steps(self, base=AdversarialModule)
        optimizers = self.optimizers() if self._players else []
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        self.__dict__["_player_optimizers"] = dict(zip(self._players, optimizers)) if optimizers else None
        # The moving averages' update counts on the host (update_ema), read here rather than in a training step.
        self.__dict__["_ema_counts"] = {name: int(averaged.n_averaged) for name, averaged in self.ema.items()}
        self.__dict__["_fit_place"] = (self.trainer.world_size, self.global_rank, self.device)
        self._resume_schedulers()

    def on_train_end(self) -> None:
        self._direct = None
        self.__dict__["_fit_place"] = None
        self.__dict__["_player_optimizers"] = None
        if self.on_nonfinite != "ignore":  # a NaN in the run's last log_every_n_steps iterations still stops it
            self.read_nonfinite_flags("at the end of training")

    def _backward(self, optimizer, loss: torch.Tensor, **backward_kwargs) -> None:
        """``optimizer.zero_grad`` and ``self.manual_backward(loss)``: directly, with the same hooks, when
        ``direct_steps`` found Lightning's wrappers would only pass the call on."""
        optimizer.zero_grad(set_to_none=True)
        direct = self.__dict__.get("_direct")
        if direct is None:
            self.manual_backward(loss, **backward_kwargs)
            return
        if direct.overridden["on_before_backward"]:
            direct.call_hooks("on_before_backward", loss)
        loss.backward(**backward_kwargs)
        if direct.overridden["on_after_backward"]:
            direct.call_hooks("on_after_backward")

    def _optimizer_step(self, optimizer) -> None:
        """``optimizer.step()`` of a LightningOptimizer: Lightning's step counting (``trainer.global_step``) and
        ``on_before_optimizer_step`` hooks (the module's gradient clipping), directly when ``direct_steps`` allows."""
        direct = self.__dict__.get("_direct")
        if direct is None:
            optimizer.step()
            return
        optimizer._on_before_step()
        if direct.overridden["on_before_optimizer_step"]:
            direct.call_hooks("on_before_optimizer_step", optimizer.optimizer)
        elif self.gradient_clip_val is not None:
            self.on_before_optimizer_step(optimizer.optimizer)
        optimizer.optimizer.step()
        optimizer._on_after_step()

    # --- NaN and Inf (model.on_nonfinite) ---------------------------------------------------------------------

    def _step_if_finite(self, optimizer, loss: torch.Tensor, player: str) -> None:
        """Step a player whose gradients are in place, unless they (or its loss) are not finite (``on_nonfinite``)."""
        if self.on_nonfinite == "ignore" or getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            self._optimizer_step(optimizer)
            return
        found = self._nonfinite(optimizer, loss)
        if self.on_nonfinite == "stop":
            defer = self.defer_nonfinite_checks if self.defer_nonfinite_checks is not None else found.device.type != "cpu"
            if defer:  # per player, on the device: the first iteration whose values were not finite (-1: none yet)
                first = self._finite.get(player, torch.full((), -1, dtype=torch.long, device=found.device))
                self._finite[player] = torch.where((first < 0) & (found[0] > 0), self.iteration, first)
            elif found.item():
                self._raise_nonfinite_values(optimizer, loss, player)
            self._optimizer_step(optimizer)
        elif self._finite_on_every_rank(found):
            self._skipped_in_a_row[player] = 0
            self._optimizer_step(optimizer)
        else:
            self._skip(optimizer, player, loss)

    def _nonfinite(self, optimizer, loss: torch.Tensor) -> torch.Tensor:
        """A (1,) tensor on the loss's device, > 0 when the loss or any of the player's gradients holds NaN or Inf.

        One fused kernel per device and dtype of the gradients: the check of torch's AMP grad scaler at scale 1,
        which leaves the values as they are (x * 1 is x, NaN and Inf included); the loss joins the check as a
        view. A norm per tensor and their total norm, the usual check, costs 8 times more host time on small
        networks (113 against 13 µs a player step, in isolation)."""
        tensors = [loss.detach().view(1)]
        found = torch.zeros(1, device=loss.device)
        lists = self._fit_parameters()
        torch_optimizer = getattr(optimizer, "optimizer", optimizer)
        groups = (lists.groups[id(torch_optimizer)] if lists is not None else
                  by_device_and_dtype([p for group in torch_optimizer.param_groups for p in group["params"]]))
        for (device, dtype), params in groups.items():
            grads = [p.grad for p in params if p.grad is not None]
            if device == loss.device and dtype == loss.dtype:
                grads.append(tensors.pop())
            if grads:
                found_here = found if device == loss.device else torch.zeros(1, device=device)
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found_here, self._unit_scale(device))
                if found_here is not found:
                    found += found_here.to(loss.device)
        if tensors:  # no gradient shares the loss's device and dtype
            torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, self._unit_scale(loss.device))
        return found

    def _unit_scale(self, device: torch.device) -> torch.Tensor:
        scales = self.__dict__.setdefault("_unit_scales", {})
        if device not in scales:
            scales[device] = torch.ones(1, device=device)
        return scales[device]

    # --- which parameters take gradients: Lightning's toggle_optimizer, with the parameter lists kept ---------

    def toggle_optimizer(self, optimizer) -> None:
        """Only ``optimizer``'s parameters require gradients (Lightning's ``toggle_optimizer``: the other
        optimizers' parameters are frozen, their states kept for ``untoggle_optimizer``), from lists built once per
        fit (``_fit_parameters``): Lightning rebuilds them and hashes every parameter at each call."""
        lists = self._fit_parameters()
        if lists is None:
            return super().toggle_optimizer(optimizer)
        others = lists.others[id(getattr(optimizer, "optimizer", optimizer))]
        self.__dict__["_toggled_states"] = [p.requires_grad for p in others]
        for p in others:
            p.requires_grad = False

    def untoggle_optimizer(self, optimizer) -> None:
        lists = self._fit_parameters()
        if lists is None:
            return super().untoggle_optimizer(optimizer)
        for p, state in zip(lists.others[id(getattr(optimizer, "optimizer", optimizer))],
                            self.__dict__.pop("_toggled_states")):
            p.requires_grad = state

    def _fit_parameters(self) -> Optional[FitParameters]:
        """Each optimizer's parameter lists for toggling and the non-finite check, kept while ``direct_steps``
        holds (during fit); None otherwise (Lightning's toggling, and the check's groups built per call)."""
        direct = self.__dict__.get("_direct")
        if direct is None:
            return None
        cached = self.__dict__.get("_fit_parameter_lists")
        if cached is None or cached[0] is not direct:
            cached = (direct, FitParameters.of(self.trainer.optimizers))
            self.__dict__["_fit_parameter_lists"] = cached
        return cached[1]

    def _raise_nonfinite_values(self, optimizer, loss: torch.Tensor, player: str):
        """Name what is not finite: the loss, else the gradients' total norm (computed only now)."""
        if not torch.isfinite(loss.detach()).all():
            self._raise_nonfinite(player, f"is {loss.item()} at iteration {self.iteration}")
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([g.float() for g in torch._foreach_norm(grads)]))
        self._raise_nonfinite(player, f"is {norm.item()} at iteration {self.iteration}", what="gradient norm")

    def _finite_on_every_rank(self, found: torch.Tensor) -> bool:
        """Whether no rank found NaN or Inf (``_nonfinite``): skipping must be unanimous, one synchronisation."""
        ok = (found == 0).to(torch.int32)
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
        return bool(ok)

    def _skip(self, optimizer, player: str, loss: torch.Tensor) -> None:
        """Drop this update of ``player`` (on_nonfinite: skip): no optimizer step, gradients cleared."""
        optimizer.zero_grad(set_to_none=True)
        self.skipped[player] = self.skipped.get(player, 0) + 1
        self._skipped_in_a_row[player] = self._skipped_in_a_row.get(player, 0) + 1
        if self._skipped_in_a_row[player] >= self.MAX_CONSECUTIVE_SKIPS:
            self._raise_nonfinite(player, f"were NaN or Inf in {self.MAX_CONSECUTIVE_SKIPS} iterations in a row, up "
                                          f"to iteration {self.iteration} (each update skipped): the model is not "
                                          "recovering", what="loss or gradients")
        if self.skipped[player] == 1:
            rank_zero_warn(f"the {player} loss or gradients are NaN or Inf at iteration {self.iteration} (loss "
                           f"{loss.item():.4g}): skipping that update (model.on_nonfinite=skip); skipped updates "
                           f"are counted in train/skipped_{player}")

    def generator_updates(self, optimizer, player: str, outputs: tuple, regenerate: Callable[[], tuple],
                          loss: Callable[..., torch.Tensor]) -> torch.Tensor:
        """``generator_steps`` updates of the generating player on the same z (Su 2018).

        ``outputs`` are this iteration's generator outputs, x_fake first (and e.g. E(x) after it);
        ``regenerate()`` recomputes them with the updated parameters for the second and later steps;
        ``loss(*outputs)`` is the adversarial loss. Su's regulariser holds x_fake near G_old(z), the
        first x_fake, detached. Returns the last loss, detached.
        """
        x_old = outputs[0].detach()
        for k in range(self.generator_steps):
            if k > 0:
                outputs = regenerate()
            with self.toggled_optimizer(optimizer):
                total = loss(*outputs)
                if self.su_lambda:
                    total = total + self.su_lambda * su_regulariser(outputs[0], x_old)
                self.step(optimizer, total, player=player)
        return total.detach()

    def on_before_optimizer_step(self, optimizer) -> None:
        # Runs after the mixed-precision scaler has unscaled the gradients (Lightning #18089).
        if self.gradient_clip_val is None:
            return
        if getattr(self.trainer.precision_plugin, "scaler", None) is None:
            # fp32 and bf16: no loss scaling, so the gradients are true ones and clipping them directly is
            # right for every optimizer (Lightning's clip_gradients refuses fused Adam under any AMP).
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
        else:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")

    def read_nonfinite_flags(self, before: str) -> None:
        """Read the device flags of ``_step_if_finite`` (one synchronisation) and stop, naming the player that went
        NaN or Inf first and that iteration, if any did since the last read; ``before``: what the read precedes."""
        flags, self._finite = self._finite, {}
        if not flags:
            return
        firsts = dict(zip(flags, torch.stack(list(flags.values())).tolist()))
        bad = {player: first for player, first in firsts.items() if first >= 0}
        if bad:
            player = min(bad, key=bad.get)
            self._raise_nonfinite(player, f"or gradient norm became NaN or Inf at iteration {bad[player]} (found "
                                          f"{before})")

    def _raise_nonfinite(self, player: str, when: str, what: str = "loss"):
        skip = "" if self.on_nonfinite == "skip" else ", or set model.on_nonfinite skip to drop such updates"
        raise FloatingPointError(
            f"the {player} {what} {when}. Lower the learning rate, set model.gradient_clip_val or use a stabler "
            f"loss{skip}; the checkpoints already on disk are intact.")

    @property
    def generator_turn(self) -> bool:
        """Whether this iteration ends with the generator's updates (every ``n_critic``-th iteration)."""
        return (self.iteration + 1) % self.n_critic == 0

    # --- noise, counters, EMA ----------------------------------------------------------------

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
        return logs

    def train_iteration(self, batch) -> dict[str, torch.Tensor]:
        """One iteration of the paper's algorithm on one batch, between the counters it advances."""
        self.seed_iteration(self.iteration)
        with self.explain_out_of_memory(batch, "training"):
            logs = self.update_players(batch)
        if self.generator_turn:
            self.update_ema()
        self.iteration += 1
        self.images_seen += len(batch[0]) * self.place()[0]
        if self._finite and self.iteration % max(self.trainer.log_every_n_steps, 1) == 0:
            # Here, not in on_train_batch_end: callbacks (checkpoints, preemption) run before the module's hook.
            self.read_nonfinite_flags(f"at iteration {self.iteration}")
        return logs

    def update_players(self, batch) -> dict[str, torch.Tensor]:
        """The paper's algorithm box for one batch: each player's update in turn; returns the logs."""
        raise NotImplementedError

    def seed_iteration(self, iteration: int) -> None:
        """Derive an iteration's randomness from (seed, iteration): ``self.noise`` for the global batch's
        noise, and the global RNG (dropout) from (seed, iteration, rank)."""
        _, rank, device = self.place()
        if self.noise is None or self.noise.device != device:
            self.noise = torch.Generator(device=device)
        # Tuples of ints hash the same in every process and every Python run (no hash randomisation).
        self.noise.manual_seed(hash((self.seed, iteration)) & (2**63 - 1))
        seed_training_rng(hash((self.seed, iteration, rank)) & (2**63 - 1), device)

    def place(self) -> tuple[int, int, torch.device]:
        """(world size, this process's rank, device): kept per fit (``on_train_start``), read from the trainer
        otherwise; a training iteration reads them several times, at about 1 µs a property."""
        place = self.__dict__.get("_fit_place")
        if place is None:
            world, rank = (self.trainer.world_size, self.global_rank) if self._trainer is not None else (1, 0)
            place = (world, rank, self.device)
        return place

    def rank_rows(self, draw: Callable[[int], torch.Tensor], n: int) -> torch.Tensor:
        """This rank's n rows of ``draw(n * world_size)``: noise drawn for the whole global batch, so that
        training on W ranks equals training on one process with the W batches concatenated."""
        world, rank, _ = self.place()
        return draw(n) if world == 1 else draw(n * world)[rank * n : (rank + 1) * n]

    def draw_training_prior(self, n: int) -> torch.Tensor:
        """This iteration's n draws from p(z) for this rank's batch: (n, Z)."""
        return self.rank_rows(lambda m: self.draw_prior(m, self.noise), n)

    def draw_training_normal(self, shape: Sequence[int]) -> torch.Tensor:
        """This iteration's standard normal noise of ``shape`` (first dimension: this rank's batch)."""
        return self.rank_rows(lambda m: torch.randn(m, *shape[1:], generator=self.noise, device=self.noise.device),
                              shape[0])

    def draw_training_uniform(self, n: int) -> torch.Tensor:
        """This iteration's n draws from U[0, 1] for this rank's batch (e.g. WGAN-GP's interpolation weights)."""
        return self.rank_rows(lambda m: torch.rand(m, generator=self.noise, device=self.noise.device), n)

    def on_train_batch_end(self, outputs: Optional[dict], batch, batch_idx: int) -> None:
        """Log ``training_step``'s returned dict and the counters.

        Logging happens every ``trainer.log_every_n_steps`` iterations only: Lightning's ``self.log``
        costs about 2 ms a call, a few per cent of a small GAN's iteration on a CPU.
        """
        if self._trainer_writes_logs():
            self.log_dict({**(outputs or {}), **self._counters()}, prog_bar=True, on_step=True, on_epoch=False)

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
        """A resumed run starts where the checkpoint's schedulers are: at the epoch after the last one stepped."""
        if self.scheduler_epochs == -1:
            self.scheduler_epochs = self.trainer.current_epoch
        if self.trainer.current_epoch != self.scheduler_epochs and self.lr_schedulers():
            raise CheckpointError(
                f"the learning-rate schedulers stepped at {self.scheduler_epochs} epoch ends, but training starts at "
                f"epoch {self.trainer.current_epoch}: the checkpoint was written by an older gan_lightning or "
                "edited; resume from an epoch checkpoint or start a new run")
        if self.iteration:  # says where a resumed run starts, so that a user (and a test) can see it did resume
            rates = sorted({group["lr"] for opt in self.trainer.optimizers for group in opt.param_groups})
            rank_zero_info(f"gan_lightning: resuming at iteration {self.iteration}, epoch {self.trainer.current_epoch}, "
                           f"learning rate {', '.join(f'{r:.4g}' for r in rates)}")

    def on_validation_epoch_start(self) -> None:
        """Every rank takes rank 0's buffers (batch-norm running statistics, EMA counts) before measuring.

        The networks are called directly, not through DDP's forward, so DDP never broadcasts buffers: each
        rank's running statistics follow its own batches. Evaluation uses them, so without this the ranks
        would measure slightly different models, none of them quite the one rank 0 checkpoints.
        """
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            self.check_ranks_agree("at validation")
            for buffer in self.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def net(self, name: str) -> nn.Module:
        """The network to evaluate: its moving average when there is one, else the trained weights."""
        return self.ema[name].module if name in self.ema else self.get_submodule(name)

    # --- evaluation --------------------------------------------------------------------------

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str,
                 y: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
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
            n = len(batch[0])
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            setting = f"data.batch_size={datamodule.hparams.batch_size}" if datamodule is not None else "data.batch_size"
            precision = str(self.trainer.precision) if self._trainer is not None else "32"
            amp = "" if "bf16" in precision or "16" in precision else ", or --trainer.precision bf16-mixed to halve activations"
            torch_says = ". ".join(str(err).splitlines()[0].split(". ")[:3]).rstrip(". ")  # what, how much, free
            device = "GPU" if self.device.type == "cuda" else self.device.type
            raise torch.OutOfMemoryError(
                f"out of {device} memory in a {stage} step of {type(self).__name__} with {n} examples per "
                f"device ({setting}; {torch_says}): lower it, e.g. --data.batch_size "
                f"{max(n // 2, 1)}{amp}; checkpoints already written are intact") from None

    # --- the public API that callbacks and users call ----------------------------------------

    def draw_prior(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n draws from p(z) with the caller's generator (the global RNG when None): (n, Z)."""
        device = generator.device if generator is not None else self.device
        z = torch.rand(n, self.latent_dim, generator=generator, device=device) * 2 - 1 if self.prior == "uniform" \
            else torch.randn(n, self.latent_dim, generator=generator, device=device)
        return z.to(self.device)

    def sample(self, n: Optional[int] = None, z: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """G(z) for z given, or for n draws from the prior: (n, Z) -> (n, *data_shape).

        Draws use ``generator`` when given, so callers get fixed z without touching the training
        noise or the global RNG. Uses the moving-average generator when there is one.
        """
        if z is None:
            z = self.draw_prior(n, generator)
        net = self.net("generator")
        with eval_mode(net):
            return net(z.to(self.device))

    # --- checkpoints ------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.on_nonfinite != "ignore":  # no checkpoint holds NaN or Inf weights or optimizer state
            self.read_nonfinite_flags(f"before the checkpoint at iteration {self.iteration}, which was not written")
            self._refuse_nonfinite_state(checkpoint)
        checkpoint["gan_lightning"] = {"model": type(self).__name__, "iteration": self.iteration,
                                       "images_seen": self.images_seen, "skipped": dict(self.skipped),
                                       "scheduler_epochs": self.scheduler_epochs}

    def _refuse_nonfinite_state(self, checkpoint: dict) -> None:
        """Raise, naming the first tensor, when the weights or optimizer states about to be saved hold NaN or Inf
        (one ``isfinite().all()`` per tensor and one host read, at checkpoint time only)."""
        named = [(f"weight {k}", v) for k, v in checkpoint.get("state_dict", {}).items()]
        named += [(f"optimizer {i} state {n}.{k}", v) for i, opt in enumerate(checkpoint.get("optimizer_states", []))
                  for n, entries in opt.get("state", {}).items() for k, v in entries.items()]
        named = [(name, t) for name, t in named if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
        if not named:
            return
        finite = torch.stack([t.detach().isfinite().all().to(named[0][1].device) for _, t in named])
        if bool(finite.all()):
            return
        culprit = named[int((~finite).nonzero()[0])][0]
        raise FloatingPointError(
            f"the {culprit} is NaN or Inf at iteration {self.iteration}, so its checkpoint was not written (the "
            "ones already on disk are intact). Lower the learning rate, set model.gradient_clip_val or use a "
            "stabler loss, and resume from the last checkpoint")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("gan_lightning", {})
        if saved.get("model", type(self).__name__) != type(self).__name__:
            raise CheckpointError(f"this checkpoint holds a {saved['model']} model, but the config builds a "
                             f"{type(self).__name__}: pass the checkpoint of a {type(self).__name__} run, "
                             f"or set model.class_path to {saved['model']}.")
        self._refuse_other_shapes(checkpoint)
        self.iteration = saved.get("iteration", 0)
        self.images_seen = saved.get("images_seen", 0)
        self.skipped = dict(saved.get("skipped", {}))
        self.scheduler_epochs = saved.get("scheduler_epochs", -1)  # -1: an older checkpoint, which did not count
        self.__dict__.pop("_ema_counts", None)  # the loaded counts are read again (on_train_start, update_ema)

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
        raise CheckpointError(
            f"this checkpoint's {type(self).__name__} has other shapes than the config builds "
            f"({'; '.join(differ) or 'same settings'}; {misfits[0]}{f' and {len(misfits) - 1} more' if len(misfits) > 1 else ''}): "
            f"set those values as the checkpoint has them to resume it, or start without --ckpt_path")
