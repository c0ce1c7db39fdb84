"""Pictures at every validation: a fixed-z grid of samples, and real images beside G(E(x))."""
from pathlib import Path

import lightning as L
import torch
from torchvision.utils import save_image

from gan_lightning.data import to_unit_range


class SampleGrid(L.Callback):
    """Writes ``samples_it{iteration}.png`` and ``reconstructions_it{iteration}.png`` and logs them.

    Args:
        n_samples: images in the sample grid (the same z at every validation, so grids compare).
        n_reconstructions: real validation images shown beside their reconstructions G(E(x)).
        dirpath: folder for the PNG files; default ``{trainer.default_root_dir}/samples``.
        seed: seed of the fixed z.
    """

    def __init__(self, n_samples: int = 64, n_reconstructions: int = 32, dirpath: str | None = None, seed: int = 0):
        self.n_samples, self.n_reconstructions, self.seed = n_samples, n_reconstructions, seed
        self._dirpath = dirpath
        self._x_val: torch.Tensor | None = None
        self._y_val: torch.Tensor | None = None

    def dirpath(self, trainer: L.Trainer) -> Path:
        return Path(self._dirpath or Path(trainer.default_root_dir) / "samples")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and self._x_val is None:
            self._x_val = batch[0][: self.n_reconstructions].detach()
            self._y_val = batch[1][: self.n_reconstructions] if len(batch) > 1 else None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        x = self._x_val
        self._x_val = None
        if trainer.sanity_checking or not trainer.is_global_zero or x is None or x.dim() != 4:
            return  # toy 2-D data gets scatter plots, not image grids
        out = self.dirpath(trainer)
        out.mkdir(parents=True, exist_ok=True)
        step = getattr(pl_module, "iteration", trainer.global_step)
        samples = pl_module.sample(self.n_samples, generator=torch.Generator().manual_seed(self.seed))
        pictures = {"samples": (samples, int(self.n_samples**0.5))}
        if hasattr(pl_module, "reconstruct"):
            # x_1, G(E(x_1)), x_2, ...
            pairs = torch.stack([x, pl_module.reconstruct(x, self._y_val)], dim=1).flatten(0, 1)
            pictures["reconstructions"] = (pairs, 16)
        for name, (images, nrow) in pictures.items():
            path = out / f"{name}_it{step:07d}.png"
            save_image(to_unit_range(images.float().cpu()), path, nrow=nrow)
            for logger in trainer.loggers:
                if hasattr(logger, "log_image"):  # W&B
                    logger.log_image(key=f"val/{name}", images=[str(path)], step=step)


class Interpolations(L.Callback):
    """Writes ``interpolations_it{iteration}.png``: rows that walk the latent space from one image to another.

    With an encoder, each row starts at a test image x_a, passes through G((1 - t) E(x_a) + t E(x_b))
    for ``steps`` values of t in [0, 1], and ends at x_b. Without one, rows walk between prior draws.

    Args:
        n_pairs: rows (pairs of images or of prior draws).
        steps: generated images per row.
        dirpath: folder for the PNG files; default ``{trainer.default_root_dir}/samples``.
        seed: seed of the pairs (the same pairs at every validation).
    """

    def __init__(self, n_pairs: int = 8, steps: int = 10, dirpath: str | None = None, seed: int = 0):
        if n_pairs < 1 or steps < 2:
            raise ValueError(f"Interpolations needs n_pairs >= 1 and steps >= 2, got {n_pairs}, {steps}")
        self.n_pairs, self.steps, self.seed, self._dirpath = n_pairs, steps, seed, dirpath
        self._x: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and self._x is None:
            self._x = batch[0][: 2 * self.n_pairs].detach()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        x, self._x = self._x, None
        if trainer.sanity_checking or not trainer.is_global_zero or x is None or x.dim() != 4:
            return
        grid = interpolation_grid(pl_module, x, self.n_pairs, self.steps, self.seed)
        out = Path(self._dirpath or Path(trainer.default_root_dir) / "samples")
        out.mkdir(parents=True, exist_ok=True)
        step = getattr(pl_module, "iteration", trainer.global_step)
        path = out / f"interpolations_it{step:07d}.png"
        save_image(to_unit_range(grid.float().cpu()), path, nrow=grid.shape[0] // self.n_pairs)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/interpolations", images=[str(path)], step=step)


@torch.no_grad()
def interpolation_grid(model, x: torch.Tensor | None, n_pairs: int, steps: int, seed: int = 0) -> torch.Tensor:
    """(n_pairs * (steps [+ 2]), C, H, W): each row x_a, G(z_t)..., x_b, or prior walks without an encoder."""
    t = torch.linspace(0, 1, steps, device=model.device)[None, :, None]
    if hasattr(model, "encode") and x is not None and len(x) >= 2 * n_pairs:
        x = x[: 2 * n_pairs].to(model.device)
        z = model.encode(x)
        z_a, z_b = z[:n_pairs], z[n_pairs:]
    else:
        z = model.draw_prior(2 * n_pairs, torch.Generator(model.device).manual_seed(seed))
        z_a, z_b, x = z[:n_pairs], z[n_pairs:], None
    path = (1 - t) * z_a[:, None] + t * z_b[:, None]                      # (n_pairs, steps, Z)
    images = model.sample(z=path.flatten(0, 1)).unflatten(0, (n_pairs, steps))
    if x is not None:
        images = torch.cat([x[:n_pairs, None], images, x[n_pairs:, None]], dim=1)
    return images.flatten(0, 1)
