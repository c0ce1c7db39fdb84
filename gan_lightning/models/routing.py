"""Distributed training with one DDP per player network (``trainer.strategy player_ddp``).

``gan_lightning/distributed.py``'s strategy wraps each network in its own DistributedDataParallel; the model
routes calls through a wrapper only while that network can receive gradients, and checks that the ranks' weights
stay identical.
"""
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from gan_lightning.distributed import RanksDivergedError


class PlayerRouting:
    """The DDP routing of an ``AdversarialModule`` (a mixin of it)."""

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
        modules = self.__dict__.get("_modules")  # a network, looked up first: the common case, at every access
        if modules is not None and name in modules:
            return modules[name]
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
        for name, ps in zip(names, params, strict=True):
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
