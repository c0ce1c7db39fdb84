"""Losses and penalties as pure functions of tensors: the adversarial losses of discriminator logits (and
networks for penalties), and the autoencoders' reconstruction and KL terms.

Notation: ``sp`` is softplus, so ``-log sigmoid(t) = sp(-t)`` and ``-log(1 - sigmoid(t)) = sp(t)``.
Every adversarial loss takes raw logits; nothing here calls ``log(sigmoid(.))``, which underflows. Each
adversarial loss is a mean over the batch; the reconstruction and KL terms are per example, (B, ...) -> (B,),
for the model to weight and average.
"""
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

GANLoss = Literal["non_saturating", "minimax", "hinge", "wasserstein"]
GeneratorLoss = Literal["non_saturating", "minimax"]
JointLoss = Literal["non_saturating", "minimax", "su", "su_full"]
Reconstruction = Literal["mse", "bernoulli"]
Likelihood = Literal["bernoulli", "gaussian"]


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """D maximises log D(real) + log(1 - D(fake)); at chance (logits 0) the loss is 2 log 2."""
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()  # -log D(real) - log(1 - D(fake))


def fooling_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """The non-saturating loss of the player that generates ``fake`` (an AAE's encoder against D_z)."""
    return F.softplus(-d_fake).mean()  # -log D(fake)


# --- GAN (Goodfellow et al. 2014) and the losses every GAN framework offers ---------------------

def gan_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor, kind: GANLoss) -> torch.Tensor:
    """The discriminator's (critic's) loss for the chosen game."""
    if kind in ("non_saturating", "minimax"):
        return discriminator_loss(d_real, d_fake)
    if kind == "hinge":  # Lim & Ye 2017; Miyato et al. 2018
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    if kind == "wasserstein":  # Arjovsky et al. 2017: the critic maximises E D(real) - E D(fake)
        return d_fake.mean() - d_real.mean()
    raise ValueError(f"unknown GAN loss {kind!r}; expected one of {GANLoss.__args__}")


def gan_generator_loss(d_fake: torch.Tensor, kind: GANLoss) -> torch.Tensor:
    """The generator's loss given D(G(z))."""
    if kind == "non_saturating":
        return F.softplus(-d_fake).mean()  # -log D(G(z))
    if kind == "minimax":
        return -F.softplus(d_fake).mean()  # log(1 - D(G(z))): the paper's game, saturates early
    if kind in ("hinge", "wasserstein"):
        return -d_fake.mean()
    raise ValueError(f"unknown GAN loss {kind!r}; expected one of {GANLoss.__args__}")


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], x_real: torch.Tensor,
                     x_fake: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad D(x_hat)|| - 1)^2] on random interpolates x_hat.

    ``alpha`` (B,) ~ U[0, 1] are the interpolation weights (drawn from the global RNG when None).
    The norm runs over all non-batch dimensions.
    """
    if alpha is None:
        alpha = torch.rand(len(x_real), device=x_real.device)
    alpha = alpha.to(x_real.dtype).view(len(x_real), *[1] * (x_real.dim() - 1))
    x_hat = (alpha * x_real.detach() + (1 - alpha) * x_fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def r1_penalty(d_real: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E ||grad_x D(x)||^2 on real data only; ``x_real`` must require grad."""
    (grad,) = torch.autograd.grad(d_real.sum(), x_real, create_graph=True)
    return grad.flatten(1).square().sum(dim=1).mean()


# --- ALI / BiGAN: the encoder and generator against a joint D(x, z) -----------------------------

def bigan_encoder_generator_loss(d_real: torch.Tensor, d_fake: torch.Tensor, kind: JointLoss = "non_saturating"
                                 ) -> torch.Tensor:
    """Loss of the encoder and generator of ALI / BiGAN, with ``d_real = D(x, E(x))``, ``d_fake = D(G(z), z)``.

    - ``non_saturating`` (the official code; seed 000 eq. 13.22): labels swapped,
      ``-log(1 - D(x, E(x))) - log D(G(z), z)``.
    - ``minimax`` (the paper's game; seed 000 eq. 13.21): minus the discriminator's loss.
    - ``su`` (Su 2018, seed 001 eq. 41): both pairs pushed towards the encoder label,
      ``-log D(x, E(x)) - log D(G(z), z)``. ``su_full`` (eq. 40) is the same here; the model adds the
      encoder's term, which needs the encoder itself (``ALI.latent_nll``).
    """
    if kind == "non_saturating":
        return F.softplus(d_real).mean() + F.softplus(-d_fake).mean()
    if kind == "minimax":
        return -discriminator_loss(d_real, d_fake)
    if kind in ("su", "su_full"):  # su_full adds the encoder's term outside, see ALI.latent_nll
        return F.softplus(-d_real).mean() + F.softplus(-d_fake).mean()
    raise ValueError(f"unknown generator loss {kind!r}; expected one of {JointLoss.__args__}")


# --- Su's generator regulariser (Su 2018, seed 001) ------------------------------------------------

def su_regulariser(x_fake: torch.Tensor, x_old: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of G(z) from G_old(z), the same z's output before this iteration's G updates.

    ``x_old`` is a constant target (detached), so the term is zero on the first G step of an
    iteration and pulls G back towards its old output on later ones.
    """
    return F.mse_loss(x_fake, x_old.detach())


# --- Autoencoders: reconstruction (AAE, VAE) and the VAE's KL term --------------------------------

def reconstruction_nll(x_hat: torch.Tensor, x: torch.Tensor, likelihood: Likelihood, sigma: float) -> torch.Tensor:
    """-log p(x|z) per example, in nats, for data and decoder outputs in [-1, 1]: (B, ...) -> (B,).

    ``bernoulli``: pixel intensities (x + 1) / 2 as probabilities, the decoder's (x_hat + 1) / 2 as the
    Bernoulli means (binary cross-entropy, Kingma & Welling's MNIST likelihood). ``gaussian``:
    N(x; x_hat, sigma^2) per pixel, i.e. the squared error / (2 sigma^2) plus its normaliser.

    The Bernoulli term is computed in float32 with autocast off: CUDA's autocast refuses
    ``binary_cross_entropy`` under bf16/fp16 mixed precision, and a bf16 sum over 784 pixels would lose
    the nats that the bound is read in. It is written out rather than ``F.binary_cross_entropy``, which raises
    on a NaN mean where the NaN guard (``model.on_nonfinite``) should see a NaN loss and name the player.
    """
    if likelihood == "bernoulli":
        with torch.autocast(x_hat.device.type, enabled=False):
            p = ((x_hat.float() + 1) / 2).clamp(1e-6, 1 - 1e-6)
            t = (x.float() + 1) / 2
            nll = -(t * p.log() + (1 - t) * (1 - p).log())
    else:
        nll = (x - x_hat).square() / (2 * sigma**2) + math.log(sigma * math.sqrt(2 * math.pi))
    return nll.flatten(1).sum(dim=1)


def reconstruction_error(x_hat: torch.Tensor, x: torch.Tensor, kind: Reconstruction) -> torch.Tensor:
    """The AAE's reconstruction phase, summed per example: (B, ...) -> (B,)."""
    if kind == "bernoulli":
        return reconstruction_nll(x_hat, x, "bernoulli", 1.0)  # -log p(x|z), cross-entropy on intensities
    return (x - x_hat).square().flatten(1).sum(dim=1)  # ||x - x_hat||^2


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(log_var)) || N(0, I)) per example, in nats: (B, Z) -> (B,)."""
    return 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var).sum(dim=1)  # 1/2 sum_j mu^2 + s^2 - 1 - log s^2
