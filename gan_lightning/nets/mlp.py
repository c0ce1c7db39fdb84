"""Fully connected G, E and joint D(x, z): the BiGAN paper's MNIST networks (Donahue et al. 2017).

Official setting: G 1024-1024-out with BN+ReLU; E and D 1024-1024 with LeakyReLU(0.2) and batch norm
on the second layer; the joint D takes z in its second layer (``JointDiscriminator``). Data live in [-1, 1],
so G ends in tanh. G and E keep affine batch norm and G takes z only at its input, where the official
``deconvnet_mnist_mlp`` adds z again before its second batch norm and drops batch norm's scale and shift
(configs/bigan.yaml names these differences).
"""
import math
from collections.abc import Sequence

import torch
from torch import nn


def _hidden(n_in: int, n_out: int, act: nn.Module, batch_norm: bool) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out, bias=not batch_norm), *([nn.BatchNorm1d(n_out)] if batch_norm else []), act]


class MLPGenerator(nn.Module):
    """G: z -> x.  (B, Z) -> (B, *data_shape), values in [-1, 1]."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], hidden_dim: int = 1024):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = nn.Sequential(
            *_hidden(latent_dim, hidden_dim, nn.ReLU(), batch_norm=True),
            *_hidden(hidden_dim, hidden_dim, nn.ReLU(), batch_norm=True),
            nn.Linear(hidden_dim, math.prod(self.data_shape)),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z) -> (B, C, H, W)
        return self.net(z).view(len(z), *self.data_shape)


class MLPEncoder(nn.Module):
    """Deterministic E: x -> z.  (B, *data_shape) -> (B, Z)."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], hidden_dim: int = 1024):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            *_hidden(math.prod(data_shape), hidden_dim, nn.LeakyReLU(0.2), batch_norm=False),
            *_hidden(hidden_dim, hidden_dim, nn.LeakyReLU(0.2), batch_norm=True),
            nn.Linear(hidden_dim, latent_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, Z)
        return self.net(x)


class MLPDiscriminator(nn.Module):
    """D(x): the joint discriminator's x-branch and a linear head.  (B, *data_shape) -> (B,) logits."""

    def __init__(self, data_shape: Sequence[int], hidden_dim: int = 1024, dropout: float = 0.0,
                 batch_norm: bool = True):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.net = nn.Sequential(
            nn.Flatten(),
            *_hidden(math.prod(data_shape), hidden_dim, act, batch_norm=False), nn.Dropout(dropout),
            *_hidden(hidden_dim, hidden_dim, act, batch_norm=batch_norm), nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class JointDiscriminator(nn.Module):
    """D(x, z) of BiGAN's official MNIST model (``net.py``: the ``mnist_mlp`` featurizer with z as its condition,
    ``apply_cond``; ``train_mnist.sh``: ``--nobias --nogain``):

        h1 = LeakyReLU(W1 x)
        h2 = LeakyReLU(BN(W2 h1 + Wz z))       # z enters the second layer, added before batch norm
        D(x, z) = w . h2 + b

    No biases and no batch-norm scale or shift; only the logit has a bias. (B, C, H, W), (B, Z) -> (B,) logits.
    """

    def __init__(self, latent_dim: int, data_shape: Sequence[int], hidden_dim: int = 1024, dropout: float = 0.0):
        super().__init__()
        self.x_layer = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data_shape), hidden_dim, bias=False),
                                     nn.LeakyReLU(0.2))
        self.hidden = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.z_in = nn.Linear(latent_dim, hidden_dim, bias=False)
        self.joint = nn.Sequential(nn.BatchNorm1d(hidden_dim, affine=False), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                                   nn.Linear(hidden_dim, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # (B, C, H, W), (B, Z) -> (B,)
        return self.joint(self.hidden(self.x_layer(x)) + self.z_in(z)).squeeze(1)
