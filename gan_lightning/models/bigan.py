"""BiGAN (Donahue, Kraehenbuehl & Darrell 2017, arXiv 1605.09782).

The generator G: z -> x and the encoder E: x -> z play together against a joint discriminator
D(x, z) that tells data pairs (x, E(x)) from generated pairs (G(z), z):

    min_{G,E} max_D  E_x[log D(x, E(x))] + E_z[log(1 - D(G(z), z))]

At the optimum E inverts G. The defaults are the official MNIST setting: z ~ U[-1, 1]^50, MLPs of
1024 units, Adam 2e-4 / beta1 0.5 with weight decay 2.5e-5, batch 128.
"""
import functools
from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from gan_lightning.losses import GeneratorLoss, bigan_encoder_generator_loss, discriminator_loss
from gan_lightning.models.base import AdversarialModule, eval_mode
from gan_lightning.nets import JointDiscriminator, MLPEncoder, MLPGenerator

# The official code's optimiser, used when the config names none.
paper_adam = functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999), weight_decay=2.5e-5)


class BiGAN(AdversarialModule):
    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 50,
        hidden_dim: int = 1024,
        prior: Literal["uniform", "gaussian"] = "uniform",
        loss: GeneratorLoss = "non_saturating",
        optimizer_d: Optional[OptimizerCallable] = None,
        optimizer_ge: Optional[OptimizerCallable] = None,
        scheduler_d: Optional[LRSchedulerCallable] = None,
        scheduler_ge: Optional[LRSchedulerCallable] = None,
        n_critic: int = 1,
        ema_decay: Optional[float] = None,
        gradient_clip_val: Optional[float] = None,
        seed: int = 0,
        stop_on_nonfinite: bool = True,
        compile: bool = False,
    ):
        """BiGAN with a deterministic encoder and MLP networks.

        Args:
            data_shape: shape of one example; linked from the data module by the CLI.
            latent_dim: dimension of z.
            hidden_dim: width of every hidden layer of G, E and D.
            prior: p(z): ``uniform`` on [-1, 1]^Z (the paper) or a standard ``gaussian``.
            loss: the G/E loss: ``non_saturating`` (official code) or ``minimax`` (the paper's game).
            optimizer_d: optimizer of the discriminator D (default: Adam 2e-4, betas (0.5, 0.999), wd 2.5e-5).
            optimizer_ge: optimizer of the generator G and encoder E together (same default).
            scheduler_d: optional learning-rate schedule of D, stepped once per epoch.
            scheduler_ge: optional learning-rate schedule of G and E, stepped once per epoch.
        """
        super().__init__(n_critic=n_critic, ema_decay=ema_decay, gradient_clip_val=gradient_clip_val, seed=seed,
                         stop_on_nonfinite=stop_on_nonfinite, compile=compile)
        if latent_dim < 1 or hidden_dim < 1:
            raise ValueError(f"model.latent_dim and model.hidden_dim must be >= 1, got {latent_dim}, {hidden_dim}")
        self.save_hyperparameters(ignore=["optimizer_d", "optimizer_ge", "scheduler_d", "scheduler_ge"])
        self.latent_dim, self.prior, self.loss = latent_dim, prior, loss
        self.generator = MLPGenerator(latent_dim, data_shape, hidden_dim)
        self.encoder = MLPEncoder(latent_dim, data_shape, hidden_dim)
        self.discriminator = JointDiscriminator(latent_dim, data_shape, hidden_dim)
        self.add_player("discriminator", ["discriminator"], optimizer_d or paper_adam, scheduler_d)
        self.add_player("generator_encoder", ["generator", "encoder"], optimizer_ge or paper_adam, scheduler_ge)
        self.add_ema("generator", "encoder")

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        x = batch[0]
        z = self.draw_prior(len(x), self.noise)
        opt_d, opt_ge = self.optimizer("discriminator"), self.optimizer("generator_encoder")

        # G(z) and E(x) once per iteration; their graphs are kept only when G and E step this time.
        with torch.set_grad_enabled(self.generator_steps_now):
            x_fake, z_enc = self.generator(z), self.encoder(x)

        # 1. Discriminator: tell data pairs (x, E(x)) from generated pairs (G(z), z).
        with self.toggled_optimizer(opt_d):
            d_loss = discriminator_loss(self.discriminator(x, z_enc.detach()), self.discriminator(x_fake.detach(), z))
            self.step(opt_d, d_loss, player="discriminator")
        logs = {"train/d_loss": d_loss.detach()}

        # 2. Generator and encoder: make the updated D mistake each kind of pair for the other.
        if self.generator_steps_now:
            with self.toggled_optimizer(opt_ge):
                d_real, d_fake = self.discriminator(x, z_enc), self.discriminator(x_fake, z)
                ge_loss = bigan_encoder_generator_loss(d_real, d_fake, self.loss)
                self.step(opt_ge, ge_loss, player="generator_encoder")
            logs["train/ge_loss"] = ge_loss.detach()
        return logs

    def validation_step(self, batch, batch_idx: int) -> None:
        self.log_dict(self.evaluate(batch[0], batch_idx, "val"), sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        self.log_dict(self.evaluate(batch[0], batch_idx, "test"), sync_dist=True)

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str) -> dict[str, torch.Tensor]:
        """Reconstruction error of G(E(x)) and D's loss on held-out pairs, with the same z at every call."""
        z = self.draw_prior(len(x), generator=torch.Generator().manual_seed(batch_idx))
        with eval_mode(self.discriminator):
            d_loss = discriminator_loss(self.discriminator(x, self.encode(x)), self.discriminator(self.sample(z=z), z))
        return {f"{stage}/recon_mse": F.mse_loss(self.reconstruct(x), x), f"{stage}/d_loss": d_loss}

    # --- the public API that callbacks and users call --------------------------------------

    def draw_prior(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n draws from p(z) with the caller's generator (the global RNG when None): (n, Z)."""
        device = generator.device if generator is not None else self.device
        z = torch.rand(n, self.latent_dim, generator=generator, device=device) * 2 - 1 if self.prior == "uniform" \
            else torch.randn(n, self.latent_dim, generator=generator, device=device)
        return z.to(self.device)

    def sample(self, n: Optional[int] = None, z: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """G(z) in [-1, 1] for z given, or for n draws from the prior: (n, Z) -> (n, C, H, W).

        Draws use ``generator`` when given, so callers get fixed z without touching
        the training noise or the global RNG.
        """
        if z is None:
            z = self.draw_prior(n, generator)
        net = self.net("generator")
        with eval_mode(net):
            return net(z.to(self.device))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): (n, C, H, W) -> (n, Z)."""
        encoder = self.net("encoder")
        with eval_mode(encoder):
            return encoder(x.to(self.device))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """G(E(x)), the inversion the game learns."""
        return self.sample(z=self.encode(x))
