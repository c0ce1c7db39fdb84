"""Lightning's backward and optimizer step, called directly where its wrappers would only pass them on.

``LightningModule.manual_backward`` and ``LightningOptimizer.step`` go through the strategy and the precision
plugin, which call the ``on_before_backward``, ``on_after_backward`` and ``on_before_optimizer_step`` hooks of
every callback and of the module, and then ``loss.backward()`` and ``optimizer.step()``. On one device or under
``player_ddp``, in 32-bit or bf16 precision, they do nothing else, and cost about 0.1 ms of host time per player
step (``benchmarks/host_overhead.py``). ``direct_steps`` says when that holds and which of those hooks someone
overrides; the models then make the calls themselves, and call the overridden hooks through Lightning's own
hook dispatch, in Lightning's order (callbacks, then the module). Any other strategy or precision plugin (fp16's
loss scaler, FSDP, DeepSpeed, XLA) and a module with its own ``backward`` keep Lightning's path.
"""
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.trainer import call

from gan_lightning.distributed import PlayerDDPStrategy

HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


@dataclass(frozen=True)
class DirectSteps:
    """The trainer, and for each hook in ``HOOKS`` whether a callback or the module overrides it."""

    trainer: L.Trainer
    overridden: dict[str, bool]

    def call_hooks(self, hook: str, *args: Any) -> None:
        """A hook of every callback, then of the module, as the precision plugin calls it."""
        call._call_callback_hooks(self.trainer, hook, *args)
        call._call_lightning_module_hook(self.trainer, hook, *args)


def direct_steps(module: L.LightningModule, base: type) -> DirectSteps | None:
    """The ``DirectSteps`` of ``module``'s trainer, or None where Lightning's wrappers do more than pass the calls
    on. ``base``: the class whose hooks the module may call itself (an override in a subclass of it counts)."""
    trainer = module.trainer
    precision = trainer.precision_plugin
    if type(trainer.strategy) not in (SingleDeviceStrategy, PlayerDDPStrategy):
        return None
    if type(precision) not in (Precision, MixedPrecision) or getattr(precision, "scaler", None) is not None:
        return None
    if type(module).backward is not L.LightningModule.backward:
        return None
    overridden = {hook: getattr(type(module), hook) is not getattr(base, hook)
                  or any(getattr(type(cb), hook) is not getattr(L.Callback, hook) for cb in trainer.callbacks)
                  for hook in HOOKS}
    return DirectSteps(trainer, overridden)


ParametersByDevice = dict[torch.device, list[torch.nn.Parameter]]


def by_device(params: list[torch.nn.Parameter]) -> ParametersByDevice:
    """Parameters grouped as one call of torch's non-finite check takes them: by device (it takes mixed dtypes)."""
    groups: ParametersByDevice = {}
    for p in params:
        groups.setdefault(p.device, []).append(p)
    return groups


@dataclass(frozen=True)
class FitParameters:
    """Per optimizer (keyed by the ``id`` of the torch optimizer), the lists that each player step would otherwise
    rebuild: the optimizer's own parameters (simultaneous steps differentiate with respect to them), the other
    optimizers' parameters, which toggling freezes, and its own grouped by device, which the non-finite check
    takes. Built once per fit, from the optimizers' parameter groups then."""

    own: dict[int, list[torch.nn.Parameter]]
    others: dict[int, list[torch.nn.Parameter]]
    devices: dict[int, ParametersByDevice]

    @classmethod
    def of(cls, optimizers: list[torch.optim.Optimizer]) -> "FitParameters":
        own = {id(opt): [p for group in opt.param_groups for p in group["params"]] for opt in optimizers}
        everything = list(dict.fromkeys(p for params in own.values() for p in params))
        others = {}
        for key, params in own.items():
            mine = {id(p) for p in params}
            others[key] = [p for p in everything if id(p) not in mine]
        return cls(own, others, {key: by_device(params) for key, params in own.items()})
