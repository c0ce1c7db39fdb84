"""ALI (Dumoulin et al. 2017, arXiv 1606.00704) and BiGAN (Donahue et al. 2017, arXiv 1605.09782).

The generator G: z -> x and the encoder E: x -> z play together against a joint discriminator
D(x, z) that tells data pairs (x, E(x)) from generated pairs (G(z), z):

    min_{G,E} max_D  E_x[log D(x, E(x))] + E_z[log(1 - D(G(z), z))]

At the optimum the two joint distributions match and E inverts G. ALI's encoder is Gaussian,
q(z|x) = N(mu(x), sigma(x)^2), sampled with the reparameterisation trick; BiGAN's is deterministic.
"""
import functools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from gan_lightning.errors import ConfigError
from gan_lightning.losses import JointLoss, bigan_encoder_generator_loss, discriminator_loss
from gan_lightning.models.base import AdversarialModule, Prior, Update, batch_statistics_only, eval_mode
from gan_lightning.nets import ARCHITECTURES, ArchitectureName
from gan_lightning.nets.packing import pack, packed_shape

EncoderKind = Literal["gaussian", "deterministic", "change_of_variables"]


class ALI(AdversarialModule):
    # The paper's optimiser (Adam 1e-4, beta1 0.5), used when the config names none.
    default_optimizer = functools.partial(torch.optim.Adam, lr=1e-4, betas=(0.5, 0.999))
    # ALI's code scores both kinds of pair in one batch through D (``get_predictions`` in ``ali/bricks.py``
    # concatenates [x; G(z)] and [E(x); z]), so D's batch norm normalises them together; BiGAN's calls D on each.
    one_discriminator_batch = True
    # The factor on both players' losses: BiGAN's ``train_gan.py`` averages the two terms (``weight = 1.0 /
    # num_loss_terms``), which its coupled weight decay feels; ALI's code sums them.
    loss_weight = 1.0

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 64,
        architecture: ArchitectureName = "dcgan",
        width: int = 64,
        encoder: EncoderKind = "gaussian",
        prior: Prior = "gaussian",
        loss: JointLoss = "non_saturating",
        dropout: float = 0.2,
        squash_encoder: bool = False,
        update: Update = "simultaneous",
        pack: int = 1,
        optimizer_d: OptimizerCallable | None = None,
        optimizer_ge: OptimizerCallable | None = None,
        scheduler_d: LRSchedulerCallable | None = None,
        scheduler_ge: LRSchedulerCallable | None = None,
        **kwargs,
    ):
        """ALI / BiGAN: an encoder and a generator against a joint discriminator D(x, z).

        Args:
            data_shape: shape of one example; linked from the data module by the CLI.
            latent_dim: dimension of z.
            architecture: network family: ``mlp`` (BiGAN's MNIST MLPs), ``dcgan`` (28/32/64 px),
                ``ali`` (the ALI paper's networks: 32x32 CIFAR-10/SVHN, 64x64 CelebA), ``toy`` (2-D mixtures).
            width: hidden units (mlp, toy) or channels at the finest resolution (dcgan, ali).
            encoder: ``gaussian`` q(z|x) with the reparameterisation trick (ALI's image experiments),
                ``deterministic`` (BiGAN) or ``change_of_variables``: z = E(x, eps) on x concatenated with
                eps ~ N(0, I) of x's size (ALI's and PacGAN's toy experiments, ``COVConditional``; vector data only).
            prior: p(z): ``gaussian`` or ``uniform`` on [-1, 1]^Z.
            loss: the G/E loss: ``non_saturating`` (official code), ``minimax`` (the paper's game) or
                ``su`` (Su 2018, eq. 41: both pairs pushed towards the encoder label) or ``su_full`` (eq. 40:
                eq. 41 plus the encoder's term, ``latent_nll``, that eq. 41 drops).
            dropout: dropout rate of the discriminator (architecture ``ali``: on the input of every D layer, x and z
                included, as ALI's SVHN and CelebA code: 0.2; ``ali_cifar10``: 0.5 where its code drops).
            squash_encoder: a deterministic encoder with the uniform prior ends in E(x) = 2 sigmoid(a) - 1, inside
                the prior's support [-1, 1]^Z, as in BiGAN's official code; the probes then use the pre-squash
                activations a (``features``), the official code's 1-NN features. False: E(x) = a.
            update: ``simultaneous`` (ALI's and BiGAN's released code: D's loss and G/E's loss from one forward
                pass through D, then both steps) or ``alternating`` (D steps, then G/E against the updated D).
            pack: PacGAN's packing: D scores m pairs of one kind concatenated (``nets/packing.py``); 1: unpacked.
            optimizer_d: optimizer of D (default: Adam 1e-4, betas (0.5, 0.999)).
            optimizer_ge: optimizer of G and E together (same default).
            scheduler_d: optional learning-rate schedule of D, stepped once per epoch.
            scheduler_ge: optional learning-rate schedule of G and E, stepped once per epoch.
            **kwargs: the shared options of ``AdversarialModule`` (n_critic, su_lambda, generator_steps,
                ema_decay, gradient_clip_val, seed, on_nonfinite, compile).
        """
        super().__init__(latent_dim=latent_dim, prior=prior, **kwargs)
        if width < 1 or not 0 <= dropout < 1 or pack < 1:
            raise ValueError(f"model.width and model.pack must be >= 1 and model.dropout in [0, 1); got {width}, "
                             f"{pack}, {dropout}")
        self.save_hyperparameters(ignore=["optimizer_d", "optimizer_ge", "scheduler_d", "scheduler_ge"])
        self.loss, self.gaussian_encoder = loss, encoder == "gaussian"
        self.noise_input, self.pack = encoder == "change_of_variables", pack
        if self.noise_input and (len(data_shape) != 1 or loss == "su_full"):
            raise ConfigError(f"model.encoder change_of_variables concatenates noise to vector data (the toy mixtures) "
                              f"and has no density for loss su_full; got data shape {tuple(data_shape)}, loss {loss}: "
                              f"set model.encoder gaussian or deterministic")
        if squash_encoder and (encoder != "deterministic" or prior != "uniform"):
            raise ConfigError(f"model.squash_encoder maps E(x) into the uniform prior's support [-1, 1]^Z; it needs "
                              f"encoder: deterministic and prior: uniform, not encoder: {encoder}, prior: {prior}. "
                              f"Set model.squash_encoder false")
        self.squash_encoder = squash_encoder
        self.update = self.check_update(update)
        nets = ARCHITECTURES[architecture]
        self.generator = nets.generator(latent_dim, data_shape, width)
        encoder_input = (2 * data_shape[0],) if self.noise_input else data_shape  # [x; eps]
        self.encoder = nets.encoder(2 * latent_dim if self.gaussian_encoder else latent_dim, encoder_input, width)
        self.discriminator = nets.joint_discriminator(pack * latent_dim, packed_shape(data_shape, pack), width,
                                                      dropout)
        self.add_player("discriminator", ["discriminator"], optimizer_d or self.default_optimizer, scheduler_d)
        self.add_player("generator_encoder", ["generator", "encoder"], optimizer_ge or self.default_optimizer,
                        scheduler_ge)
        self.add_ema("generator", "encoder")

    def infer(self, x: torch.Tensor, encoder: torch.nn.Module | None = None) -> torch.Tensor:
        """z ~ q(z|x): mu + sigma * eps for the Gaussian encoder, E(x, eps) for the change of variables (eps from
        the training noise), else E(x)."""
        if self.noise_input:
            eps = self.draw_training_normal(x.shape) if self.noise is not None else torch.randn_like(x)
            return (encoder or self.encoder)(torch.cat([x, eps], dim=1))  # (B, 2 * X) -> (B, Z)
        h = (encoder or self.encoder)(x)  # (B, Z) or (B, 2Z)
        if not self.gaussian_encoder:
            return self.squash(h)
        mu, log_sigma = h.chunk(2, dim=1)
        eps = self.draw_training_normal(mu.shape) if self.noise is not None else torch.randn_like(mu)
        return mu + log_sigma.exp() * eps

    def update_players(self, batch) -> dict[str, torch.Tensor]:
        x = batch[0]
        z = self.draw_training_prior(len(x))
        opt_d, opt_ge = self.optimizer("discriminator"), self.optimizer("generator_encoder")

        # G(z) and E(x) once per iteration; their graphs are kept only when G and E step this time.
        with torch.set_grad_enabled(self.generator_turn):
            x_fake, z_enc = self.generator(z), self.infer(x)

        if self.update == "simultaneous" and self.generator_turn:
            # The released code's one gradient step over both costs: D scores each kind of pair once, and D's loss
            # (w.r.t. D) and G/E's loss (w.r.t. G and E) both see D as it was before either player steps.
            d_real, d_fake = self.score_pairs(x, z_enc, x_fake, z)
            d_loss = self.loss_weight * discriminator_loss(d_real, d_fake)
            ge_loss = self.encoder_generator_loss(x, z, x_fake, z_enc, scores=(d_real, d_fake))
            self.step_together((opt_d, d_loss, "discriminator"), (opt_ge, ge_loss, "generator_encoder"))
            return {"train/d_loss": d_loss.detach(), "train/ge_loss": ge_loss.detach()}

        # 1. Discriminator: tell data pairs (x, E(x)) from generated pairs (G(z), z).
        with self.toggled_optimizer(opt_d):
            d_loss = self.loss_weight * discriminator_loss(*self.score_pairs(x, z_enc.detach(), x_fake.detach(), z))
            self.step(opt_d, d_loss, player="discriminator")
        logs = {"train/d_loss": d_loss.detach()}
        if not self.generator_turn:
            return logs

        # 2. Generator and encoder: make the updated D mistake each kind of pair for the other
        #    (generator_steps times on the same z, held near G_old(z) by Su's regulariser).
        logs["train/ge_loss"] = self.generator_updates(
            opt_ge, "generator_encoder", (x_fake, z_enc), regenerate=lambda: (self.generator(z), self.infer(x)),
            loss=lambda x_fake, z_enc: self.encoder_generator_loss(x, z, x_fake, z_enc))
        return logs

    def encoder_generator_loss(self, x: torch.Tensor, z: torch.Tensor, x_fake: torch.Tensor, z_enc: torch.Tensor,
                               scores: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The G/E loss of ``self.loss`` on data pairs (x, E(x)) and generated pairs (G(z), z); for ``su_full``
        also the encoder's term of Su's eq. 40 (``latent_nll``). ``scores``: D's logits of the two kinds of pairs
        when already computed (simultaneous updates), else D scores them now."""
        d_real, d_fake = scores or self.score_pairs(x, z_enc, x_fake, z)
        loss = self.loss_weight * bigan_encoder_generator_loss(d_real, d_fake, self.loss)
        if self.loss == "su_full":
            loss = loss + self.latent_nll(z, x_fake.detach())
        return loss

    def score_pairs(self, x: torch.Tensor, z_enc: torch.Tensor, x_fake: torch.Tensor,
                    z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits of the data pairs (x, E(x)) and of the generated pairs (G(z), z), packed ``pack`` at a time:
        in one call over both kinds (ALI) or one call per kind (BiGAN; ``one_discriminator_batch``)."""
        x, z_enc, x_fake, z = (pack(t, self.pack) for t in (x, z_enc, x_fake, z))
        if not self.one_discriminator_batch:
            return self.discriminator(x, z_enc), self.discriminator(x_fake, z)
        scores = self.discriminator(torch.cat([x, x_fake]), torch.cat([z_enc, z]))  # [x; G(z)], [E(x); z]
        return scores[: len(x)], scores[len(x):]

    def latent_nll(self, z: torch.Tensor, x_fake: torch.Tensor) -> torch.Tensor:
        """E_z[-log p(z | G(z))]: the encoder's term that Su's eq. 41 drops from eq. 40 (seed 001).

        Su's y = 0 part of KL(q(x,z,y) || p(x,z,y)), with D optimal for the previous players, leaves
        E_{z, x~q(x|z)}[-log p(z|x) + log p_old(z|x)] besides -log D(G(z), z). Evaluated on the generated
        pairs, not on the encoder's own, it is not a KL: its gradient at p = p_old is the encoder's
        likelihood of z given G(z), so the encoder is taught to invert the generator. Its gradient into G
        through x cancels at p = p_old, hence ``x_fake`` comes in detached. The Gaussian encoder gives
        sum_i (z_i - mu_i)^2 / (2 sigma_i^2) + log sigma_i; the deterministic one, a unit-variance Gaussian.
        Constants dropped; summed over z's dimensions like the log-density, averaged over the batch.
        """
        with batch_statistics_only(self.encoder):  # generated images stay out of E's eval-mode statistics
            h = self.encoder(x_fake)
        if not self.gaussian_encoder:
            return 0.5 * (z - self.squash(h)).pow(2).sum(1).mean()
        mu, log_sigma = h.chunk(2, dim=1)
        return (0.5 * ((z - mu) / log_sigma.exp()).pow(2) + log_sigma).sum(1).mean()

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str,
                 y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Reconstruction error of G(E(x)) and D's loss on held-out pairs, with the same z at every call."""
        z = self.draw_prior(len(x), generator=torch.Generator().manual_seed(batch_idx))
        with eval_mode(self.discriminator):
            d_loss = self.loss_weight * discriminator_loss(*self.score_pairs(x, self.encode(x), self.sample(z=z), z))
        return {f"{stage}/recon_mse": F.mse_loss(self.reconstruct(x), x), f"{stage}/d_loss": d_loss}

    # --- the public API that callbacks and users call --------------------------------------

    def squash(self, a: torch.Tensor) -> torch.Tensor:
        """The deterministic encoder's output map: 2 sigmoid(a) - 1 with ``squash_encoder``, else the identity."""
        return 2 * torch.sigmoid(a) - 1 if self.squash_encoder else a

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output layer before any squashing, the probes' E(x) features: (n, ...) -> (n, Z).

        The posterior mean for the Gaussian encoder; E(x, 0), at the noise's mode, for the change of variables;
        the official BiGAN code's 1-NN features ``a`` with ``squash_encoder``."""
        encoder, x = self.net("encoder"), x.to(self.device)
        with eval_mode(encoder):
            h = encoder(torch.cat([x, torch.zeros_like(x)], dim=1) if self.noise_input else x)
        return h[:, : self.latent_dim]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x), the posterior mean for the Gaussian encoder: (n, *data_shape) -> (n, Z)."""
        return self.squash(self.features(x))

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G(E(x)), the inversion the game learns; ``labels`` are not used."""
        return self.sample(z=self.encode(x))


class BiGAN(ALI):
    # The official code's optimiser (Adam 2e-4, beta1 0.5, weight decay 2.5e-5), used when the config names none.
    default_optimizer = functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999), weight_decay=2.5e-5)
    one_discriminator_batch = False  # train_gan.py without --cat_inputs: D(x, E(x)) and D(G(z), z) in two calls
    loss_weight = 0.5                # each player's loss is the mean of its two terms (train_gan.py, lines 454-459)

    def __init__(
        self,
        latent_dim: int = 50,
        architecture: ArchitectureName = "mlp",
        width: int = 1024,
        encoder: EncoderKind = "deterministic",
        prior: Prior = "uniform",
        dropout: float = 0.0,
        squash_encoder: bool = False,
        update: Update = "simultaneous",
        **kwargs,
    ):
        """BiGAN: ALI's game with a deterministic encoder; defaults are the official MNIST setting
        (MLPs of 1024 units, z ~ U[-1, 1]^50, Adam 2e-4 / beta1 0.5 / weight decay 2.5e-5).

        Args:
            latent_dim: dimension of z.
            architecture: network family (see ALI).
            width: hidden units or channels (see ALI).
            encoder: ``deterministic`` (BiGAN) or ``gaussian``.
            prior: p(z): ``uniform`` on [-1, 1]^Z (the paper) or ``gaussian``.
            dropout: dropout rate of the discriminator.
            squash_encoder: E(x) = 2 sigmoid(a) - 1 and probes on a, as in the official code (see ALI).
            update: ``simultaneous`` (the official ``train_gan.py``, unless ``--no_update_both``) or ``alternating``.
        """
        super().__init__(latent_dim=latent_dim, architecture=architecture, width=width, encoder=encoder, prior=prior,
                         dropout=dropout, squash_encoder=squash_encoder, update=update, **kwargs)
