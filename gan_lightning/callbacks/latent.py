"""Pictures of the latent space that AAE papers show (Makhzani et al. 2016, Figures 2, 4, 6, 9, 11).

- ``LatentScatter``: the test set's codes E(x) coloured by label, beside samples of the prior (2-D codes
  as they are; longer codes projected on their first two principal components).
- ``StyleGrid``: a test image's style z, drawn as every class: one row per test image (the image first),
  one column per class (Figure 6 for the supervised AAE, Figure 9 for the semi-supervised one).
"""
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torchvision.utils import save_image

from gan_lightning.callbacks.probes import labelled_split
from gan_lightning.data import to_unit_range
from gan_lightning.errors import ConfigError
from gan_lightning.metrics.probes import batched


def _log_picture(trainer: L.Trainer, key: str, path: Path, step: int) -> None:
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # W&B
            logger.log_image(key=key, images=[str(path)], step=step)


def _due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    return not trainer.sanity_checking and trainer.is_global_zero and (trainer.current_epoch + 1) % every_n_epochs == 0


def _output(trainer: L.Trainer, dirpath: str | None, name: str, step: int) -> Path:
    out = Path(dirpath or Path(trainer.default_root_dir) / "samples")
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{name}_it{step:07d}.png"


def project_2d(codes: torch.Tensor, prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Codes and prior samples as 2-D points: themselves when 2-D, else on the codes' first two principal axes."""
    if codes.shape[1] == 2:
        return codes, prior, "z"
    mean = codes.mean(0)
    _, _, v = torch.linalg.svd(codes - mean, full_matrices=False)
    axes = v[:2].T                                                     # (Z, 2)
    return (codes - mean) @ axes, (prior - mean) @ axes, "principal component"


class LatentScatter(L.Callback):
    """Writes ``latent_it{iteration}.png``: E(x) of ``n_points`` test images coloured by label, and prior samples.

    Args:
        n_points: test images encoded (the paper's figures: 10,000).
        every_n_epochs: draw at every n-th validation.
        dirpath: folder for the PNG files; default ``{trainer.default_root_dir}/samples``.
        seed: seed of the prior samples.
    """

    def __init__(self, n_points: int = 10_000, every_n_epochs: int = 1, dirpath: str | None = None, seed: int = 0):
        if n_points < 2 or every_n_epochs < 1:
            raise ValueError(f"LatentScatter needs n_points >= 2 and every_n_epochs >= 1, got {n_points}, "
                             f"{every_n_epochs}")
        self.n_points, self.every_n_epochs, self._dirpath, self.seed = n_points, every_n_epochs, dirpath, seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "encode"):
            raise ConfigError(f"LatentScatter draws the codes E(x); {type(pl_module).__name__} has no encoder: "
                              "remove the callback or use an AAE, ALI, BiGAN or the VAE")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not _due(trainer, self.every_n_epochs):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        x, y = labelled_split(trainer.datamodule, "test", self.n_points)
        codes = batched(pl_module.encode, x, pl_module.device)
        prior = pl_module.draw_prior(len(codes), torch.Generator(pl_module.device).manual_seed(self.seed)).float().cpu()
        points, prior_points, axis = project_2d(codes, prior)
        step = getattr(pl_module, "iteration", trainer.global_step)
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
        shown = left.scatter(points[:, 0], points[:, 1], c=y.numpy(), cmap="tab10", s=2, alpha=0.7)
        fig.colorbar(shown, ax=left, label="label")
        left.set_title(f"E(x) of {len(codes)} test images, iteration {step}")
        right.scatter(prior_points[:, 0], prior_points[:, 1], s=2, alpha=0.5, color="grey")
        right.set_title("samples of p(z)")
        for ax in (left, right):
            ax.set_xlabel(f"{axis} 1")
            ax.set_ylabel(f"{axis} 2")
        path = _output(trainer, self._dirpath, "latent", step)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        _log_picture(trainer, "val/latent", path, step)


class StyleGrid(L.Callback):
    """Writes ``styles_it{iteration}.png``: each row a test image, then its style drawn as each class.

    Needs a ``class_conditional`` model with ``style(x)`` and ``generate(style, labels)`` (the supervised and
    semi-supervised AAE).

    Args:
        n_rows: test images whose style is shown.
        every_n_epochs: draw at every n-th validation.
        dirpath: folder for the PNG files; default ``{trainer.default_root_dir}/samples``.
    """

    def __init__(self, n_rows: int = 10, every_n_epochs: int = 1, dirpath: str | None = None):
        self.n_rows, self.every_n_epochs, self._dirpath = n_rows, every_n_epochs, dirpath

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not getattr(pl_module, "class_conditional", False):
            raise ConfigError(f"StyleGrid draws a style as each class; this {type(pl_module).__name__}'s decoder takes "
                              "no class: use the supervised AAE (model.conditioning decoder) or SemiSupervisedAAE, "
                              "or remove the callback")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not _due(trainer, self.every_n_epochs):
            return
        x, _ = labelled_split(trainer.datamodule, "test", self.n_rows)
        if x.dim() != 4:
            rank_zero_warn("StyleGrid draws images; this data is not images")
            return
        classes = pl_module.n_classes
        style = pl_module.style(x).repeat_interleave(classes, dim=0)               # row-major: style i, class c
        labels = torch.arange(classes, device=style.device).repeat(len(x))
        drawn = pl_module.generate(style, labels).unflatten(0, (len(x), classes)).cpu()
        grid = torch.cat([x[:, None].to(drawn), drawn], dim=1).flatten(0, 1)
        step = getattr(pl_module, "iteration", trainer.global_step)
        path = _output(trainer, self._dirpath, "styles", step)
        save_image(to_unit_range(grid.float()), path, nrow=classes + 1)
        _log_picture(trainer, "val/styles", path, step)
