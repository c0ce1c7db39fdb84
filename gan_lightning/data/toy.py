"""PacGAN's 2-D Gaussian mixtures (Lin et al. 2018), the field's mode-coverage benchmark.

ring: 8 modes at (cos 2 pi i / 8, sin 2 pi i / 8), std 0.01.
grid: 25 modes at {-4, -2, 0, 2, 4}^2, std 0.05.
"""
import math

import torch


def mixture_modes(name: str) -> tuple[torch.Tensor, float]:
    """The mixture's mode centres (K, 2) and its per-axis standard deviation."""
    if name == "toy_ring":
        angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        return torch.stack([angles.cos(), angles.sin()], dim=1).float(), 0.01
    if name == "toy_grid":
        axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        return torch.cartesian_prod(axis, axis), 0.05
    raise ValueError(f"unknown mixture {name!r}; expected 'toy_ring' or 'toy_grid'")


def sample_mixture(name: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n points of the uniform mixture and the index of the mode each came from: (n, 2), (n,)."""
    modes, std = mixture_modes(name)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(modes), (n,), generator=g)
    points = modes[labels] + std * torch.randn(n, 2, generator=g)
    return points, labels
