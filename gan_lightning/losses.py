"""Adversarial losses as pure functions of discriminator logits.

Notation: ``sp`` is softplus, so ``-log sigmoid(t) = sp(-t)`` and ``-log(1 - sigmoid(t)) = sp(t)``.
Every loss takes raw logits; nothing here calls ``log(sigmoid(.))``, which underflows.
"""
from typing import Literal

import torch
import torch.nn.functional as F

GeneratorLoss = Literal["non_saturating", "minimax"]


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """D maximises log D(real) + log(1 - D(fake)); at chance (logits 0) the loss is 2 log 2."""
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()  # -log D(real) - log(1 - D(fake))


def bigan_encoder_generator_loss(
    d_real: torch.Tensor, d_fake: torch.Tensor, kind: GeneratorLoss = "non_saturating"
) -> torch.Tensor:
    """Loss of the encoder and generator of ALI / BiGAN against the joint D(x, z).

    ``d_real = D(x, E(x))`` and ``d_fake = D(G(z), z)``.
    - ``non_saturating`` (the official code; seed 000 eq. 13.22): labels swapped,
      ``-log(1 - D(x, E(x))) - log D(G(z), z)``.
    - ``minimax`` (the paper's game; seed 000 eq. 13.21): minus the discriminator's loss.
    """
    if kind == "non_saturating":
        return F.softplus(d_real).mean() + F.softplus(-d_fake).mean()
    if kind == "minimax":
        return -discriminator_loss(d_real, d_fake)
    raise ValueError(f"unknown generator loss {kind!r}; expected 'non_saturating' or 'minimax'")
