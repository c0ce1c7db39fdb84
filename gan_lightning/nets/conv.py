"""DCGAN-style convolutional networks (Radford et al. 2016), one family for 28x28, 32x32 and 64x64 images.

Every resolution starts from a small grid (7x7 for 28, 4x4 for 32 and 64) and doubles with stride-2
(de)convolutions of kernel 4; channels halve as the resolution doubles. ``width`` is the channel
count at the finest resolution.
"""
import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn


def _plan(data_shape: Sequence[int]) -> tuple[int, int]:
    """(start size, number of doublings) for a square image side."""
    side = data_shape[-1]
    start = 7 if side % 7 == 0 else 4
    doublings = round(math.log2(side / start))
    if len(data_shape) != 3 or data_shape[-2] != side or start * 2**doublings != side:
        raise ValueError(f"the conv networks take square images of side 28, 32 or 64 (7 or 4 times a power of 2); "
                         f"got data shape {tuple(data_shape)}")
    return start, doublings


class DCGANGenerator(nn.Module):
    """G: z -> x.  (B, Z) -> (B, C, S, S) in [-1, 1]."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], width: int = 64):
        super().__init__()
        start, n = _plan(data_shape)
        channels = [width * 2 ** (n - 1 - i) for i in range(n)]  # e.g. 256, 128, 64 for n = 3
        self.project = nn.Sequential(nn.ConvTranspose2d(latent_dim, channels[0], start, bias=False),
                                     nn.BatchNorm2d(channels[0]), nn.ReLU())  # (B, Z, 1, 1) -> (B, c0, s0, s0)
        ups = []
        for c_in, c_out in pairwise(channels):
            ups += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.upsample = nn.Sequential(*ups, nn.ConvTranspose2d(channels[-1], data_shape[0], 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z[:, :, None, None]))


class DCGANTrunk(nn.Module):
    """x -> features: stride-2 convolutions with LeakyReLU(0.2), batch norm after the first.  -> (B, F)."""

    def __init__(self, data_shape: Sequence[int], width: int = 64, batch_norm: bool = True, dropout: float = 0.0):
        super().__init__()
        start, n = _plan(data_shape)
        layers, c_in = [], data_shape[0]
        for i in range(n):
            c_out = width * 2**i
            norm = [nn.BatchNorm2d(c_out)] if batch_norm and i > 0 else []
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not norm), *norm, nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            c_in = c_out
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_features = c_in * start * start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DCGANEncoder(nn.Module):
    """E: x -> z (or (mu, log sigma) with ``out_dim`` = 2Z).  (B, C, S, S) -> (B, out_dim)."""

    def __init__(self, out_dim: int, data_shape: Sequence[int], width: int = 64):
        super().__init__()
        self.trunk = DCGANTrunk(data_shape, width)
        self.head = nn.Linear(self.trunk.out_features, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class DCGANDiscriminator(nn.Module):
    """D(x) -> (B,) logits. Set ``batch_norm=False`` for gradient-penalty critics (WGAN-GP)."""

    def __init__(self, data_shape: Sequence[int], width: int = 64, batch_norm: bool = True, dropout: float = 0.0):
        super().__init__()
        self.trunk = DCGANTrunk(data_shape, width, batch_norm, dropout)
        self.head = nn.Linear(self.trunk.out_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)).squeeze(1)


class DCGANJointDiscriminator(nn.Module):
    """D(x, z): a conv x-branch, an MLP z-branch without batch norm, a joint MLP.  -> (B,) logits."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], width: int = 64, dropout: float = 0.2):
        super().__init__()
        self.x_branch = DCGANTrunk(data_shape, width, batch_norm=True, dropout=dropout)
        hidden = 8 * width
        self.z_branch = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout))
        self.joint = nn.Sequential(nn.Linear(self.x_branch.out_features + hidden, 2 * hidden), nn.LeakyReLU(0.2),
                                   nn.Dropout(dropout), nn.Linear(2 * hidden, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.joint(torch.cat([self.x_branch(x), self.z_branch(z)], dim=1)).squeeze(1)
