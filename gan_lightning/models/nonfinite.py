"""NaN and Inf in a player's loss or gradients (``model.on_nonfinite``): stop, skip or ignore.

``stop`` checks each player step before it is taken, on the CPU; on an accelerator it keeps a flag on the device,
read every ``log_every_n_steps`` iterations and before every checkpoint, so that no step waits for the device. In
both, no checkpoint holds NaN or Inf weights or optimizer state. ``skip`` drops the update (unanimously across
ranks) and counts it; ``ignore`` does nothing. See docs/failures.md.
"""

import math

import torch
from lightning.pytorch.utilities import rank_zero_warn

from gan_lightning.models.direct_steps import by_device


class NonFiniteGuard:
    """The non-finite policy of an ``AdversarialModule`` (a mixin of it)."""

    MAX_CONSECUTIVE_SKIPS = 20  # on_nonfinite: skip stops after this many skipped updates of a player in a row
    # Whether on_nonfinite: stop keeps a flag on the device (read every log_every_n_steps iterations and before
    # every checkpoint) instead of checking each value at once. None: off the CPU only. Tests force it on the CPU.
    defer_nonfinite_checks: bool | None = None

    def _step_if_finite(self, optimizer, loss: torch.Tensor, player: str) -> None:
        """Step a player whose gradients are in place, unless they (or its loss) are not finite (``on_nonfinite``)."""
        # Under fp16's loss scaler the scaler skips overflowing steps itself (direct_steps is None under it).
        if self.on_nonfinite == "ignore" or (self.__dict__.get("_direct") is None and
                                             getattr(self.trainer.precision_plugin, "scaler", None) is not None):
            self._optimizer_step(optimizer)
            return
        found = self._nonfinite([(optimizer, loss)], player)
        if self.on_nonfinite == "stop":
            if self._defer_nonfinite(found):
                # Per player, on the device: the first iteration whose values were not finite (-1: none yet).
                first = self._finite.get(player, torch.full((), -1, dtype=torch.long, device=found.device))
                self._finite[player] = torch.where((first < 0) & (found[0] > 0), self.iteration, first)
            elif found.item():
                self._raise_nonfinite_values(optimizer, loss, player)
            self._optimizer_step(optimizer)
        elif self._finite_on_every_rank(found):
            self._skipped_in_a_row[player] = 0
            self._optimizer_step(optimizer)
        else:
            found.zero_()
            self._skip(optimizer, player, loss)

    def _steps_if_finite(self, updates: list[tuple]) -> None:
        """Step each ``(optimizer, loss, player)`` of a simultaneous update, unless its values are not finite.

        Under ``on_nonfinite: stop`` with the check read at once (on the CPU), every player's loss and gradients
        are checked in one kernel; only if something is not finite does each player get its own check, which
        names it (the players before it step, as they would have). Otherwise each player is checked in turn."""
        if (self.on_nonfinite == "stop" and self.__dict__.get("_direct") is not None
                and not self._defer_nonfinite(updates[0][1])):
            found = self._nonfinite([(optimizer, loss) for optimizer, loss, _ in updates], "players stepping together")
            if not found.item():
                for optimizer, _, _ in updates:
                    self._optimizer_step(optimizer)
                return
            found.zero_()
        for optimizer, loss, player in updates:
            self._step_if_finite(optimizer, loss, player)

    def _defer_nonfinite(self, on: torch.Tensor) -> bool:
        """Whether ``on_nonfinite: stop`` keeps its flags on ``on``'s device rather than reading them at once."""
        defer = self.defer_nonfinite_checks
        return on.device.type != "cpu" if defer is None else defer

    def _nonfinite(self, updates: list[tuple], flag: str) -> torch.Tensor:
        """The flag ``flag`` (a player's name), a (1,) tensor on the first loss's device: > 0 once a loss or any
        gradient of the players of ``updates``, ``(optimizer, loss)`` pairs, has held NaN or Inf. The flag is kept
        from step to step (per fit): the check only ever raises it, so a finite step allocates nothing, and
        ``on_nonfinite: skip`` lowers it again after a skipped update.

        One fused kernel per device (one in all, usually): the check of torch's AMP grad scaler at scale 1, which
        leaves the values as they are (x * 1 is x, NaN and Inf included), over the gradients and the losses. A
        norm per tensor and their total norm, the usual check, costs 8 times more host time on small networks
        (113 against 13 µs a player step, in isolation)."""
        flags = self.__dict__.setdefault("_nonfinite_flags", {})
        device = updates[0][1].device
        found = flags.get(flag)
        if found is None or found.device != device:
            found = flags[flag] = torch.zeros(1, device=device)
        lists = self._fit_parameters()
        here: list[torch.Tensor] = []  # on the flag's device, the usual case; then any other device's
        elsewhere: dict[torch.device, list[torch.Tensor]] = {}
        for optimizer, loss in updates:
            torch_optimizer = getattr(optimizer, "optimizer", optimizer)
            devices = (lists.devices[id(torch_optimizer)] if lists is not None else
                       by_device([p for group in torch_optimizer.param_groups for p in group["params"]]))
            for params_device, params in devices.items():
                grads = [p.grad for p in params if p.grad is not None]
                (here if params_device == device else elsewhere.setdefault(params_device, [])).extend(grads)
            (here if loss.device == device else elsewhere.setdefault(loss.device, [])).append(loss.detach())
        torch._amp_foreach_non_finite_check_and_unscale_(here, found, self._unit_scale(device))
        for other, tensors in elsewhere.items():
            found_there = torch.zeros(1, device=other)
            torch._amp_foreach_non_finite_check_and_unscale_(tensors, found_there, self._unit_scale(other))
            found += found_there.to(device)
        return found

    def _unit_scale(self, device: torch.device) -> torch.Tensor:
        scales = self.__dict__.setdefault("_unit_scales", {})
        if device not in scales:
            scales[device] = torch.ones(1, device=device)
        return scales[device]

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

    def read_nonfinite_flags(self, before: str) -> None:
        """Read the device flags of ``_step_if_finite`` (one synchronisation) and stop, naming the player that went
        NaN or Inf first and that iteration, if any did since the last read; ``before``: what the read precedes."""
        flags, self._finite = self._finite, {}
        if not flags:
            return
        firsts = dict(zip(flags, torch.stack(list(flags.values())).tolist(), strict=True))
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

    def _refuse_nonfinite_state(self, checkpoint: dict) -> None:
        """Raise, naming the first tensor, when the weights or optimizer states about to be saved hold NaN or Inf
        (one ``isfinite().all()`` per tensor and one host read, at checkpoint time only)."""
        named = [(f"weight {k}", v) for k, v in checkpoint.get("state_dict", {}).items()]
        named += [(f"optimizer {i} state {n}.{k}", v) for i, opt in enumerate(checkpoint.get("optimizer_states", []))
                  for n, entries in opt.get("state", {}).items() for k, v in entries.items()]
        named = [(name, t) for name, t in named if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
        # The optimizers' settings and the schedulers' state: a learning rate that a schedule made Inf or NaN.
        optimizers = checkpoint.get("optimizer_states", [])
        numbers = [(f"optimizer {i} param_groups[{g}].{k}", v) for i, opt in enumerate(optimizers)
                   for g, group in enumerate(opt.get("param_groups", [])) for k, v in group.items()]
        numbers += [(f"scheduler {i} {k}", v) for i, sched in enumerate(checkpoint.get("lr_schedulers", []))
                    for k, v in sched.items()]
        for name, value in numbers:
            for x in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(x, float) and not math.isfinite(x):
                    raise FloatingPointError(
                        f"the {name} is {x} at iteration {self.iteration}, so its checkpoint was not written (the "
                        "ones already on disk are intact): check the learning-rate schedule's settings, and resume "
                        "from the last checkpoint")
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
