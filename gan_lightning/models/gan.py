"""GAN (Goodfellow et al. 2014, arXiv 1406.2661) with the losses and penalties users of GAN frameworks expect.

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))]

Generator losses: ``minimax`` (the paper's game), ``non_saturating`` (-log D(G(z)), the paper's
practical advice), ``hinge`` and ``wasserstein`` (with ``gradient_penalty``: WGAN-GP). ``r1_penalty``
regularises D on real data (Mescheder et al. 2018). ``su_lambda`` with ``generator_steps`` = 2 is Su's
generator regulariser (Su 2018).
"""
import functools
from collections.abc import Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from gan_lightning.errors import ConfigError
from gan_lightning.losses import GANLoss, gan_discriminator_loss, gan_generator_loss, gradient_penalty, r1_penalty
from gan_lightning.models.base import AdversarialModule, Prior, Update, eval_mode
from gan_lightning.nets import ARCHITECTURES, ArchitectureName
from gan_lightning.nets.packing import pack, packed_shape


class GAN(AdversarialModule):
    # DCGAN's optimiser (Adam 2e-4, beta1 0.5), used when the config names none.
    default_optimizer = functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
    # WGAN-GP's (Gulrajani et al. 2017, Algorithm 1: alpha 1e-4, beta1 0, beta2 0.9), with a gradient penalty.
    wgan_gp_optimizer = functools.partial(torch.optim.Adam, lr=1e-4, betas=(0.0, 0.9))

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 100,
        architecture: ArchitectureName = "dcgan",
        width: int = 64,
        prior: Prior = "gaussian",
        loss: GANLoss = "non_saturating",
        gradient_penalty: float = 0.0,
        r1_penalty: float = 0.0,
        dropout: float = 0.0,
        update: Update = "alternating",
        pack: int = 1,
        fresh_generator_noise: bool = False,
        optimizer_d: OptimizerCallable | None = None,
        optimizer_g: OptimizerCallable | None = None,
        scheduler_d: LRSchedulerCallable | None = None,
        scheduler_g: LRSchedulerCallable | None = None,
        **kwargs,
    ):
        """A generator against a discriminator D(x).

        Args:
            data_shape: shape of one example; linked from the data module by the CLI.
            latent_dim: dimension of z.
            architecture: network family: ``mlp``, ``dcgan`` (28/32/64 px) or ``toy`` (2-D mixtures).
            width: hidden units (mlp, toy) or channels at the finest resolution (dcgan).
            prior: p(z): ``gaussian`` or ``uniform`` on [-1, 1]^Z.
            loss: ``non_saturating``, ``minimax``, ``hinge`` or ``wasserstein``.
            gradient_penalty: weight of WGAN-GP's penalty (10 in the paper); D then has no batch norm, and the
                default optimizers are the paper's Adam (1e-4, betas (0, 0.9)). ``wasserstein`` needs it.
            r1_penalty: weight gamma of the R1 penalty gamma/2 E||grad D(x)||^2 on real data; D then has no
                batch norm (which would mix the examples whose gradients R1 penalises one by one).
            dropout: dropout rate of the discriminator.
            update: ``alternating`` (D steps, then G against the updated D, as DCGAN's and WGAN-GP's code) or
                ``simultaneous`` (both losses from one forward pass through the pre-step D, then both steps).
            pack: PacGAN's packing (Lin et al. 2018): D scores m samples of one kind concatenated
                (``nets/packing.py``); 1: unpacked. Not with the per-example penalties.
            fresh_generator_noise: the generator's step draws its own z instead of reusing the discriminator's
                (WGAN-GP's Algorithm 1 and released code); the alternating update only.
            optimizer_d: optimizer of D (default: Adam 2e-4, betas (0.5, 0.999), DCGAN's; with a gradient penalty
                Adam 1e-4, betas (0, 0.9), WGAN-GP's).
            optimizer_g: optimizer of G (same default).
            scheduler_d: optional learning-rate schedule of D, stepped once per epoch.
            scheduler_g: optional learning-rate schedule of G, stepped once per epoch.
            **kwargs: the shared options of ``AdversarialModule`` (n_critic, su_lambda, generator_steps,
                ema_decay, gradient_clip_val, seed, on_nonfinite, compile).
        """
        super().__init__(latent_dim=latent_dim, prior=prior, **kwargs)
        if width < 1 or min(gradient_penalty, r1_penalty) < 0:
            raise ValueError(f"model.width must be >= 1 and the penalty weights >= 0; got {width}, "
                             f"gradient_penalty={gradient_penalty}, r1_penalty={r1_penalty}")
        if pack < 1 or (pack > 1 and (gradient_penalty or r1_penalty)):
            raise ConfigError(f"model.pack must be >= 1, and 1 with model.gradient_penalty or model.r1_penalty (their "
                              f"per-example gradients would mix the packed samples); got pack {pack}")
        if fresh_generator_noise and update == "simultaneous":
            raise ConfigError("model.fresh_generator_noise draws G's own z after D's step; model.update simultaneous "
                              "takes both losses from one z: set model.update alternating, or fresh_generator_noise "
                              "false")
        if loss == "wasserstein" and gradient_penalty == 0:
            raise ConfigError("model.loss wasserstein needs a constraint on the critic, and model.gradient_penalty "
                              "is 0: set model.gradient_penalty 10 (WGAN-GP, Gulrajani et al.; configs/wgan_gp.yaml), "
                              "or another loss")
        nets = ARCHITECTURES[architecture]
        if nets.discriminator is None:
            raise ValueError(f"model.architecture {architecture!r} has no D(x) for a GAN; use mlp, dcgan or toy")
        self.save_hyperparameters(ignore=["optimizer_d", "optimizer_g", "scheduler_d", "scheduler_g"])
        self.loss, self.gp_weight, self.r1_weight = loss, gradient_penalty, r1_penalty
        self.pack, self.fresh_generator_noise = pack, fresh_generator_noise
        self.update = self.check_update(update)
        self.generator = nets.generator(latent_dim, data_shape, width)
        # A gradient penalty is per example, which batch norm's mixing of examples would break: WGAN-GP's critic
        # (Gulrajani et al. §4) and R1's discriminators (Mescheder et al.'s code) have none.
        self.discriminator = nets.discriminator(packed_shape(data_shape, pack), width, dropout,
                                                gradient_penalty == 0 and r1_penalty == 0)
        default = self.wgan_gp_optimizer if gradient_penalty else self.default_optimizer
        self.add_player("discriminator", ["discriminator"], optimizer_d or default, scheduler_d)
        self.add_player("generator", ["generator"], optimizer_g or default, scheduler_g)
        self.add_ema("generator")

    def update_players(self, batch) -> dict[str, torch.Tensor]:
        x = batch[0]
        z = self.draw_training_prior(len(x))
        opt_d, opt_g = self.optimizer("discriminator"), self.optimizer("generator")
        # G's graph only when G steps this iteration on this z
        with torch.set_grad_enabled(self.generator_turn and not self.fresh_generator_noise):
            x_fake = self.generator(z)

        if self.update == "simultaneous" and self.generator_turn:
            # Both losses from one pass of D over x and G(z), before either player steps.
            d_loss, d_fake = self.discriminator_loss(x, x_fake)
            g_loss = gan_generator_loss(d_fake, self.loss)
            self.step_together((opt_d, d_loss, "discriminator"), (opt_g, g_loss, "generator"))
            return {"train/d_loss": d_loss.detach(), "train/g_loss": g_loss.detach()}

        # 1. Discriminator: tell x from G(z), with the optional penalties.
        with self.toggled_optimizer(opt_d):
            d_loss, _ = self.discriminator_loss(x, x_fake.detach())
            self.step(opt_d, d_loss, player="discriminator")
        logs = {"train/d_loss": d_loss.detach()}
        if not self.generator_turn:
            return logs

        # 2. Generator: make the updated D take G(z) for data, on fresh z where the algorithm draws it
        #    (generator_steps times on the same z, held near G_old(z) by Su's regulariser).
        if self.fresh_generator_noise:
            z = self.draw_training_prior(len(x))
            x_fake = self.generator(z)
        logs["train/g_loss"] = self.generator_updates(
            opt_g, "generator", (x_fake,), regenerate=lambda: (self.generator(z),),
            loss=lambda x_fake: gan_generator_loss(self.critic(x_fake), self.loss))
        return logs

    def discriminator_loss(self, x: torch.Tensor, x_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's loss on real x and generated x_fake, with the optional WGAN-GP and R1 penalties, and D's logits
        of x_fake (for a simultaneous generator loss)."""
        x_real = x.detach().requires_grad_(self.r1_weight > 0)  # R1 differentiates D(x) w.r.t. x
        d_real, d_fake = self.critic(x_real), self.critic(x_fake)
        d_loss = gan_discriminator_loss(d_real, d_fake, self.loss)
        if self.gp_weight:
            d_loss = d_loss + self.gp_weight * gradient_penalty(self.discriminator, x, x_fake,
                                                                self.draw_training_uniform(len(x)))
        if self.r1_weight:
            d_loss = d_loss + self.r1_weight / 2 * r1_penalty(d_real, x_real)
        return d_loss, d_fake

    def critic(self, x: torch.Tensor) -> torch.Tensor:
        """D's logits of x, packed ``pack`` samples at a time: (B, ...) -> (B // pack,)."""
        return self.discriminator(pack(x, self.pack))

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str,
                 y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """D's loss on held-out data against samples from a fixed z."""
        x_fake = self.sample(len(x), generator=torch.Generator().manual_seed(batch_idx))
        with eval_mode(self.discriminator):
            return {f"{stage}/d_loss": gan_discriminator_loss(self.critic(x), self.critic(x_fake), self.loss)}
