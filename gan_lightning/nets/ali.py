"""The ALI paper's CIFAR-10 / SVHN networks for 32x32 images (Dumoulin et al. 2017, appendix A).

G: 1x1 z -> 4x4 conv-transposes 256 (s1), 128 (s2), 64 (s1), 32 (s2), 5x5 32 (s1), 1x1 32, 1x1 C.
E: 5x5 32 (s1), 4x4 64 (s2), 128 (s1), 256 (s2), 512 (s1), 1x1 512, 1x1 out.
D: x-branch as E's first five layers; z-branch 1x1 512, 512; joint 1x1 1024, 1024, 1.
LeakyReLU(0.01) throughout; batch norm in G, E and D's x-branch (not its first layer, never on z);
dropout in D: 0.2 on its first layer, 0.5 after. A 1x1 convolution on a 1x1 map is a linear layer.
"""
from typing import Sequence

import torch
from torch import nn

LEAK = 0.01


def _block(conv: nn.Module, channels: int, batch_norm: bool = True, dropout: float = 0.0) -> list[nn.Module]:
    return [conv, *([nn.BatchNorm2d(channels)] if batch_norm else []), nn.LeakyReLU(LEAK),
            *([nn.Dropout(dropout)] if dropout else [])]


def _check(data_shape: Sequence[int]) -> None:
    if tuple(data_shape[1:]) != (32, 32):
        raise ValueError(f"the ALI paper's networks take 32x32 images; got data shape {tuple(data_shape)}")


class ALIGenerator32(nn.Module):
    """G: (B, Z) -> (B, C, 32, 32) in [-1, 1]."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], width: int = 32):
        super().__init__()
        _check(data_shape)
        w = width
        self.net = nn.Sequential(
            *_block(nn.ConvTranspose2d(latent_dim, 8 * w, 4, 1, bias=False), 8 * w),  # 4x4
            *_block(nn.ConvTranspose2d(8 * w, 4 * w, 4, 2, bias=False), 4 * w),       # 10x10
            *_block(nn.ConvTranspose2d(4 * w, 2 * w, 4, 1, bias=False), 2 * w),       # 13x13
            *_block(nn.ConvTranspose2d(2 * w, w, 4, 2, bias=False), w),               # 28x28
            *_block(nn.ConvTranspose2d(w, w, 5, 1, bias=False), w),                   # 32x32
            *_block(nn.Conv2d(w, w, 1, bias=False), w),
            nn.Conv2d(w, data_shape[0], 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


def _x_layers(channels: int, w: int, batch_norm: bool, dropout: tuple[float, float]) -> list[nn.Module]:
    first, rest = dropout
    return [*_block(nn.Conv2d(channels, w, 5, 1, bias=True), w, False, first),  # 28x28: no batch norm on the first layer
            *_block(nn.Conv2d(w, 2 * w, 4, 2, bias=not batch_norm), 2 * w, batch_norm, rest),      # 13x13
            *_block(nn.Conv2d(2 * w, 4 * w, 4, 1, bias=not batch_norm), 4 * w, batch_norm, rest),  # 10x10
            *_block(nn.Conv2d(4 * w, 8 * w, 4, 2, bias=not batch_norm), 8 * w, batch_norm, rest),  # 4x4
            *_block(nn.Conv2d(8 * w, 16 * w, 4, 1, bias=not batch_norm), 16 * w, batch_norm, rest),  # 1x1
            nn.Flatten()]


class ALIEncoder32(nn.Module):
    """E: (B, C, 32, 32) -> (B, out_dim); out_dim = 2Z for the Gaussian encoder's (mu, log sigma)."""

    def __init__(self, out_dim: int, data_shape: Sequence[int], width: int = 32):
        super().__init__()
        _check(data_shape)
        self.net = nn.Sequential(*_x_layers(data_shape[0], width, True, (0.0, 0.0)),
                                 nn.Linear(16 * width, 16 * width, bias=False), nn.BatchNorm1d(16 * width),
                                 nn.LeakyReLU(LEAK), nn.Linear(16 * width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ALIJointDiscriminator32(nn.Module):
    """D(x, z): (B, C, 32, 32), (B, Z) -> (B,) logits."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], width: int = 32, dropout: float = 0.5):
        super().__init__()
        _check(data_shape)
        first = min(dropout, 0.2)
        self.x_branch = nn.Sequential(*_x_layers(data_shape[0], width, True, (first, dropout)))
        self.z_branch = nn.Sequential(nn.Linear(latent_dim, 16 * width), nn.LeakyReLU(LEAK), nn.Dropout(first),
                                      nn.Linear(16 * width, 16 * width), nn.LeakyReLU(LEAK), nn.Dropout(dropout))
        self.joint = nn.Sequential(nn.Linear(32 * width, 32 * width), nn.LeakyReLU(LEAK), nn.Dropout(dropout),
                                   nn.Linear(32 * width, 32 * width), nn.LeakyReLU(LEAK), nn.Dropout(dropout),
                                   nn.Linear(32 * width, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.joint(torch.cat([self.x_branch(x), self.z_branch(z)], dim=1)).squeeze(1)
