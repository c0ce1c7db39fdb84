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

``SemiSupervisedAAE`` (Sec. 6, Figure 8) infers a categorical y ~ q(y|x) and a style z with two
discriminators and adds a classification phase on the labelled examples; ``ClusteringAAE`` (Sec. 7) is the
same model without labels, y taking K clusters; ``cluster_heads`` (Sec. 8, Figure 11) maps y to a
low-dimensional representation W y + z with a cost on cluster heads closer than a margin.
"""
import functools
from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from gan_lightning.distributed import GLOBAL_VALUE
from gan_lightning.errors import ConfigError
from gan_lightning.losses import discriminator_loss
from gan_lightning.metrics.clustering import ConfidentLabels, LabelContingency, labelled_cluster_accuracy
from gan_lightning.models.base import AdversarialModule, eval_mode
from gan_lightning.models.vae import reconstruction_nll
from gan_lightning.nets import ARCHITECTURES, ArchitectureName, LatentDiscriminator
from gan_lightning.priors import PriorName, make_prior

EncoderKind = Literal["deterministic", "gaussian"]
Conditioning = Literal["none", "prior", "decoder"]
Reconstruction = Literal["mse", "bernoulli"]
Objective = Literal["phases", "joint"]

# The adversarial phases: Adam 1e-4, beta1 0.5 (GAN practice); the reconstruction phase: Adam 1e-3.
ADVERSARIAL_OPTIMIZER = functools.partial(torch.optim.Adam, lr=1e-4, betas=(0.5, 0.999))
RECONSTRUCTION_OPTIMIZER = functools.partial(torch.optim.Adam, lr=1e-3)


def reconstruction_error(x_hat: torch.Tensor, x: torch.Tensor, kind: Reconstruction) -> torch.Tensor:
    """||x - x_hat||^2 (``mse``) or the Bernoulli negative log-likelihood, summed per example: (B, ...) -> (B,)."""
    if kind == "bernoulli":
        return reconstruction_nll(x_hat, x, "bernoulli", 1.0)
    return (x - x_hat).square().flatten(1).sum(dim=1)


def fooling_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """-log D(fake): the non-saturating loss of the player that generates ``fake``."""
    return F.softplus(-d_fake).mean()


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
        optimizer_ae: Optional[OptimizerCallable] = None,
        optimizer_d: Optional[OptimizerCallable] = None,
        optimizer_e: Optional[OptimizerCallable] = None,
        scheduler_ae: Optional[LRSchedulerCallable] = None,
        scheduler_d: Optional[LRSchedulerCallable] = None,
        scheduler_e: Optional[LRSchedulerCallable] = None,
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

    def infer(self, x: torch.Tensor, encoder: Optional[nn.Module] = None) -> torch.Tensor:
        """z ~ q(z|x): E(x), or mu + sigma * eps for the Gaussian encoder (eps from the training noise)."""
        h = (encoder or self.encoder)(x)
        if not self.gaussian_encoder:
            return h
        mu, log_var = h.chunk(2, dim=1)
        eps = self.draw_training_normal(mu.shape) if self.noise is not None else torch.randn_like(mu)
        return mu + (0.5 * log_var).exp() * eps

    def decode(self, z: torch.Tensor, y: Optional[torch.Tensor] = None, generator: Optional[nn.Module] = None):
        """G(z), or G(one-hot(y), z) for the supervised AAE."""
        if self.conditioning == "decoder":
            if y is None or (y < 0).any():
                raise ValueError("the supervised AAE (model.conditioning decoder) decodes with every example's "
                                 "label: unset data.n_labelled, or use conditioning prior for partly labelled data")
            z = torch.cat([F.one_hot(y, self.n_classes).to(z), z], dim=1)
        return (generator or self.generator)(z)

    def prior_condition(self, y: torch.Tensor) -> Optional[torch.Tensor]:
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

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str, y: Optional[torch.Tensor] = None):
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

    def draw_prior(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n draws from p(z) (any component): (n, Z)."""
        return self.latent_prior.sample(n, generator, device=self.device).to(self.device)

    def sample(self, n: Optional[int] = None, z: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
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

    def reconstruct(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """G(E(x)); the supervised AAE decodes with the true ``labels``."""
        return self.sample(z=self.encode(x), labels=labels)

    def generate(self, style: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The supervised AAE's G(one-hot(labels), style): the same style drawn as each class."""
        if self.conditioning != "decoder":
            raise ValueError("generate(style, labels) needs the supervised AAE (model.conditioning decoder)")
        return self.sample(z=style, labels=labels)


def check_adversarial_options(model: AdversarialModule, width: int, discriminator_width: int, prior_std: float):
    if width < 1 or discriminator_width < 1 or prior_std <= 0:
        raise ValueError(f"model.width and model.discriminator_width must be >= 1 and model.prior_std > 0; got "
                         f"{width}, {discriminator_width}, {prior_std}")
    if model.su_lambda or model.generator_steps != 1:
        raise ValueError("model.su_lambda and model.generator_steps regularise a data-space generator; an AAE's "
                         "adversarial player is its encoder (for Su's AAE objective set model.objective joint)")


class SemiSupervisedAAE(AdversarialModule):
    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        latent_dim: int = 10,
        architecture: ArchitectureName = "mlp",
        width: int = 1000,
        prior_std: float = 1.0,
        supervised: bool = True,
        labelled_batch_size: Optional[int] = None,
        cluster_heads: bool = False,
        head_margin: float = 3.0,
        reconstruction: Reconstruction = "mse",
        discriminator_width: int = 1000,
        input_noise: float = 0.0,
        optimizer_ae: Optional[OptimizerCallable] = None,
        optimizer_d: Optional[OptimizerCallable] = None,
        optimizer_e: Optional[OptimizerCallable] = None,
        optimizer_c: Optional[OptimizerCallable] = None,
        scheduler_ae: Optional[LRSchedulerCallable] = None,
        scheduler_d: Optional[LRSchedulerCallable] = None,
        scheduler_e: Optional[LRSchedulerCallable] = None,
        scheduler_c: Optional[LRSchedulerCallable] = None,
        **kwargs,
    ):
        """The semi-supervised AAE: q(y|x) categorical, q(z|x) style, two latent discriminators.

        Phases per iteration: reconstruction (E, G) from (y, z); regularisation of D_y (one-hot samples of
        Cat(1/K) against q(y|x)) and D_z (N(0, prior_std^2 I) against q(z|x)); the encoder fooling both; and,
        when ``supervised``, the classification phase: cross-entropy of q(y|x) on a batch of the data
        module's labelled subset (``data.n_labelled``). Logs the classification error (``val/error``,
        ``test/error``) or, without labels, the cluster errors (see ``ClusteringAAE``).

        Args:
            data_shape: shape of one example; linked from the data module by the CLI.
            n_classes: categories of y: the labels (semi-supervised) or the clusters K (clustering).
            latent_dim: dimension of the style z (paper: 10 for MNIST; the representation's dimension n
                with cluster heads).
            architecture: network family of E and G (see ALI); D_y and D_z are MLPs.
            width: hidden units (mlp) or channels (dcgan) of E and G (paper: 1000).
            prior_std: standard deviation of the style prior.
            supervised: run the classification phase (False: unsupervised clustering).
            labelled_batch_size: labelled examples per classification phase (default: the training batch size).
            cluster_heads: dimensionality reduction: G decodes W y + z, W a learned (K, latent_dim) matrix of
                cluster heads, and the reconstruction phase adds sum_{i<j} max(0, head_margin - ||w_i - w_j||).
            head_margin: eta, the distance below which two cluster heads are penalised.
            reconstruction: ``mse`` or ``bernoulli`` (see AAE).
            discriminator_width: hidden units of D_y's and D_z's two layers.
            input_noise: standard deviation of Gaussian noise added to the encoder's input in training, in
                every phase (one draw per iteration for phases 1-3, one for the labelled batch); the
                reconstruction target stays the clean x, so phase 1 is a denoising autoencoder. 0: off.
            optimizer_ae: optimizer of the reconstruction phase (E, G, cluster heads; default Adam 1e-3).
            optimizer_d: optimizer of D_y and D_z (default: Adam 1e-4, betas (0.5, 0.999)).
            optimizer_e: optimizer of the encoder's regularisation phase (same default).
            optimizer_c: optimizer of the classification phase (default: Adam 1e-3).
            scheduler_ae: optional schedule of optimizer_ae, stepped once per epoch.
            scheduler_d: optional schedule of optimizer_d.
            scheduler_e: optional schedule of optimizer_e.
            scheduler_c: optional schedule of optimizer_c.
            **kwargs: the shared options of ``AdversarialModule`` (n_critic, ema_decay, gradient_clip_val,
                seed, on_nonfinite, compile).
        """
        super().__init__(latent_dim=latent_dim, prior="gaussian", **kwargs)
        check_adversarial_options(self, width, discriminator_width, prior_std)
        if n_classes < 2 or head_margin < 0 or input_noise < 0:
            raise ValueError(f"model.n_classes must be >= 2, model.head_margin >= 0 and model.input_noise >= 0; got "
                             f"{n_classes}, {head_margin}, {input_noise}")
        self.save_hyperparameters(ignore=["optimizer_ae", "optimizer_d", "optimizer_e", "optimizer_c", "scheduler_ae",
                                          "scheduler_d", "scheduler_e", "scheduler_c"])
        self.n_classes, self.prior_std, self.supervised = n_classes, prior_std, supervised
        self.labelled_batch_size, self.head_margin, self.reconstruction = labelled_batch_size, head_margin, reconstruction
        self.input_noise = input_noise
        nets = ARCHITECTURES[architecture]
        self.encoder = nets.encoder(n_classes + latent_dim, data_shape, width)  # (logits of q(y|x), z)
        self.generator = nets.generator(self.code_dim(cluster_heads), data_shape, width)
        self.discriminator_y = LatentDiscriminator(n_classes, discriminator_width)
        self.discriminator_z = LatentDiscriminator(latent_dim, discriminator_width)
        decoder = ["generator"]
        if cluster_heads:
            self.heads = nn.Linear(n_classes, latent_dim, bias=False)   # column k: cluster head w_k
            nn.init.normal_(self.heads.weight, std=head_margin)
            decoder.append("heads")
        # The encoder is in two players (three when supervised), each phase with its own optimizer; under
        # player_ddp it has one DDP wrapper, which every phase's step goes through.
        self.add_player("autoencoder", ["encoder", *decoder], optimizer_ae or RECONSTRUCTION_OPTIMIZER, scheduler_ae)
        self.add_player("discriminator", ["discriminator_y", "discriminator_z"], optimizer_d or ADVERSARIAL_OPTIMIZER,
                        scheduler_d)
        self.add_player("encoder", ["encoder"], optimizer_e or ADVERSARIAL_OPTIMIZER, scheduler_e)
        if supervised:
            self.add_player("classifier", ["encoder"], optimizer_c or RECONSTRUCTION_OPTIMIZER, scheduler_c)
        self.add_ema("encoder", *decoder)
        self.label_tables(n_classes)
        self._labelled: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def label_tables(self, n_labels: int) -> None:
        """The held-out tables over ``n_labels`` labels: q(y|x)'s argmax against the label, per stage, and each
        cluster's label from its most confident validation example (the unsupervised model's)."""
        tables = {stage: LabelContingency(self.n_classes, n_labels) for stage in ("val", "test")}
        self.contingency = nn.ModuleDict(tables)
        self.cluster_labels = ConfidentLabels(self.n_classes, n_labels)
        self._clusters_labelled = False   # in the test stage: by the validation split

    def code_dim(self, cluster_heads: bool) -> int:
        return self.latent_dim if cluster_heads else self.n_classes + self.latent_dim

    # --- the pieces of the algorithm ------------------------------------------------------------

    def infer(self, x: torch.Tensor, encoder: Optional[nn.Module] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits of q(y|x), style z): (B, ...) -> (B, K), (B, Z)."""
        h = (encoder or self.encoder)(x)
        return h[:, : self.n_classes], h[:, self.n_classes:]

    def code(self, y: torch.Tensor, z: torch.Tensor, heads: Optional[nn.Module] = None) -> torch.Tensor:
        """The decoder's input: (y, z), or W y + z with cluster heads."""
        if not self.hparams.cluster_heads:
            return torch.cat([y, z], dim=1)
        return (heads or self.heads)(y) + z

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """x + input_noise * eps, eps ~ N(0, I) from the training noise: the encoder's training input."""
        return x + self.input_noise * self.draw_training_normal(x.shape) if self.input_noise else x

    def head_distance_cost(self) -> torch.Tensor:
        """sum_{i<j} max(0, eta - ||w_i - w_j||): pushes cluster heads at least eta apart."""
        w = self._modules["heads"].weight.T      # (K, n); the network itself, never its DDP wrapper
        i, j = torch.triu_indices(len(w), len(w), offset=1, device=w.device)
        return F.relu(self.head_margin - (w[i] - w[j]).norm(dim=1)).sum()

    def on_fit_start(self) -> None:
        """Hold the labelled subset on the device for the classification phase."""
        if not self.supervised:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "labelled_subset"):
            raise ConfigError("SemiSupervisedAAE's classification phase draws from GANDataModule's labelled subset "
                              "(data.n_labelled); fit it with that data module, or set model.supervised false")
        x, y = datamodule.labelled_subset()
        if len(y) == 0:
            raise ConfigError("data.n_labelled is 0: the classification phase has no labels; set data.n_labelled "
                              "(e.g. 100) or model.supervised false (unsupervised clustering)")
        self._labelled = (x.to(self.device), y.to(self.device))

    def update_players(self, batch) -> dict[str, torch.Tensor]:
        x, n = batch[0], len(batch[0])
        x_in = self.corrupt(x)                                                  # the encoder's input, phases 1-3
        k = self.rank_rows(lambda m: torch.randint(self.n_classes, (m,), generator=self.noise,
                                                   device=self.noise.device), n).to(self.device)
        y_prior = F.one_hot(k, self.n_classes).float()                          # y' ~ Cat(1/K)
        z_prior = self.prior_std * self.draw_training_normal((n, self.latent_dim))   # z' ~ N(0, std^2 I)
        logs = {}

        # 1. Reconstruction: E and G (and the cluster heads) reconstruct x from (q(y|x), z).
        opt_ae = self.optimizer("autoencoder")
        with self.toggled_optimizer(opt_ae):
            logits, z = self.infer(x_in)
            rec = reconstruction_error(self.generator(self.code(logits.softmax(1), z)), x, self.reconstruction).mean()
            loss = rec + self.head_distance_cost() if self.hparams.cluster_heads else rec
            self.step(opt_ae, loss, player="autoencoder")
        logs["train/reconstruction"] = rec.detach()

        # 2. Regularisation, D_y and D_z: one-hot categorical and Gaussian samples are real, q(y|x) and z fake.
        opt_d = self.optimizer("discriminator")
        with self.toggled_optimizer(opt_d):
            with torch.no_grad():
                logits, z = self.infer(x_in)
            d_loss = (discriminator_loss(self.discriminator_y(y_prior), self.discriminator_y(logits.softmax(1)))
                      + discriminator_loss(self.discriminator_z(z_prior), self.discriminator_z(z)))
            self.step(opt_d, d_loss, player="discriminator")
        logs["train/d_loss"] = d_loss.detach()

        if self.generator_turn:
            # 3. Regularisation, E: q(y|x) passes for one-hot samples and z for Gaussian ones.
            opt_e = self.optimizer("encoder")
            with self.toggled_optimizer(opt_e):
                logits, z = self.infer(x_in)
                e_loss = fooling_loss(self.discriminator_y(logits.softmax(1))) + fooling_loss(self.discriminator_z(z))
                self.step(opt_e, e_loss, player="encoder")
            logs["train/e_loss"] = e_loss.detach()

        if self.supervised:
            # 4. Semi-supervised classification: q(y|x) minimises the cross-entropy on labelled examples.
            x_l, y_l = self._labelled
            m = self.labelled_batch_size or n
            pick = self.rank_rows(lambda m_: torch.randint(len(y_l), (m_,), generator=self.noise,
                                                           device=self.noise.device), m).to(self.device)
            opt_c = self.optimizer("classifier")
            with self.toggled_optimizer(opt_c):
                c_loss = F.cross_entropy(self.infer(self.corrupt(x_l[pick]))[0], y_l[pick])
                self.step(opt_c, c_loss, player="classifier")
            logs["train/c_loss"] = c_loss.detach()
        return logs

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str,
                 y: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """G's reconstruction error; with labels, q(y|x)'s predictions are counted for the epoch's error, and
        validation examples label the clusters."""
        if y is not None and stage in self.contingency:
            logits = self.classify(x)
            self.contingency[stage].update(logits.argmax(1), y)
            if stage == "val" and not self.supervised:
                self.cluster_labels.update(logits, y)
        return {f"{stage}/recon_mse": F.mse_loss(self.reconstruct(x), x)}

    @torch.no_grad()
    def label_clusters_on_validation(self) -> bool:
        """Fill ``cluster_labels`` from this rank's share of the data module's validation split (the ranks' shares
        meet in ``compute``); False, on every rank alike, when no rank read a labelled validation example."""
        self.cluster_labels.reset()
        datamodule, seen = getattr(self.trainer, "datamodule", None), 0
        for batch in datamodule.val_dataloader() if datamodule is not None else ():
            if len(batch) < 2:
                break
            x, y = datamodule.on_after_batch_transfer(self.transfer_batch_to_device(batch, self.device, 0), 0)[:2]
            self.cluster_labels.update(self.classify(x), y)
            seen += int((y >= 0).sum())
        # One answer for all ranks: the figure it gates is computed with a collective (a rank that skipped it would hang)
        return bool(self.trainer.strategy.reduce(torch.tensor(float(seen), device=self.device), reduce_op="sum") > 0)

    def _log_classification(self, stage: str) -> None:
        table = self.contingency[stage]
        if int(table.counts.sum()) == 0 and not torch.distributed.is_initialized():
            return
        scores = table.compute()
        if self.supervised:
            self.log(f"{stage}/error", 1.0 - scores["accuracy"], **GLOBAL_VALUE)  # the ranks' tables summed
        else:
            logs = {f"{stage}/cluster_error_majority": 1.0 - scores["cluster_accuracy_majority"]}
            if stage == "val" or self._clusters_labelled:
                accuracy = labelled_cluster_accuracy(scores["counts"], self.cluster_labels.compute())
                logs[f"{stage}/cluster_error"] = 1.0 - accuracy
            self.log_dict(logs, **GLOBAL_VALUE)
            self.cluster_labels.reset()
        table.reset()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_classification("val")

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        if self.supervised:
            return
        # The paper labels each cluster by its most confident validation example, then scores the test set.
        self._clusters_labelled = self.label_clusters_on_validation()
        if not self._clusters_labelled:
            rank_zero_warn("test/cluster_error labels the clusters on the data module's validation split, and this "
                           "test has none with labels: only test/cluster_error_majority is logged")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_classification("test")

    # --- the public API that callbacks and users call --------------------------------------

    class_conditional = True  # the decoder reads y: generate(style, labels) draws a style as each class

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x): (n, *data_shape) -> (n, K)."""
        encoder = self.net("encoder")
        with eval_mode(encoder):
            return self.infer(x.to(self.device), encoder)[0]

    def style(self, x: torch.Tensor) -> torch.Tensor:
        """The style z of x: (n, *data_shape) -> (n, Z)."""
        encoder = self.net("encoder")
        with eval_mode(encoder):
            return self.infer(x.to(self.device), encoder)[1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's input for x: (q(y|x), z), or W q(y|x) + z with cluster heads."""
        encoder = self.net("encoder")
        with eval_mode(encoder):
            logits, z = self.infer(x.to(self.device), encoder)
            return self.code(logits.softmax(1), z, self.net("heads") if self.hparams.cluster_heads else None)

    def draw_prior(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n codes from the priors: one-hot y ~ Cat(1/K) and z ~ N(0, std^2 I), combined as the decoder's input."""
        device = generator.device if generator is not None else self.device
        y = F.one_hot(torch.randint(self.n_classes, (n,), generator=generator, device=device), self.n_classes).float()
        z = self.prior_std * torch.randn(n, self.latent_dim, generator=generator, device=device)
        with torch.no_grad():
            return self.code(y.to(self.device), z.to(self.device),
                             self.net("heads") if self.hparams.cluster_heads else None)

    def reconstruct(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """G(code(q(y|x), z)); ``labels`` are not used (q(y|x) infers them)."""
        return self.sample(z=self.encode(x))

    def generate(self, style: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """G(code(one-hot(labels), style)): a style drawn as each category."""
        y = F.one_hot(labels.to(self.device), self.n_classes).float()
        with torch.no_grad():
            code = self.code(y, style.to(self.device), self.net("heads") if self.hparams.cluster_heads else None)
        return self.sample(z=code)


class ClusteringAAE(SemiSupervisedAAE):
    def __init__(self, n_classes: int = 16, latent_dim: int = 10, supervised: bool = False, n_labels: int = 10,
                 **kwargs):
        """Unsupervised clustering (Sec. 7): the semi-supervised AAE without labels, y taking K clusters
        (paper: 16 and 30 on MNIST, 9.55 % and 4.10 % test error).

        ``test/cluster_error`` is the paper's figure: each cluster takes the label of the validation example
        with the largest q(y = k|x), and every test image the label of its argmax cluster. ``val/cluster_error``
        labels the clusters the same way and scores the validation split itself (the K labelling examples
        among the scored). ``{val,test}/cluster_error_majority`` labels each cluster by the majority label of
        the very examples it then scores: optimistic, not comparable with the paper.

        Args:
            n_classes: the number of clusters K.
            latent_dim: dimension of the style z.
            supervised: False (True adds the classification phase: the semi-supervised AAE).
            n_labels: the data's labels, for the cluster errors (10 for Fashion-MNIST).
        """
        super().__init__(n_classes=n_classes, latent_dim=latent_dim, supervised=supervised, **kwargs)
        self.label_tables(n_labels)
