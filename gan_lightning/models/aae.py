"""Adversarial autoencoders (Makhzani et al. 2016, arXiv 1511.05644).

An autoencoder whose aggregated posterior q(z) = E_x[q(z|x)] is matched to a prior p(z) by a GAN played
in latent space. Each iteration runs the paper's phases (Sec. 2), each behind its own optimizer:

    1. reconstruction      E, G   minimise  ||x - G(E(x))||^2                      (or -log p(x|z), Bernoulli)
    2. regularisation, D   D_z    maximises log D_z(z') + log(1 - D_z(E(x))),   z' ~ p(z)
    3. regularisation, E   E      minimises -log D_z(E(x))      (the encoder is D_z's generator)

``AAE`` is the unsupervised model (Sec. 2, Figures 2-3) with a label-conditioned prior (Sec. 4, Figure 4:
the label's one-hot goes to D_z, unlabelled points use the whole mixture) and the supervised model
(Sec. 5, Figure 6: the decoder receives the label's one-hot and z, which learns style). Su's objective
(seed 001) trains E and G jointly instead of in phases 1 and 3:

    L_{E,G} = E_x[ -log D_z(E(x)) + lambda * ||x - G(E(x))||^2 ]

The models with a categorical code y beside the style z (Sec. 6-8: semi-supervised classification,
clustering, dimensionality reduction) are in ``semi_supervised_aae``; they share this file's default
optimizers and option checks.
"""
import functools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from gan_lightning.losses import Reconstruction, discriminator_loss, fooling_loss, reconstruction_error
from gan_lightning.models.base import AdversarialModule, eval_mode
from gan_lightning.nets import ARCHITECTURES, ArchitectureName, LatentDiscriminator
from gan_lightning.priors import PriorName, make_prior

EncoderKind = Literal["deterministic", "gaussian"]
Conditioning = Literal["none", "prior", "decoder"]
Objective = Literal["phases", "joint"]

# The adversarial phases: Adam 1e-4, beta1 0.5 (GAN practice); the reconstruction phase: Adam 1e-3.
ADVERSARIAL_OPTIMIZER = functools.partial(torch.optim.Adam, lr=1e-4, betas=(0.5, 0.999))
RECONSTRUCTION_OPTIMIZER = functools.partial(torch.optim.Adam, lr=1e-3)


def check_adversarial_options(model: AdversarialModule, width: int, discriminator_width: int, prior_std: float):
    """Refuse, naming them, the sizes and shared options that no AAE can use (here and in semi_supervised_aae)."""
    if width < 1 or discriminator_width < 1 or prior_std <= 0:
        raise ValueError(f"model.width and model.discriminator_width must be >= 1 and model.prior_std > 0; got "
                         f"{width}, {discriminator_width}, {prior_std}")
    if model.su_lambda or model.generator_steps != 1:
        raise ValueError("model.su_lambda and model.generator_steps regularise a data-space generator; an AAE's "
                         "adversarial player is its encoder (for Su's AAE objective set model.objective joint)")


class AAE(AdversarialModule):
    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 8,
        architecture: ArchitectureName = "mlp",
        width: int = 1000,
        prior: PriorName = "gaussian",
        prior_std: float = 1.0,
        encoder: EncoderKind = "deterministic",
        conditioning: Conditioning = "none",
        n_classes: int = 10,
        reconstruction: Reconstruction = "mse",
        objective: Objective = "phases",
        joint_lambda: float = 1.0,
        discriminator_width: int = 1000,
        optimizer_ae: OptimizerCallable | None = None,
        optimizer_d: OptimizerCallable | None = None,
        optimizer_e: OptimizerCallable | None = None,
        scheduler_ae: LRSchedulerCallable | None = None,
        scheduler_d: LRSchedulerCallable | None = None,
        scheduler_e: LRSchedulerCallable | None = None,
        **kwargs,
    ):
        """The adversarial autoencoder, unsupervised, with a label-conditioned prior, or supervised.

        Args:
            data_shape: shape of one example; linked from the data module by the CLI.
            latent_dim: dimension of z (2 for the ``mixture`` and ``swiss_roll`` priors).
            architecture: network family of E and G (see ALI); D_z is always an MLP.
            width: hidden units (mlp, toy) or channels (dcgan, ali) of E and G (paper: 1000).
            prior: p(z): ``gaussian`` N(0, prior_std^2 I), ``mixture`` of 10 2-D Gaussians, ``swiss_roll``.
            prior_std: standard deviation of the Gaussian prior (paper, MNIST: 5).
            encoder: ``deterministic`` E(x) (the paper's choice) or ``gaussian`` q(z|x) = N(mu(x), sigma(x)^2),
                sampled with the reparameterisation trick.
            conditioning: ``none``; ``prior``: the label's one-hot (an extra slot for unlabelled examples,
                label -1) goes to D_z and labelled examples are matched to their label's component of the
                prior (Figure 4); ``decoder``: the supervised AAE, G(one-hot(y), z) (Figure 6).
            n_classes: labels of the data (and components of the 2-D priors).
            reconstruction: ``mse`` (squared error) or ``bernoulli`` (cross-entropy on intensities).
            objective: ``phases`` (the paper) or ``joint``: Su's L_{E,G} = -log D_z(E(x)) + joint_lambda *
                ||x - G(E(x))||^2, one update of E and G together (optimizer_ae; optimizer_e unused).
            joint_lambda: weight of the reconstruction term in Su's objective.
            discriminator_width: hidden units of D_z's two layers (paper: 1000).
            optimizer_ae: optimizer of the reconstruction phase, E and G (default: Adam 1e-3).
            optimizer_d: optimizer of D_z (default: Adam 1e-4, betas (0.5, 0.999)).
            optimizer_e: optimizer of the encoder's regularisation phase (same default as D_z).
            scheduler_ae: optional schedule of optimizer_ae, stepped once per epoch.
            scheduler_d: optional schedule of optimizer_d.
            scheduler_e: optional schedule of optimizer_e.
            **kwargs: the shared options of ``AdversarialModule`` (n_critic: D_z steps per encoder step,
                ema_decay, gradient_clip_val, seed, on_nonfinite, compile).
        """
        super().__init__(latent_dim=latent_dim, prior="gaussian", **kwargs)
        check_adversarial_options(self, width, discriminator_width, prior_std)
        self.save_hyperparameters(ignore=["optimizer_ae", "optimizer_d", "optimizer_e", "scheduler_ae",
                                          "scheduler_d", "scheduler_e"])
        self.latent_prior = make_prior(prior, latent_dim, prior_std, n_classes)
        if conditioning == "prior" and self.latent_prior.n_components != n_classes:
            raise ValueError(f"model.conditioning 'prior' matches each label to a component of the prior; "
                             f"model.prior {prior!r} has none: use mixture or swiss_roll")
        self.gaussian_encoder, self.conditioning, self.n_classes = encoder == "gaussian", conditioning, n_classes
        self.reconstruction, self.objective, self.joint_lambda = reconstruction, objective, joint_lambda
        nets = ARCHITECTURES[architecture]
        label_dim = n_classes if conditioning == "decoder" else 0
        condition_dim = n_classes + 1 if conditioning == "prior" else 0   # + 1: the "unlabelled" slot
        self.encoder = nets.encoder(2 * latent_dim if self.gaussian_encoder else latent_dim, data_shape, width)
        self.generator = nets.generator(label_dim + latent_dim, data_shape, width)   # the decoder
        self.discriminator = LatentDiscriminator(latent_dim + condition_dim, discriminator_width)
        # The encoder is in two players: the paper's phases 1 and 3 update it with their own optimizers (and
        # learning rates). Under player_ddp it still has one DDP wrapper, which both phases' steps go through.
        self.add_player("autoencoder", ["encoder", "generator"], optimizer_ae or RECONSTRUCTION_OPTIMIZER, scheduler_ae)
        self.add_player("discriminator", ["discriminator"], optimizer_d or ADVERSARIAL_OPTIMIZER, scheduler_d)
        if objective == "phases":
            self.add_player("encoder", ["encoder"], optimizer_e or ADVERSARIAL_OPTIMIZER, scheduler_e)
        self.add_ema("encoder", "generator")

    # --- the pieces of the algorithm ------------------------------------------------------------

    def infer(self, x: torch.Tensor, encoder: nn.Module | None = None) -> torch.Tensor:
        """z ~ q(z|x): E(x), or mu + sigma * eps for the Gaussian encoder (eps from the training noise)."""
        h = (encoder or self.encoder)(x)
        if not self.gaussian_encoder:
            return h
        mu, log_var = h.chunk(2, dim=1)
        eps = self.draw_training_normal(mu.shape) if self.noise is not None else torch.randn_like(mu)
        return mu + (0.5 * log_var).exp() * eps

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None, generator: nn.Module | None = None):
        """G(z), or G(one-hot(y), z) for the supervised AAE."""
        if self.conditioning == "decoder":
            if y is None or (y < 0).any():
                raise ValueError("the supervised AAE (model.conditioning decoder) decodes with every example's "
                                 "label: unset data.n_labelled, or use conditioning prior for partly labelled data")
            z = torch.cat([F.one_hot(y, self.n_classes).to(z), z], dim=1)
        return (generator or self.generator)(z)

    def prior_condition(self, y: torch.Tensor) -> torch.Tensor | None:
        """D_z's second input for the label-conditioned prior: one-hot(y), the last slot for unlabelled (-1)."""
        if self.conditioning != "prior":
            return None
        return F.one_hot(torch.where(y >= 0, y, self.n_classes), self.n_classes + 1).float()

    def draw_training_latent(self, y: torch.Tensor) -> torch.Tensor:
        """This iteration's prior samples z' for this rank's batch; labelled examples take their label's
        component when the prior is label-conditioned."""
        n, prior = len(y), self.latent_prior
        eps = self.draw_training_normal((n, prior.dim))
        k = self.rank_rows(lambda m: torch.randint(prior.n_components, (m,), generator=self.noise,
                                                   device=self.noise.device), n).to(self.device)
        if self.conditioning == "prior":
            k = torch.where(y >= 0, y, k)
        return prior.transform(eps, k)

    def update_players(self, batch) -> dict[str, torch.Tensor]:
        x = batch[0]
        y = batch[1] if len(batch) > 1 else torch.full((len(x),), -1, device=self.device)
        z_prior, condition = self.draw_training_latent(y), self.prior_condition(y)
        logs = {}

        if self.objective == "phases":
            # 1. Reconstruction: E and G minimise the reconstruction error.
            opt_ae = self.optimizer("autoencoder")
            with self.toggled_optimizer(opt_ae):
                rec = reconstruction_error(self.decode(self.infer(x), y), x, self.reconstruction).mean()
                self.step(opt_ae, rec, player="autoencoder")
            logs["train/reconstruction"] = rec.detach()

        # 2. Regularisation, D_z: samples of the prior are real, the codes of the data are fake.
        opt_d = self.optimizer("discriminator")
        with self.toggled_optimizer(opt_d):
            with torch.no_grad():
                z_data = self.infer(x)
            d_loss = discriminator_loss(self.discriminator(z_prior, condition), self.discriminator(z_data, condition))
            self.step(opt_d, d_loss, player="discriminator")
        logs["train/d_loss"] = d_loss.detach()
        if not self.generator_turn:
            return logs

        if self.objective == "phases":
            # 3. Regularisation, E: the encoder makes its codes pass for samples of the prior.
            opt_e = self.optimizer("encoder")
            with self.toggled_optimizer(opt_e):
                e_loss = fooling_loss(self.discriminator(self.infer(x), condition))
                self.step(opt_e, e_loss, player="encoder")
            logs["train/e_loss"] = e_loss.detach()
        else:
            # Su: E and G together, -log D_z(E(x)) + lambda ||x - G(E(x))||^2.
            opt_ae = self.optimizer("autoencoder")
            with self.toggled_optimizer(opt_ae):
                z = self.infer(x)
                e_loss = fooling_loss(self.discriminator(z, condition))
                rec = reconstruction_error(self.decode(z, y), x, self.reconstruction).mean()
                self.step(opt_ae, e_loss + self.joint_lambda * rec, player="autoencoder")
            logs.update({"train/e_loss": e_loss.detach(), "train/reconstruction": rec.detach()})
        return logs

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str, y: torch.Tensor | None = None):
        """G(E(x))'s squared error, and D_z's loss on held-out codes against fixed prior samples."""
        y = y if y is not None else torch.full((len(x),), -1, device=self.device)
        z = self.encode(x)
        z_prior = self.latent_prior.sample(len(x), torch.Generator().manual_seed(batch_idx),
                                           y if self.conditioning == "prior" else None).to(self.device)
        with eval_mode(self.discriminator):
            condition = self.prior_condition(y)
            d_loss = discriminator_loss(self.discriminator(z_prior, condition), self.discriminator(z, condition))
        logs = {f"{stage}/d_loss": d_loss}
        if self.conditioning != "decoder" or (y >= 0).all():
            logs[f"{stage}/recon_mse"] = F.mse_loss(self.reconstruct(x, y), x)
        return logs

    # --- the public API that callbacks and users call --------------------------------------

    def draw_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from p(z) (any component): (n, Z)."""
        return self.latent_prior.sample(n, generator, device=self.device).to(self.device)

    def sample(self, n: int | None = None, z: torch.Tensor | None = None,
               generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G(z) for z given or drawn from p(z); the supervised AAE takes ``labels`` (drawn uniformly when None)."""
        z = self.draw_prior(n, generator) if z is None else z.to(self.device)
        if self.conditioning == "decoder" and labels is None:
            labels = torch.randint(self.n_classes, (len(z),), generator=generator,
                                   device=generator.device if generator is not None else self.device)
        net = self.net("generator")
        with eval_mode(net):
            return self.decode(z, None if labels is None else labels.to(self.device), net)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) (the posterior mean for the Gaussian encoder): (n, *data_shape) -> (n, Z)."""
        encoder = self.net("encoder")
        with eval_mode(encoder):
            return encoder(x.to(self.device))[:, : self.latent_dim]

    style = encode  # the supervised AAE's z is the style the label leaves out

    @property
    def class_conditional(self) -> bool:
        """Whether the decoder takes a class (the supervised AAE): ``generate`` and StyleGrid need one."""
        return self.conditioning == "decoder"

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G(E(x)); the supervised AAE decodes with the true ``labels``."""
        return self.sample(z=self.encode(x), labels=labels)

    def generate(self, style: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The supervised AAE's G(one-hot(labels), style): the same style drawn as each class."""
        if self.conditioning != "decoder":
            raise ValueError("generate(style, labels) needs the supervised AAE (model.conditioning decoder)")
        return self.sample(z=style, labels=labels)

