"""Learning-rate schedules from the papers, as scheduler classes a YAML config can name.

Each is stepped once per epoch (``model.scheduler_*``), e.g. BiGAN's 200 constant + 200 decaying epochs::

    scheduler_ge:
      class_path: gan_lightning.schedules.ConstantThenDecay
      init_args: {constant_epochs: 200, decay_epochs: 200, final_factor: 0.01}
"""
from typing import Literal

import torch
from torch.optim.lr_scheduler import LambdaLR


class ConstantThenDecay(LambdaLR):
    """The initial rate for ``constant_epochs``, then decayed over ``decay_epochs`` to ``final_factor`` times it.

    BiGAN (Donahue et al. 2017) trains 200 epochs at the initial rate and 200 while decaying it; the official
    code (``set_lr`` in ``train_gan.py``) decays exponentially to 0.01 of the initial rate by default,
    reaching it in the last epoch, or linearly (``--linear_decay``). After the decay the rate stays at
    ``final_factor`` times the initial one.

    Args:
        optimizer: the player's optimizer.
        constant_epochs: epochs at the initial rate.
        decay_epochs: epochs over which the rate falls to ``final_factor`` times the initial rate.
        final_factor: the last epoch's rate over the initial rate, in (0, 1] (0 allowed for ``linear``).
        decay: ``exponential`` (geometric steps; the official default) or ``linear``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, constant_epochs: int = 200, decay_epochs: int = 200,
                 final_factor: float = 0.01, decay: Literal["exponential", "linear"] = "exponential",
                 last_epoch: int = -1):
        if constant_epochs < 0 or decay_epochs < 1:
            raise ValueError(f"ConstantThenDecay needs constant_epochs >= 0 and decay_epochs >= 1; got "
                             f"{constant_epochs} and {decay_epochs}")
        if decay not in ("exponential", "linear"):
            raise ValueError(f"ConstantThenDecay decay must be 'exponential' or 'linear'; got {decay!r}")
        if not (0 <= final_factor <= 1 and (final_factor > 0 or decay == "linear")):
            raise ValueError(f"ConstantThenDecay final_factor must be in (0, 1] (or 0 with linear decay); "
                             f"got {final_factor} with {decay} decay")
        self.constant_epochs, self.decay_epochs, self.final_factor, self.decay = (constant_epochs, decay_epochs,
                                                                                  final_factor, decay)
        super().__init__(optimizer, self.factor, last_epoch)

    def factor(self, epoch: int) -> float:
        """The rate of ``epoch`` (counted from 0) over the initial rate."""
        if epoch < self.constant_epochs:
            return 1.0
        done = min(1.0, (epoch - self.constant_epochs + 1) / self.decay_epochs)  # 1 in the last decay epoch
        if self.decay == "exponential":
            return self.final_factor ** done
        return 1.0 + done * (self.final_factor - 1.0)
