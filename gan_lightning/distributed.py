"""DDP that communicates once per player: one DistributedDataParallel per network, not one per module.

Lightning wraps the whole LightningModule in one DDP. In a GAN the discriminator's step never touches
the generator, so that DDP needs ``find_unused_parameters=True`` and every backward all-reduces the
gradients of *every* network, zeros included: about twice the bytes that the step updates.

``PlayerDDPStrategy`` instead wraps each network of each player in its own DDP (as Lightning's Fabric
DCGAN example does by hand). A model calls ``self.discriminator(x)`` as always; while training under
this strategy, that attribute resolves to the network's DDP wrapper whenever the call can produce
gradients for it (grad enabled and any of its parameters requiring grad: its player toggled on, in
training or eval mode alike), and to the bare network otherwise. So the discriminator's step all-reduces
D's gradients only, the generator's step G's (and E's), a frozen network used inside the other player's
loss costs no communication, and networks evaluated under ``no_grad`` skip DDP altogether. Checkpoints
keep the networks' own keys.

A network that several players train (the AAE's encoder: reconstruction and regularisation phases, each
with its own optimizer) has one wrapper, which every one of those players' steps goes through. The ranks'
parameters are compared (a checksum per tensor, one all-gather) at every validation and before every
checkpoint is written: ranks that drifted apart stop with ``RanksDivergedError`` naming the networks.

``benchmarks/ddp_communication.py`` measures the bytes with a communication hook on 2 CPU ranks.
"""
import contextlib
import inspect
from collections.abc import Generator
from typing import Any

import torch
from lightning.pytorch.overrides.distributed import _register_ddp_comm_hook, _sync_module_states
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from torch.nn.parallel import DistributedDataParallel

# Buffers are synchronised once at the start, not at every forward (torch 2.14 renamed the argument).
NO_BUFFER_SYNC = ("forward_sync_buffers"
                  if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                  else "broadcast_buffers")


# ``self.log`` options for a value that is already the whole run's: a counter kept alike on every rank, a score
# computed from every rank's share (torchmetrics' compute), or one that rank 0 alone computes and logs. Lightning's
# reduction is then a no-op (``rank_zero_only``: no collective), and ``sync_dist`` tells it that the value needs no
# other, so it does not warn "It is recommended to use self.log(..., sync_dist=True)" at each epoch-level log.
GLOBAL_VALUE = {"sync_dist": True, "rank_zero_only": True}


class RanksDivergedError(RuntimeError):
    """The ranks' copies of a network differ: some update bypassed its all-reduce (see ``check_ranks_agree``)."""


class PlayerDDPStrategy(DDPStrategy):
    """Lightning's DDP strategy with one ``DistributedDataParallel`` per player network.

    Takes DDPStrategy's arguments (``process_group_backend``, ``timeout``, ``ddp_comm_hook``, DDP's own
    keyword arguments such as ``gradient_as_bucket_view`` ...). Buffers (batch-norm statistics) are
    not synchronised at every forward (``forward_sync_buffers=False``); the models take rank 0's buffers
    before each validation instead. ``ddp_comm_hook`` is registered on every network's DDP, on any
    device (Lightning registers hooks on CUDA only).
    """

    strategy_name = "player_ddp"

    def configure_ddp(self) -> None:
        module = self.model
        networks = getattr(module, "player_networks", None)
        if networks is None:
            raise TypeError(f"{type(self).__name__} needs a model that names its players' networks "
                            f"(gan_lightning's models do); {type(module).__name__} does not.")
        _sync_module_states(module)  # every parameter and buffer (EMA too) from rank 0, once
        kwargs = {NO_BUFFER_SYNC: False, **self._ddp_kwargs}
        device_ids = self.determine_ddp_device_ids()
        wrappers = {}
        for name in dict.fromkeys(networks()):  # a network that several players train, wrapped once
            wrappers[name] = DistributedDataParallel(module.get_submodule(name), device_ids=device_ids, **kwargs)
            if self._ddp_comm_hook is not None:
                _register_ddp_comm_hook(model=wrappers[name], ddp_comm_state=self._ddp_comm_state,
                                        ddp_comm_hook=self._ddp_comm_hook, ddp_comm_wrapper=self._ddp_comm_wrapper)
        module.distribute(wrappers)

    def save_checkpoint(self, checkpoint: dict, filepath, storage_options: Any | None = None) -> None:
        """Every rank checks that the ranks' parameters agree, then rank 0 writes.

        ``Trainer.save_checkpoint`` calls this on every rank (ModelCheckpoint, the Preemption callback), so the
        check's all-gather is safe here. Not after an exception (``OnExceptionCheckpoint``), where one rank may be
        saving alone and a collective would hang."""
        module = self.lightning_module
        trainer = getattr(module, "_trainer", None) if module is not None else None
        if trainer is not None and not trainer.interrupted and hasattr(module, "check_ranks_agree"):
            module.check_ranks_agree(f"before checkpoint {filepath} was written (it was not)")
        super().save_checkpoint(checkpoint, filepath, storage_options=storage_options)

    @contextlib.contextmanager
    def block_backward_sync(self) -> Generator:
        """No all-reduce in the backward passes inside (gradient accumulation's intermediate micro-batches)."""
        wrappers = getattr(self.lightning_module, "distributed_networks", {}) if self.lightning_module else {}
        with contextlib.ExitStack() as stack:
            for ddp in wrappers.values():
                stack.enter_context(ddp.no_sync())
            yield None

    def teardown(self) -> None:
        if self.lightning_module is not None and hasattr(self.lightning_module, "distribute"):
            self.lightning_module.distribute({})
        super().teardown()

    @classmethod
    def register_strategies(cls, strategy_registry) -> None:
        strategy_registry.register(cls.strategy_name, cls, description="DDP with one DistributedDataParallel per "
                                   "player network (gan_lightning)")


if PlayerDDPStrategy.strategy_name not in StrategyRegistry:
    PlayerDDPStrategy.register_strategies(StrategyRegistry)


class CommunicationCounter:
    """A DDP communication hook that all-reduces as DDP would and counts the bytes it sends.

    ``PlayerDDPStrategy(ddp_comm_hook=counter.hook)`` (or ``ddp.register_comm_hook(None, counter.hook)``),
    then read ``counter.bytes`` and ``counter.calls``.
    """

    def __init__(self) -> None:
        self.bytes = 0
        self.calls = 0

    def hook(self, state: object | None, bucket: torch.distributed.GradBucket) -> torch.futures.Future[torch.Tensor]:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        buffer = bucket.buffer()
        self.bytes += buffer.numel() * buffer.element_size()
        self.calls += 1
        return allreduce_hook(state, bucket)
