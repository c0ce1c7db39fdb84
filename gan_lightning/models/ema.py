"""Exponential moving averages of a model's networks (``model.ema_decay``): StyleGAN2-ADA's ``G_ema`` for the
buffers (copied, not averaged), TensorFlow's ``ExponentialMovingAverage(num_updates)`` for the warm-up."""
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


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


class MovingAverages:
    """The moving averages of an ``AdversarialModule`` (a mixin of it), kept in ``self.ema``."""

    def add_ema(self, *networks: str) -> None:
        """Keep an exponential moving average of these networks' weights when ``ema_decay`` is set.

        The weights are averaged with TensorFlow's warm-up (``ema_with_warmup``; StyleGAN2-ADA ramps its half-life
        over images seen instead, ``ema_kimg`` and ``ema_rampup``, which this does not follow). The buffers
        (batch-norm running statistics) are copied from the live network at every update, as StyleGAN2-ADA's
        ``G_ema`` does, not averaged:
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
        if self.ema_decay is None:  # no moving averages (and no lookup of the empty ``self.ema`` per iteration)
            return
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

    def net(self, name: str) -> nn.Module:
        """The network to evaluate: its moving average when there is one, else the trained weights."""
        return self.ema[name].module if name in self.ema else self.get_submodule(name)
