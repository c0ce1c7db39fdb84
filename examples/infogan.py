"""InfoGAN (Chen et al. 2016, arXiv 1606.03657): a GAN whose generator input splits into noise z and codes c,
trained so that c stays readable in G(z, c) by a network Q that shares the discriminator's body.

    min_{G,Q} max_D  V(D, G) - lambda L_I(G, Q),   L_I = E_{c ~ p(c), x ~ G(z, c)}[log Q(c|x)] + H(c) <= I(c; G(z, c))

As the released code (openai/InfoGAN: ``infogan_trainer.py``, ``run_mnist_exp.py``): z ~ U[-1, 1]^62, c is one
categorical code of 10 values and two continuous codes ~ U[-1, 1]; Q reads the categorical code with a softmax and
each continuous one as a Gaussian of unit variance (``fix_std``); lambda is 1 for both. Each batch, D and Q
minimise D's loss - lambda L_I (Adam 2e-4), then G minimises -log D(G(z, c)) - lambda L_I (Adam 1e-3; beta1 0.5
for both), each step on its own draw of (z, c). The networks are the paper's MNIST ones (Table 1, Appendix C.1),
ending in tanh for the framework's [-1, 1] images where the released code's sigmoid ends in [0, 1].

Not part of the package: the worked example of docs/extending.md. configs/examples/infogan.yaml trains it.
"""
import functools
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchvision.utils import save_image

from gan_lightning.data import to_unit_range
from gan_lightning.errors import ConfigError
from gan_lightning.losses import discriminator_loss, gan_generator_loss
from gan_lightning.metrics.clustering import LabelContingency
from gan_lightning.models.base import AdversarialModule, Prior, eval_mode
from gan_lightning.nets.init import radford_init


def information_losses(q: torch.Tensor, category: torch.Tensor,
                       continuous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q's negative log-likelihoods of the codes behind generated images, for the categorical code and for the
    continuous ones, batch means. ``q`` (B, K + C): Q's logits of the K categories, then its means of the C
    continuous codes; ``category`` (B,) and ``continuous`` (B, C): the codes drawn. L_I = H(c) - their sum."""
    logits, mean = q.split([q.shape[1] - continuous.shape[1], continuous.shape[1]], dim=1)
    nll_category = F.cross_entropy(logits, category)                     # -log softmax(logits)[c]
    nll_continuous = 0.5 * (continuous - mean).square().sum(1).mean()   # -log N(c; mean, 1) + const
    return nll_category, nll_continuous


# --- the paper's MNIST networks: plain nn.Modules that return logits --------------------------------------------

def quarter_side(data_shape: Sequence[int]) -> int:
    if len(data_shape) != 3 or data_shape[-1] != data_shape[-2] or data_shape[-1] % 4:
        raise ValueError(f"InfoGAN's networks take square images whose side is a multiple of 4 (28: MNIST); got data "
                         f"shape {tuple(data_shape)}")
    return data_shape[-1] // 4


class InfoGANGenerator(nn.Module):
    """G(z, c): FC 16w, FC 2w x S/4 x S/4, upconv w, upconv to the image; BN+ReLU between (w = 64: Table 1).
    (B, Z + K + C) -> (B, ch, S, S) in [-1, 1]."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], width: int = 64):
        super().__init__()
        side = quarter_side(data_shape)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 16 * width, bias=False), nn.BatchNorm1d(16 * width), nn.ReLU(),
            nn.Linear(16 * width, 2 * width * side**2, bias=False), nn.BatchNorm1d(2 * width * side**2), nn.ReLU(),
            nn.Unflatten(1, (2 * width, side, side)),                                          # (B, 2w, S/4, S/4)
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),  # S/2
            nn.ConvTranspose2d(width, data_shape[0], 4, 2, 1), nn.Tanh())                      # (B, ch, S, S)
        self.apply(radford_init)  # the released code's initialisation

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class InfoGANDiscriminator(nn.Module):
    """D and Q on one body: conv w, conv 2w, FC 16w (BN on the last two), then D's linear head and Q's head
    FC 2w-BN-FC (w = 64: Table 1). (B, ch, S, S) -> D's logits (B,), Q's outputs (B, K + C)."""

    def __init__(self, data_shape: Sequence[int], code_dim: int, width: int = 64):
        super().__init__()
        side = quarter_side(data_shape)
        act = nn.LeakyReLU(0.1)  # the paper's leaky rate (Appendix C); the released code's leaky_rectify uses 0.01
        self.body = nn.Sequential(
            nn.Conv2d(data_shape[0], width, 4, 2, 1), act,                                     # (B, w, S/2, S/2)
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), act,  # (B, 2w, S/4, S/4)
            nn.Flatten(), nn.Linear(2 * width * side**2, 16 * width, bias=False), nn.BatchNorm1d(16 * width), act)
        self.d_head = nn.Linear(16 * width, 1)
        self.q_head = nn.Sequential(nn.Linear(16 * width, 2 * width, bias=False), nn.BatchNorm1d(2 * width), act,
                                    nn.Linear(2 * width, code_dim))
        self.apply(radford_init)  # the released code's initialisation

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)                                                                      # (B, 16w)
        return self.d_head(h).squeeze(1), self.q_head(h)


# --- the model -------------------------------------------------------------------------------------------------

class InfoGAN(AdversarialModule):
    # The released code's optimisers (run_mnist_exp.py), used when the config names none.
    default_optimizer_d = functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
    default_optimizer_g = functools.partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999))
    # An exported folder keeps D: Q, which ``encode`` reads codes with, shares its body (gan_lightning/pretrained.py).
    export_leaves_out = ()

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        noise_dim: int = 62,
        n_categories: int = 10,
        n_continuous: int = 2,
        information_weight: float = 1.0,
        width: int = 64,
        prior: Prior = "uniform",
        n_labels: int = 10,
        optimizer_d: OptimizerCallable | None = None,
        optimizer_g: OptimizerCallable | None = None,
        scheduler_d: LRSchedulerCallable | None = None,
        scheduler_g: LRSchedulerCallable | None = None,
        **kwargs,
    ):
        """A generator G(z, c) against a discriminator D(x) that shares its body with Q(c|x).

        Args:
            data_shape: shape of one example (square, side a multiple of 4); linked from the data module by the CLI.
            noise_dim: dimension of the incompressible noise z (62 in the released code).
            n_categories: values of the categorical code (10: MNIST's digits).
            n_continuous: continuous codes, each ~ U[-1, 1] (2: MNIST's rotation and width).
            information_weight: lambda, the weight of L_I in both players' losses (1 in the released code).
            width: channels of D's first convolution (64: Table 1); D's and G's fully connected layers have
                16 x width units, Q's hidden layer 2 x width.
            prior: p(z) of the noise: ``uniform`` on [-1, 1] (the released code) or ``gaussian``.
            n_labels: classes of the data's labels, for ``val/cluster_error_majority`` of Q's categorical code.
            optimizer_d: optimizer of D and Q (default Adam 2e-4, betas (0.5, 0.999)).
            optimizer_g: optimizer of G (default Adam 1e-3, betas (0.5, 0.999)).
            scheduler_d: optional learning-rate schedule of D and Q, stepped once per epoch.
            scheduler_g: optional learning-rate schedule of G, stepped once per epoch.
            **kwargs: the shared options of ``AdversarialModule`` (n_critic, ema_decay, gradient_clip_val, seed,
                on_nonfinite, compile).
        """
        super().__init__(latent_dim=noise_dim + n_categories + n_continuous, prior=prior, **kwargs)
        if min(noise_dim, n_categories, width, n_labels) < 1 or n_continuous < 0 or information_weight < 0:
            raise ValueError(f"model.noise_dim, n_categories, width and n_labels must be >= 1, n_continuous and "
                             f"information_weight >= 0; got {noise_dim}, {n_categories}, {width}, {n_labels}, "
                             f"{n_continuous}, {information_weight}")
        if self.su_lambda or self.generator_steps != 1:
            raise ConfigError("model.su_lambda and model.generator_steps (Su 2018) are not part of InfoGAN's "
                              "algorithm: leave them at 0 and 1")
        self.save_hyperparameters(ignore=["optimizer_d", "optimizer_g", "scheduler_d", "scheduler_g"])
        self.noise_dim, self.n_categories, self.n_continuous = noise_dim, n_categories, n_continuous
        self.information_weight = information_weight
        self.generator = InfoGANGenerator(self.latent_dim, data_shape, width)
        self.discriminator = InfoGANDiscriminator(data_shape, n_categories + n_continuous, width)  # D and Q
        self.add_player("discriminator", ["discriminator"], optimizer_d or self.default_optimizer_d, scheduler_d)
        self.add_player("generator", ["generator"], optimizer_g or self.default_optimizer_g, scheduler_g)
        self.add_ema("generator")
        # Q's categorical code against the held-out labels, per stage, summed over the epoch's batches (and ranks).
        self.contingency = nn.ModuleDict({stage: LabelContingency(n_categories, n_labels) for stage in ("val", "test")})

    def update_players(self, batch) -> dict[str, torch.Tensor]:
        x = batch[0]
        opt_d, opt_g = self.optimizer("discriminator"), self.optimizer("generator")

        # 1. Discriminator and Q (one network, one optimizer): tell x from G(z, c), and read c back from G(z, c).
        z = self.draw_training_prior(len(x))                 # (B, Z + K + C): noise, one-hot c_cat, c_cont
        with torch.no_grad():
            x_fake = self.generator(z)
        with self.toggled_optimizer(opt_d):
            d_real, _ = self.discriminator(x)
            d_fake, q_fake = self.discriminator(x_fake)
            d_loss = discriminator_loss(d_real, d_fake)
            info_cat, info_cont = information_losses(q_fake, *self.split(z)[1:])
            self.step(opt_d, d_loss + self.information_weight * (info_cat + info_cont), player="discriminator")
        logs = {"train/d_loss": d_loss.detach(), "train/info_cat": info_cat.detach(),
                "train/info_cont": info_cont.detach()}
        if not self.generator_turn:
            return logs

        # 2. Generator: make the updated D take G(z, c) for data, and keep c readable by Q; on a fresh draw of
        #    (z, c), as the released code's generator step.
        z = self.draw_training_prior(len(x))
        with self.toggled_optimizer(opt_g):
            d_fake, q_fake = self.discriminator(self.generator(z))
            g_loss = gan_generator_loss(d_fake, "non_saturating")               # -log D(G(z, c))
            g_info_cat, g_info_cont = information_losses(q_fake, *self.split(z)[1:])
            self.step(opt_g, g_loss + self.information_weight * (g_info_cat + g_info_cont), player="generator")
        logs["train/g_loss"] = g_loss.detach()
        return logs

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str,
                 y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """D's loss on held-out x against G at a fixed (z, c), and Q's losses on those samples; with labels, Q's
        category for x joins the epoch's table for the cluster error."""
        z = self.draw_prior(len(x), generator=torch.Generator().manual_seed(batch_idx))
        x_fake = self.sample(z=z)
        with eval_mode(self.discriminator):
            (d_real, q_real), (d_fake, q_fake) = self.discriminator(x), self.discriminator(x_fake)
        info_cat, info_cont = information_losses(q_fake, *self.split(z)[1:])
        if y is not None and stage in self.contingency:
            self.contingency[stage].update(q_real[:, : self.n_categories].argmax(1), y)
        return {f"{stage}/d_loss": discriminator_loss(d_real, d_fake), f"{stage}/info_cat": info_cat,
                f"{stage}/info_cont": info_cont}

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log_cluster_error("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.log_cluster_error("test")

    def log_cluster_error(self, stage: str) -> None:
        """The error of Q's categorical code as a classifier when each category takes the majority label of its
        examples (the paper's Sec. 7.2 figure: 5 % on MNIST)."""
        table = self.contingency[stage]
        if int(table.counts.sum()) == 0 and not torch.distributed.is_initialized():
            return  # no labelled examples on this (only) rank
        error = 1.0 - table.compute()["cluster_accuracy_majority"]
        self.log(f"{stage}/cluster_error_majority", error, sync_dist=True)  # the same on every rank
        table.reset()

    # --- the public API that callbacks and users call ----------------------------------------------------------

    def draw_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of the generator's input: noise ~ p(z), a uniform category, continuous codes ~ U[-1, 1].
        (n, Z + K + C), the category one-hot."""
        device = generator.device if generator is not None else self.device
        noise = (torch.rand(n, self.noise_dim, generator=generator, device=device) * 2 - 1 if self.prior == "uniform"
                 else torch.randn(n, self.noise_dim, generator=generator, device=device))
        category = torch.randint(self.n_categories, (n,), generator=generator, device=device)
        continuous = torch.rand(n, self.n_continuous, generator=generator, device=device) * 2 - 1
        return self.join(noise, category, continuous).to(self.device)

    def join(self, noise: torch.Tensor, category: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        """The generator's input of noise (n, Z), categories (n,) and continuous codes (n, C): (n, Z + K + C)."""
        return torch.cat([noise, F.one_hot(category, self.n_categories).to(noise.dtype), continuous], dim=1)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``join``'s inverse: (noise (n, Z), categories (n,), continuous codes (n, C))."""
        noise, one_hot, continuous = z.split([self.noise_dim, self.n_categories, self.n_continuous], dim=1)
        return noise, one_hot.argmax(1), continuous

    def infer_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q's reading of x: the categorical code's logits (n, K) and the continuous codes' means (n, C)."""
        with eval_mode(self.discriminator):
            _, q = self.discriminator(x.to(self.device))
        return q.split([self.n_categories, self.n_continuous], dim=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The generator input Q reads in x: its most likely category and its continuous codes' means, with the
        noise, which Q does not infer, at the prior's mean 0: (n, *data_shape) -> (n, Z + K + C)."""
        logits, continuous = self.infer_codes(x)
        return self.join(torch.zeros(len(x), self.noise_dim, device=self.device), logits.argmax(1), continuous)

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G(encode(x)): x's category and continuous factors drawn at the mean noise; ``labels`` are not used."""
        return self.sample(z=self.encode(x))


# --- a picture callback: the paper's Figure 2 -----------------------------------------------------------------

class CodeGrid(L.Callback):
    """Writes ``codes_it{iteration}.png``: the paper's Figure 2 in one grid, one noise z throughout; each row is
    a category, and each continuous code walks over [-span, span] in ``steps`` columns, the others at 0.

    Args:
        steps: columns per continuous code.
        span: the walk's end (1: the prior's support, as the released code's pictures; Figure 2 goes to 2).
        dirpath: folder for the PNG files; default ``{trainer.default_root_dir}/samples``.
        seed: seed of the noise z.
    """

    def __init__(self, steps: int = 10, span: float = 1.0, dirpath: str | None = None, seed: int = 0):
        if steps < 2 or span <= 0:
            raise ValueError(f"CodeGrid needs steps >= 2 and span > 0, got {steps}, {span}")
        self.steps, self.span, self.seed, self._dirpath = steps, span, seed, dirpath

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: InfoGAN) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        images = code_grid(pl_module, self.steps, self.span, self.seed)
        out = Path(self._dirpath or Path(trainer.default_root_dir) / "samples")
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"codes_it{pl_module.iteration:07d}.png"
        save_image(to_unit_range(images.float().cpu()), path, nrow=len(images) // pl_module.n_categories)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image(key="val/codes", images=[str(path)], step=pl_module.iteration)


@torch.no_grad()
def code_grid(model: InfoGAN, steps: int, span: float = 1.0, seed: int = 0) -> torch.Tensor:
    """G(z, c) for every category (rows) by every continuous code's walk (columns): (K * max(C, 1) * steps, ...)."""
    k, c = model.n_categories, model.n_continuous
    noise = model.split(model.draw_prior(1, torch.Generator().manual_seed(seed)))[0]           # (1, Z)
    walks = torch.zeros(max(c, 1), steps, c, device=model.device)                             # code i walks in row i
    for i in range(c):
        walks[i, :, i] = torch.linspace(-span, span, steps, device=model.device)
    continuous = walks.flatten(0, 1).repeat(k, 1)                                              # (K * C * steps, C)
    category = torch.arange(k, device=model.device).repeat_interleave(len(continuous) // k)
    return model.sample(z=model.join(noise.expand(len(category), -1), category, continuous))
