"""The ALI paper's convolutional networks (Dumoulin et al. 2017, appendix A), as one family read from tables.

Each table row is (kernel, stride, channels as a multiple of ``width``):

=====  ==========================================  ==========================================  =====
size   E and D's x-branch (convolutions)           G (transposed convolutions)                 leak
=====  ==========================================  ==========================================  =====
32     5 s1 x1, 4 s2 x2, 4 s1 x4, 4 s2 x8, 4 s1 x16  4 s1 x8, 4 s2 x4, 4 s1 x2, 4 s2 x1, 5 s1 x1  0.01
64     2 s1 x1, 7 s2 x2, 5 s2 x4, 7 s2 x4, 4 s1 x8   4 s1 x8, 7 s2 x4, 5 s2 x4, 7 s2 x2, 2 s1 x1  0.02
=====  ==========================================  ==========================================  =====

32x32 is the CIFAR-10 / SVHN table (width 32; the authors' released CelebA experiment trains these
networks on 32x32 crops with z of 256), where E and G end with one more 1x1 layer of 16 / 1 widths
before their output layer. 64x64 is the paper's CelebA table (width 64) and ends directly in the
output layer. D's z-branch is two 1x1 layers of 16 x width, the joint branch two of 32 x width and one
logit. A 1x1 convolution on a 1x1 map is a linear layer, and is written as one. Layers followed by
batch norm, and D's z-branch, have no bias (``use_bias=False`` in the released code).

Two discriminators, as the released experiments build them:

- ``ALIJointDiscriminator`` (``ali_svhn.py``, ``ali_celeba.py``): leaky ReLU, batch norm in the x-branch
  after its first layer, and dropout (0.2 there) on the input of every layer, x and z included.
- ``ALIMaxoutJointDiscriminator`` (``ali_cifar10.py``; architecture ``ali_cifar10``, whose G and E leak
  0.1): maxout of 2 pieces after every layer and no batch norm; dropout 0.2 on x and z, and ``dropout``
  (0.5 there) on the inputs the released code picks (``layers[2::3]`` of the x-branch, ``layers[2::2]``
  of the z-branch, every layer of the joint branch).
"""
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

Layer = tuple[int, int, int]  # kernel, stride, channel multiple


@dataclass(frozen=True)
class ALITable:
    x_layers: tuple[Layer, ...]   # E and D's x-branch: a 1x1 map of x_layers[-1][2] * width channels at the end
    g_layers: tuple[Layer, ...]   # G, from the 1x1 map of z to the full image
    hidden_1x1: bool              # one more hidden 1x1 layer before E's and G's outputs (the 32x32 table)
    leak: float                   # LeakyReLU slope


TABLES = {
    32: ALITable(x_layers=((5, 1, 1), (4, 2, 2), (4, 1, 4), (4, 2, 8), (4, 1, 16)),
                 g_layers=((4, 1, 8), (4, 2, 4), (4, 1, 2), (4, 2, 1), (5, 1, 1)), hidden_1x1=True, leak=0.01),
    64: ALITable(x_layers=((2, 1, 1), (7, 2, 2), (5, 2, 4), (7, 2, 4), (4, 1, 8)),
                 g_layers=((4, 1, 8), (7, 2, 4), (5, 2, 4), (7, 2, 2), (2, 1, 1)), hidden_1x1=False, leak=0.02),
}


def table(data_shape: Sequence[int], leak: float | None = None) -> ALITable:
    """The table of ``data_shape``'s size, with its leaky ReLU slope or ``leak`` (CIFAR-10's code: 0.1)."""
    if len(data_shape) != 3 or data_shape[1] != data_shape[2] or data_shape[1] not in TABLES:
        raise ValueError(f"the ALI paper's networks take 32x32 (CIFAR-10, SVHN) or 64x64 (CelebA) images; "
                         f"got data shape {tuple(data_shape)}: set data.image_size to 32 or 64")
    t = TABLES[data_shape[1]]
    return t if leak is None else ALITable(t.x_layers, t.g_layers, t.hidden_1x1, leak)


def _block(layer: nn.Module, channels: int, leak: float, batch_norm: bool = True, dropout: float = 0.0) -> list:
    """[dropout on the layer's input], layer, [batch norm], leaky ReLU."""
    norm = nn.BatchNorm2d(channels) if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) else nn.BatchNorm1d(channels)
    return [*([nn.Dropout(dropout)] if dropout else []), layer, *([norm] if batch_norm else []), nn.LeakyReLU(leak)]


def _x_layers(t: ALITable, channels: int, w: int, first_norm: bool, dropout: float) -> list[nn.Module]:
    """Convolutions from the image to a 1x1 map, batch norm after each but D's first (``first_norm=False``)."""
    layers, c_in = [], channels
    for i, (k, s, m) in enumerate(t.x_layers):
        norm = first_norm or i > 0
        layers += _block(nn.Conv2d(c_in, m * w, k, s, bias=not norm), m * w, t.leak, norm, dropout)
        c_in = m * w
    return layers + [nn.Flatten()]


class ALIGenerator(nn.Module):
    """G: (B, Z) -> (B, C, H, W) in [-1, 1], H = W = 32 or 64."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], width: int = 32, leak: float | None = None):
        super().__init__()
        t, w = table(data_shape, leak), width
        layers, c_in = [], latent_dim
        for k, s, m in t.g_layers:
            layers += _block(nn.ConvTranspose2d(c_in, m * w, k, s, bias=False), m * w, t.leak)
            c_in = m * w
        if t.hidden_1x1:
            layers += _block(nn.Conv2d(c_in, w, 1, bias=False), w, t.leak)
            c_in = w
        self.net = nn.Sequential(*layers, nn.Conv2d(c_in, data_shape[0], 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class ALIEncoder(nn.Module):
    """E: (B, C, H, W) -> (B, out_dim); out_dim = 2Z for the Gaussian encoder's (mu, log sigma)."""

    def __init__(self, out_dim: int, data_shape: Sequence[int], width: int = 32, leak: float | None = None):
        super().__init__()
        t = table(data_shape, leak)
        features = t.x_layers[-1][2] * width
        hidden = _block(nn.Linear(features, features, bias=False), features, t.leak) if t.hidden_1x1 else []
        self.net = nn.Sequential(*_x_layers(t, data_shape[0], width, True, 0.0), *hidden,
                                 nn.Linear(features, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ALIJointDiscriminator(nn.Module):
    """D(x, z): (B, C, H, W), (B, Z) -> (B,) logits, from an x-branch, a z-branch and a joint branch; dropout on the
    input of every layer (ALI's SVHN and CelebA code: 0.2)."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], width: int = 32, dropout: float = 0.2):
        super().__init__()
        t, w = table(data_shape), width
        self.x_branch = nn.Sequential(*_x_layers(t, data_shape[0], w, False, dropout))
        self.z_branch = nn.Sequential(
            *_block(nn.Linear(latent_dim, 16 * w, bias=False), 16 * w, t.leak, False, dropout),
            *_block(nn.Linear(16 * w, 16 * w, bias=False), 16 * w, t.leak, False, dropout))
        joint_in = t.x_layers[-1][2] * w + 16 * w
        self.joint = nn.Sequential(*_block(nn.Linear(joint_in, 32 * w), 32 * w, t.leak, False, dropout),
                                   *_block(nn.Linear(32 * w, 32 * w), 32 * w, t.leak, False, dropout),
                                   *([nn.Dropout(dropout)] if dropout else []), nn.Linear(32 * w, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.joint(torch.cat([self.x_branch(x), self.z_branch(z)], dim=1)).squeeze(1)


class Maxout(nn.Module):
    """The max of each ``pieces`` consecutive channels (Blocks' ``ConvMaxout``): (B, pieces C, ...) -> (B, C, ...)."""

    def __init__(self, pieces: int = 2):
        super().__init__()
        self.pieces = pieces

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.unflatten(1, (h.shape[1] // self.pieces, self.pieces)).amax(dim=2)


class ALIMaxoutJointDiscriminator(nn.Module):
    """D(x, z) of ALI's released CIFAR-10 model (``experiments/ali_cifar10.py``). (B, C, 32, 32), (B, Z) -> (B,).

    Every layer is followed by a maxout of 2 pieces (so a layer of 32 filters gives 16 channels); no batch norm;
    biases in the x-branch and the joint branch, none in the z-branch. Dropout 0.2 on x and on z, and ``dropout``
    (0.5) on the inputs of the bricks the released code selects: ``layers[2::3]`` of the x-branch's
    [conv, maxout, conv, maxout, ...] (the second convolution, the third convolution's maxout, the fifth
    convolution), ``layers[2::2]`` of the z-branch (its second layer) and every layer of the joint branch.
    """

    def __init__(self, latent_dim: int, data_shape: Sequence[int], width: int = 32, dropout: float = 0.5,
                 pieces: int = 2):
        super().__init__()
        t, w, p = table(data_shape), width, pieces

        def drop() -> list[nn.Module]:
            return [nn.Dropout(dropout)] if dropout else []

        x_layers, c_in = [nn.Dropout(0.2)], data_shape[0]
        for i, (k, s, m) in enumerate(t.x_layers):
            x_layers += [*(drop() if i in (1, 4) else []), nn.Conv2d(c_in, m * w, k, s), *(drop() if i == 2 else []),
                         Maxout(p)]
            c_in = m * w // p
        self.x_branch = nn.Sequential(*x_layers, nn.Flatten())
        self.z_branch = nn.Sequential(nn.Dropout(0.2), nn.Linear(latent_dim, 16 * w, bias=False), Maxout(p),
                                      *drop(), nn.Linear(16 * w // p, 16 * w, bias=False), Maxout(p))
        self.joint = nn.Sequential(*drop(), nn.Linear(c_in + 16 * w // p, 32 * w), Maxout(p),
                                   *drop(), nn.Linear(32 * w // p, 32 * w), Maxout(p),
                                   *drop(), nn.Linear(32 * w // p, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.joint(torch.cat([self.x_branch(x), self.z_branch(z)], dim=1)).squeeze(1)
