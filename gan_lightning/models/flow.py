"""RealNVP (Dinh et al. 2017, arXiv 1605.08803) with Glow's steps (Kingma & Dhariwal 2018, arXiv 1807.03039):
the exact-likelihood baseline beside the adversarial models.

A bijection f maps an image to z = f(y) with a standard normal prior, so the change of variables gives
the density exactly: log p(y) = log N(f(y); 0, I) + log|det df/dy|. Discrete pixels p in {0..255}^D are
dequantised, u = (p + noise) / 256 with noise ~ U[0, 1)^D, and mapped to the real line by RealNVP's
logit transform y = logit(alpha + (1 - 2 alpha) u). Bits per dimension of the data are then

    bits/dim = (-log p(u) + D log 256) / (D log 2),
    log p(u) = log N(f(y); 0, I) + log|det df/dy| + sum_i [log(1 - 2 alpha) - log v_i - log(1 - v_i)],

with v = alpha + (1 - 2 alpha) u (the last sum is log|dy/du|) and D log 256 the change from u in [0, 1]
to pixel units. In expectation over the noise this upper-bounds the discrete data's negative
log-likelihood (Theis et al. 2016); it is the figure papers report (RealNVP: 3.49 on CIFAR-10).
The flow's output is the framework's latent, so ``sample``, ``encode``, ``reconstruct`` and the image
callbacks work as for the other models.
"""
import functools
import math
from collections.abc import Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from gan_lightning.models.base import AdversarialModule, eval_mode
from gan_lightning.nets.flow import Flow, standard_normal_log_prob


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Model-range images in [-1, 1] back to their pixel values p = round((x + 1) * 127.5) in {0..255}."""
    return ((x + 1) * 127.5).round().clamp(0, 255)


def from_pixels(p: torch.Tensor) -> torch.Tensor:
    """Pixel values (possibly fractional) to model range, x = p / 127.5 - 1, clamped to [-1, 1]."""
    return (p / 127.5 - 1).clamp(-1, 1)


class RealNVP(AdversarialModule):
    default_optimizer = functools.partial(torch.optim.Adam, lr=1e-3)

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        levels: int = 2,
        steps_per_level: int = 4,
        hidden: int = 64,
        logit_alpha: float = 0.05,
        temperature: float = 1.0,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        **kwargs,
    ):
        """A normalising flow trained by maximum likelihood on dequantised pixels; reports bits/dim.

        Args:
            data_shape: shape of one example; linked from the data module by the CLI.
            levels: squeezes (2x2 space to depth); height and width must be divisible by 2**levels.
            steps_per_level: Glow steps (ActNorm, invertible 1x1 conv, affine coupling) after each squeeze.
            hidden: channels of each coupling layer's conv net.
            logit_alpha: alpha of RealNVP's logit transform y = logit(alpha + (1 - 2 alpha) u) (0.05 in
                the paper), keeping y away from +-infinity at black and white pixels.
            temperature: standard deviation of z when sampling (below 1: smoother, less varied samples).
            optimizer: optimizer of the flow (default: Adam 1e-3).
            scheduler: optional learning-rate schedule, stepped once per epoch.
            **kwargs: the shared options of ``AdversarialModule`` (ema_decay, gradient_clip_val, seed,
                on_nonfinite, compile).
        """
        super().__init__(latent_dim=math.prod(data_shape), prior="gaussian", **kwargs)
        if steps_per_level < 1 or hidden < 1 or not 0 < logit_alpha < 0.5 or temperature <= 0:
            raise ValueError(f"model.steps_per_level and model.hidden must be >= 1, model.logit_alpha in (0, 0.5) "
                             f"and model.temperature > 0; got {steps_per_level}, {hidden}, {logit_alpha}, "
                             f"{temperature}")
        if self.n_critic != 1 or self.su_lambda:
            raise ValueError("model.n_critic and model.su_lambda are adversarial options; a flow has no critic")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.data_shape, self.alpha, self.temperature = tuple(data_shape), logit_alpha, temperature
        self.flow = Flow(data_shape, levels, steps_per_level, hidden)
        self.add_player("flow", ["flow"], optimizer or self.default_optimizer, scheduler)
        self.add_ema("flow")

    # --- the likelihood ------------------------------------------------------------------

    def logit(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y = logit(v), v = alpha + (1 - 2 alpha) u, and log|dy/du| per example."""
        v = self.alpha + (1 - 2 * self.alpha) * u
        logdet = (math.log(1 - 2 * self.alpha) - v.log() - (1 - v).log()).flatten(1).sum(dim=1)
        return torch.logit(v), logdet

    def unlogit(self, y: torch.Tensor) -> torch.Tensor:
        """The inverse of ``logit``, u = (sigmoid(y) - alpha) / (1 - 2 alpha)."""
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)

    def log_likelihood(self, u: torch.Tensor, flow: nn.Module | None = None) -> torch.Tensor:
        """log p(u) in nats per example, for u in (0, 1)^D: (B, *data_shape) -> (B,)."""
        y, logdet_logit = self.logit(u)
        z, logdet_flow = (flow or self.flow)(y)
        return standard_normal_log_prob(z) + logdet_flow + logdet_logit

    def bits_per_dim(self, x: torch.Tensor, noise: torch.Tensor, flow: nn.Module | None = None) -> torch.Tensor:
        """-log2 of the density of the dequantised pixels p + noise, per dimension: (B, ...) -> (B,).

        x in [-1, 1] (from uint8 pixels), noise in [0, 1) of x's shape; see the module docstring.
        """
        u = (to_pixels(x) + noise) / 256
        d = u[0].numel()
        return (-self.log_likelihood(u, flow) + d * math.log(256)) / (d * math.log(2))

    def draw_training_dequantisation(self, x: torch.Tensor) -> torch.Tensor:
        """This iteration's U[0, 1) noise of x's shape (first dimension: this rank's batch)."""
        return self.rank_rows(lambda m: torch.rand(m, *x.shape[1:], generator=self.noise, device=self.noise.device),
                              len(x)).to(self.device)

    def update_players(self, batch) -> dict[str, torch.Tensor]:
        x = batch[0]
        opt = self.optimizer("flow")
        # One player: maximise the likelihood of the dequantised batch (minimise mean bits/dim).
        loss = self.bits_per_dim(x, self.draw_training_dequantisation(x)).mean()
        self.step(opt, loss, player="flow")
        return {"train/bits_per_dim": loss.detach()}

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str,
                 y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Bits/dim with fixed dequantisation noise (seeded by the batch index)."""
        noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(batch_idx)).to(self.device)
        flow = self.net("flow")
        with eval_mode(flow):
            return {f"{stage}/bits_per_dim": self.bits_per_dim(x.to(self.device), noise, flow).mean()}

    # --- the public API that callbacks and users call --------------------------------------

    def sample(self, n: int | None = None, z: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """f^-1(z) mapped back to pixels, for z given or n draws from N(0, temperature^2 I):
        (n, D) -> (n, *data_shape) in [-1, 1]."""
        if z is None:
            z = self.temperature * self.draw_prior(n, generator)
        flow = self.net("flow")
        with eval_mode(flow):
            y = flow.inverse(z.to(self.device).view(len(z), *flow.latent_shape))
            return from_pixels(256 * self.unlogit(y) - 0.5)  # u = (p + 1/2) / 256 at a bin's centre

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = f(y) at each pixel bin's centre u = (p + 1/2) / 256: (n, *data_shape) -> (n, D)."""
        flow = self.net("flow")
        with eval_mode(flow):
            y, _ = self.logit((to_pixels(x.to(self.device)) + 0.5) / 256)
            return flow(y)[0].flatten(1)

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """f^-1(f(x)): x's pixel values, up to float precision (the flow is a bijection); ``labels`` are not used."""
        return self.sample(z=self.encode(x))
