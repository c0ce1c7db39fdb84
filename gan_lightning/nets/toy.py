"""Networks of the 2-D mixture experiments, as PacGAN's ``synthetic_data_experiments/*/pacgan_task.py`` (and
ALI's ``experiments/ali_mixture.py``) build them.

G: 4 hidden layers of 400 units with BN+ReLU, linear output (the mixtures are not bounded to [-1, 1]).
E: 2 hidden layers of 400 units with BN+ReLU. Layers followed by batch norm have no bias (``use_bias=False``);
the output layers have one. D: 3 maxout layers of 200 units x 5 pieces (Goodfellow et al. 2013) and a
linear logit, no batch norm. ALI's toy encoder is a change of variables, E(x, eps) with eps ~ N(0, I) of
x's size concatenated to x (``COVConditional``): build it with ``data_shape`` of twice x's size.
"""
from collections.abc import Sequence

import torch
from torch import nn


class Maxout(nn.Module):
    """max over ``pieces`` affine maps: (B, n_in) -> (B, n_out)."""

    def __init__(self, n_in: int, n_out: int, pieces: int = 5):
        super().__init__()
        self.n_out, self.pieces = n_out, pieces
        self.linear = nn.Linear(n_in, n_out * pieces)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h).view(len(h), self.n_out, self.pieces).amax(dim=2)


def _mlp(n_in: int, width: int, depth: int, batch_norm: bool) -> list[nn.Module]:
    layers = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width, bias=not batch_norm),
                   *([nn.BatchNorm1d(width)] if batch_norm else []),
                   nn.ReLU()]
    return layers


class ToyGenerator(nn.Module):
    """G: z -> x.  (B, Z) -> (B, 2)."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], width: int = 400):
        super().__init__()
        self.net = nn.Sequential(*_mlp(latent_dim, width, 4, batch_norm=True), nn.Linear(width, data_shape[0]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ToyEncoder(nn.Module):
    """E: x -> z, or x -> (mu, log sigma) when ``out_dim`` is twice the latent size: (B, 2) -> (B, out_dim); or
    ALI's change of variables E(x, eps) on their concatenation, (B, 4) -> (B, Z), with ``data_shape`` (4,)."""

    def __init__(self, out_dim: int, data_shape: Sequence[int], width: int = 400):
        super().__init__()
        self.net = nn.Sequential(*_mlp(data_shape[0], width, 2, batch_norm=True), nn.Linear(width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MaxoutDiscriminator(nn.Module):
    """D(x), or D(x, z) on the concatenation when ``latent_dim`` > 0.  -> (B,) logits. Packed inputs (PacGAN)
    are built with ``data_shape`` and ``latent_dim`` m times larger."""

    def __init__(self, data_shape: Sequence[int], latent_dim: int = 0, width: int = 200, pieces: int = 5,
                 dropout: float = 0.0):
        super().__init__()
        n_in = data_shape[0] + latent_dim
        self.net = nn.Sequential(Maxout(n_in, width, pieces), nn.Dropout(dropout), Maxout(width, width, pieces),
                                 nn.Dropout(dropout), Maxout(width, width, pieces), nn.Dropout(dropout),
                                 nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        h = x if z is None else torch.cat([x, z], dim=1)  # (B, 2 + Z)
        return self.net(h).squeeze(1)
