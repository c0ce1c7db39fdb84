"""Normalising-flow layers: RealNVP (Dinh et al. 2017, arXiv 1605.08803) and Glow (Kingma & Dhariwal 2018,
arXiv 1807.03039).

A flow is a bijection y = f(x) built from layers whose Jacobian determinants are cheap. Every layer here
has ``forward(x) -> (y, logdet)``, logdet = log|det df/dx| per example (shape (B,)), and
``inverse(y) -> x``; composing layers adds their log-determinants (the chain rule).
"""
import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """Space to depth (RealNVP section 3.6): each 2x2 block becomes 4 channels: (B,C,H,W) -> (B,4C,H/2,W/2)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Depth to space, the inverse of ``squeeze``: (B,4C,H,W) -> (B,C,2H,2W)."""
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)


class ActNorm(nn.Module):
    """Glow's activation normalisation: a per-channel affine map y = (x + b) * exp(log_s).

    Data-dependent initialisation: the first batch seen in training mode sets b = -mean(x) and
    log_s = -log std(x) per channel (averaged over ranks when distributed), so that batch leaves with zero
    mean and unit variance. Until then, and on an untrained model in eval mode, the layer is the identity.
    Every pixel shares the scale, so log|det| = H * W * sum_c log_s_c.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))  # persistent: checkpoints keep it
        self._checked = False  # the flag has been read once; saves a host sync per training forward

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        stats = torch.stack([x.mean(dim=(0, 2, 3)), x.square().mean(dim=(0, 2, 3))])  # (2, C): E[x], E[x^2]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
            stats /= dist.get_world_size()
        mean, var = stats[0], (stats[1] - stats[0].square()).clamp_min(0)
        self.bias.copy_(-mean.view_as(self.bias))
        self.log_scale.copy_(-0.5 * (var + 1e-6).log().view_as(self.log_scale))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not self._checked:
            if not self.initialized:
                self.initialize(x)
            self._checked = True
        logdet = x.shape[2] * x.shape[3] * self.log_scale.sum()
        return (x + self.bias) * self.log_scale.exp(), logdet.expand(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * (-self.log_scale).exp() - self.bias


class InvertibleConv1x1(nn.Module):
    """Glow's invertible 1x1 convolution, a learned permutation of channels: y_ij = W x_ij at every pixel.

    W starts as a random rotation (orthogonal, log|det W| = 0); log|det| = H * W * log|det W|.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels))[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.weight.shape[0]
        logdet = x.shape[2] * x.shape[3] * torch.linalg.slogdet(self.weight)[1]
        return F.conv2d(x, self.weight.view(c, c, 1, 1)), logdet.expand(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        c = self.weight.shape[0]
        return F.conv2d(y, torch.linalg.inv(self.weight).view(c, c, 1, 1))


class AffineCoupling(nn.Module):
    """RealNVP's affine coupling layer with channel-wise masks (section 3.3-3.4):

        y_a = x_a,    y_b = x_b * exp(s(x_a)) + t(x_a),    log|det| = sum s(x_a)

    where x_a and x_b are the two halves of the channels; ``mask_parity`` swaps which half conditions
    the other, so alternating layers transform every channel. s and t come from one small conv net
    (3x3 - ReLU - 1x1 - ReLU - 3x3) whose last convolution starts at zero: the layer starts as the
    identity. s = scale * tanh(.) bounds the log-scale (the RealNVP code's rescaled tanh) for stability.
    """

    def __init__(self, channels: int, hidden: int, mask_parity: int = 0):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling layer needs at least 2 channels, got {channels}")
        self.sizes = [channels // 2, channels - channels // 2]
        self.parity = mask_parity % 2
        n_cond, n_out = self.sizes[self.parity], self.sizes[1 - self.parity]
        self.net = nn.Sequential(
            nn.Conv2d(n_cond, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            nn.Conv2d(hidden, 2 * n_out, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.scale = nn.Parameter(torch.ones(1, n_out, 1, 1))

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditioning half x_a, transformed half x_b)."""
        halves = x.split(self.sizes, dim=1)
        return halves[self.parity], halves[1 - self.parity]

    def join(self, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        return torch.cat([x_b, x_a] if self.parity else [x_a, x_b], dim=1)

    def scale_shift(self, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s(x_a), t(x_a): (B, C_a, H, W) -> 2 x (B, C_b, H, W)."""
        s, t = self.net(x_a).chunk(2, dim=1)
        return self.scale * torch.tanh(s), t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_a, x_b = self.split(x)
        s, t = self.scale_shift(x_a)
        return self.join(x_a, x_b * s.exp() + t), s.flatten(1).sum(dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y_a, y_b = self.split(y)
        s, t = self.scale_shift(y_a)
        return self.join(y_a, (y_b - t) * (-s).exp())


class FlowStep(nn.Sequential):
    """One step of Glow's flow (figure 2a): ActNorm -> invertible 1x1 conv -> affine coupling."""

    def __init__(self, channels: int, hidden: int, mask_parity: int):
        super().__init__(ActNorm(channels), InvertibleConv1x1(channels), AffineCoupling(channels, hidden, mask_parity))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(len(x))
        for layer in self:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self):
            y = layer.inverse(y)
        return y


class Flow(nn.Module):
    """A single-scale multi-level flow: at each level a squeeze, then ``steps_per_level`` FlowSteps whose
    coupling masks alternate step by step. For 1x28x28 with 2 levels:
    (1,28,28) -squeeze-> (4,14,14) -steps-> -squeeze-> (16,7,7) -steps-> y. (RealNVP and Glow also factor
    out half the channels at each level; this keeps them all, which costs compute, not exactness.)
    """

    def __init__(self, data_shape: Sequence[int], levels: int = 2, steps_per_level: int = 4, hidden: int = 64):
        super().__init__()
        c, h, w = data_shape
        if levels < 1 or h % 2**levels or w % 2**levels:
            raise ValueError(f"model.levels must be >= 1 with the image height and width divisible by "
                             f"2**levels; got levels {levels} for {h}x{w} images")
        self.latent_shape = (c * 4**levels, h // 2**levels, w // 2**levels)
        self.levels = nn.ModuleList(
            nn.ModuleList(FlowStep(c * 4**(level + 1), hidden, k % 2) for k in range(steps_per_level))
            for level in range(levels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B,C,H,W) -> latent, (B,)
        logdet = x.new_zeros(len(x))
        for steps in self.levels:
            x = squeeze(x)  # volume-preserving: log|det| = 0
            for step in steps:
                x, ld = step(x)
                logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:  # (B, *latent_shape) -> (B,C,H,W)
        for steps in reversed(self.levels):
            for step in reversed(steps):
                y = step.inverse(y)
            y = unsqueeze(y)
        return y


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) per example: -1/2 ||z||^2 - D/2 log(2 pi): (B, ...) -> (B,)."""
    z = z.flatten(1)
    return -0.5 * z.square().sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
