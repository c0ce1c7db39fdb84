"""VAE (Kingma & Welling 2014, arXiv 1312.6114): the likelihood baseline beside the adversarial models.

An encoder q(z|x) = N(mu(x), diag sigma(x)^2) and a decoder p(x|z) are trained together to maximise the
evidence lower bound, with z = mu + sigma * eps (the reparameterisation trick):

    ELBO(x) = E_q[log p(x|z)] - beta * KL(q(z|x) || N(0, I)),
    KL = 1/2 * sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)        (closed form)

beta = 1 is the VAE; ``kl_weight`` sets beta (it must reach the loss: Lightning Bolts' VAE once ignored
it). The decoder is the framework's generator G, so ``sample``, ``encode`` and ``reconstruct`` and every
callback work as for ALI and BiGAN.
"""
import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from gan_lightning.losses import Likelihood, gaussian_kl, reconstruction_nll
from gan_lightning.models.base import AdversarialModule, eval_mode
from gan_lightning.nets import ARCHITECTURES, ArchitectureName


class VAE(AdversarialModule):
    # Kingma & Welling used Adagrad; Adam 1e-3 is what reimplementations use, and the default here.
    default_optimizer = functools.partial(torch.optim.Adam, lr=1e-3)

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 20,
        architecture: ArchitectureName = "mlp",
        width: int = 500,
        likelihood: Likelihood = "bernoulli",
        sigma: float = 0.1,
        kl_weight: float = 1.0,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        **kwargs,
    ):
        """A Gaussian encoder and a decoder trained on the ELBO; defaults: the paper's MNIST setting
        (MLPs of 500 units, 20-D latent, Bernoulli likelihood).

        Args:
            data_shape: shape of one example; linked from the data module by the CLI.
            latent_dim: dimension of z.
            architecture: network family for the encoder and the decoder (see ALI).
            width: hidden units (mlp, toy) or channels at the finest resolution (dcgan, ali).
            likelihood: p(x|z): ``bernoulli`` (binary cross-entropy on intensities) or ``gaussian``
                (squared error with a fixed ``sigma``).
            sigma: the Gaussian likelihood's standard deviation, in the data's [-1, 1] units.
            kl_weight: beta, the weight of the KL term (1: the VAE; other values: a beta-VAE).
            optimizer: optimizer of the encoder and decoder together (default: Adam 1e-3).
            scheduler: optional learning-rate schedule, stepped once per epoch.
            **kwargs: the shared options of ``AdversarialModule`` (ema_decay, gradient_clip_val, seed,
                on_nonfinite, compile).
        """
        super().__init__(latent_dim=latent_dim, prior="gaussian", **kwargs)
        if width < 1 or sigma <= 0 or kl_weight < 0:
            raise ValueError(f"model.width must be >= 1, model.sigma > 0 and model.kl_weight >= 0; got {width}, "
                             f"{sigma}, {kl_weight}")
        if self.n_critic != 1 or self.su_lambda:
            raise ValueError("model.n_critic and model.su_lambda are adversarial options; a VAE has no critic")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.likelihood, self.sigma, self.kl_weight = likelihood, sigma, kl_weight
        nets = ARCHITECTURES[architecture]
        self.encoder = nets.encoder(2 * latent_dim, data_shape, width)  # (mu, log sigma^2)
        self.generator = nets.generator(latent_dim, data_shape, width)  # the decoder
        self.add_player("encoder_decoder", ["encoder", "generator"], optimizer or self.default_optimizer, scheduler)
        self.add_ema("encoder", "generator")

    def posterior(self, x: torch.Tensor, encoder: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x)'s mean and log variance: (B, ...) -> (B, Z), (B, Z)."""
        mu, log_var = (encoder or self.encoder)(x).chunk(2, dim=1)
        return mu, log_var

    def negative_elbo(self, x: torch.Tensor, eps: torch.Tensor, encoder=None, decoder=None) -> dict[str, torch.Tensor]:
        """The loss and its parts per example, for noise ``eps`` ~ N(0, I) of shape (B, Z)."""
        mu, log_var = self.posterior(x, encoder)
        z = mu + (0.5 * log_var).exp() * eps
        nll = reconstruction_nll((decoder or self.generator)(z), x, self.likelihood, self.sigma)
        kl = gaussian_kl(mu, log_var)
        return {"loss": nll + self.kl_weight * kl, "nll": nll, "kl": kl}

    def update_players(self, batch) -> dict[str, torch.Tensor]:
        x = batch[0]
        opt = self.optimizer("encoder_decoder")
        # One player: maximise the ELBO over the batch (mean over examples).
        parts = self.negative_elbo(x, self.draw_training_normal((len(x), self.latent_dim)))
        loss = parts["loss"].mean()
        self.step(opt, loss, player="encoder_decoder")
        # Per example: averaged only when written (every trainer.log_every_n_steps iterations).
        return {"train/loss": loss.detach(), "train/nll": parts["nll"].detach(), "train/kl": parts["kl"].detach()}

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str,
                 y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The negative ELBO (with beta = kl_weight), its parts and G(mu(x))'s squared error, fixed noise."""
        eps = torch.randn(len(x), self.latent_dim, generator=torch.Generator().manual_seed(batch_idx)).to(self.device)
        with torch.no_grad():
            parts = self.negative_elbo(x, eps, self.net("encoder"), self.net("generator"))
        return {f"{stage}/loss": parts["loss"].mean(), f"{stage}/nll": parts["nll"].mean(),
                f"{stage}/kl": parts["kl"].mean(), f"{stage}/recon_mse": F.mse_loss(self.reconstruct(x), x)}

    # --- the public API that callbacks and users call --------------------------------------

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean mu(x): (n, *data_shape) -> (n, Z)."""
        encoder = self.net("encoder")
        with eval_mode(encoder):
            return self.posterior(x.to(self.device), encoder)[0]

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's output at the posterior mean, G(mu(x)); ``labels`` are not used."""
        return self.sample(z=self.encode(x))
