"""Players: the networks behind each optimizer, and their updates.

A *player* is a set of networks behind one optimizer (BiGAN: the discriminator D, and the generator G with the
encoder E). A model declares its players with ``add_player``; its ``update_players`` updates each in turn with
``step`` (or several at once with ``step_together``), under ``toggled_optimizer`` so that only that player's
parameters take gradients. The calls go straight to ``loss.backward()`` and ``optimizer.step()`` where Lightning's
wrappers would only pass them on (``direct_steps``), with the parameter lists each step needs built once per fit.
"""
from collections.abc import Callable

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from gan_lightning.errors import ConfigError
from gan_lightning.losses import su_regulariser
from gan_lightning.models.direct_steps import FitParameters
from gan_lightning.nets.init import initialise


class Players:
    """The players of an ``AdversarialModule`` (a mixin of it): declaration, optimizers, toggling, steps."""

    def add_player(self, name: str, networks: list[str], optimizer: OptimizerCallable,
                   scheduler: LRSchedulerCallable | None = None) -> None:
        """Declare a player: the attribute names of its networks, its optimizer and optional scheduler. Networks
        not declared before start as the model's ``init_std`` and ``bn_momentum`` say (``nets/init.py``)."""
        for network in networks:
            if network not in self.player_networks():
                initialise(getattr(self, network), self.init_std, self.bn_momentum)
        self._players[name] = (networks, optimizer, scheduler)

    def player_networks(self) -> list[str]:
        """The attribute names of every player's networks, in the order the players were declared."""
        return [name for networks, _, _ in self._players.values() for name in networks]

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
                                  "the model's optimizer options (e.g. model.init_args.optimizer_*.init_args.lr)"
                                  ) from None
            if make_scheduler is not None:
                try:
                    scheduler = make_scheduler(optimizers[-1])
                except (ValueError, TypeError) as err:  # the schedule's own check of its settings
                    raise ConfigError(f"the {player} player's learning-rate schedule refuses its settings ({err}): fix "
                                      "that value in the model's scheduler options (model.init_args.scheduler_*)"
                                      ) from None
                schedulers.append({"scheduler": scheduler, "interval": "epoch"})
        return optimizers, schedulers

    def optimizer(self, player: str):
        """The LightningOptimizer of a player, by name (kept per fit: ``self.optimizers()`` builds a list)."""
        kept = self.__dict__.get("_player_optimizers")
        if kept is not None:
            return kept[player]
        optimizers = self.optimizers()  # Lightning returns a lone optimizer unwrapped
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return optimizers[list(self._players).index(player)]

    # --- one player's update, and simultaneous updates ----------------------------------------------------

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
        lists = self._fit_parameters()
        for k, (optimizer, loss, _) in enumerate(updates):
            torch_optimizer = getattr(optimizer, "optimizer", optimizer)
            own = (lists.own[id(torch_optimizer)] if lists is not None else
                   [p for group in torch_optimizer.param_groups for p in group["params"]])
            own = [p for p in own if p.requires_grad]
            self._backward(optimizer, loss, inputs=own, retain_graph=k + 1 < len(updates))
        self._steps_if_finite(updates)

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

    # --- Lightning's backward and optimizer step, without its per-call wrappers where they do nothing ---------

    def _backward(self, optimizer, loss: torch.Tensor, **backward_kwargs) -> None:
        """``optimizer.zero_grad`` and ``self.manual_backward(loss)``: directly, with the same hooks, when
        ``direct_steps`` found Lightning's wrappers would only pass the call on."""
        getattr(optimizer, "optimizer", optimizer).zero_grad(set_to_none=True)  # not through LightningOptimizer's
        direct = self.__dict__.get("_direct")                                      # __getattr__
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

    # --- which parameters take gradients: Lightning's toggle_optimizer, with the parameter lists kept ---------

    def toggled_optimizer(self, optimizer) -> "Toggled":
        """Lightning's ``toggled_optimizer`` (toggle on entry, untoggle on exit, exceptions included), as a plain
        context manager rather than a generator-based one: one fewer frame to create at every player step."""
        return Toggled(self, optimizer)

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
                            self.__dict__.pop("_toggled_states"), strict=True):
            p.requires_grad = state

    def _fit_parameters(self) -> FitParameters | None:
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


class Toggled:
    """``with module.toggled_optimizer(optimizer):``: only that optimizer's parameters require gradients inside."""

    __slots__ = ("module", "optimizer")

    def __init__(self, module, optimizer):
        self.module, self.optimizer = module, optimizer

    def __enter__(self) -> None:
        self.module.toggle_optimizer(self.optimizer)

    def __exit__(self, *exc_info) -> None:
        self.module.untoggle_optimizer(self.optimizer)
