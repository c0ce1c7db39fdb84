"""PacGAN's packing (Lin et al. 2018, arXiv 1712.04086): the discriminator scores m samples at a time.

D sees m samples of one kind concatenated into one input: m real points, or m generated ones. A
generator that drops modes makes packs that look unlike real packs, which D can see where a single
sample would pass. PacGAN's code concatenates along the feature axis (``tensor.concatenate(x_tildes,
axis=1)`` in ``pacgan/bricks.py``); images stack along channels. ``pack: 1`` is the unpacked game.
"""
from collections.abc import Sequence

import torch


def pack(t: torch.Tensor, m: int) -> torch.Tensor:
    """(B, C, ...) -> (B // m, m * C, ...): each row holds m consecutive examples; the last B mod m are left out."""
    if m == 1:
        return t
    n = len(t) // m
    return t[: n * m].reshape(n, m * t.shape[1], *t.shape[2:])


def packed_shape(data_shape: Sequence[int], m: int) -> tuple[int, ...]:
    """The shape of one packed input: (C, ...) -> (m * C, ...)."""
    return (m * data_shape[0], *data_shape[1:])
