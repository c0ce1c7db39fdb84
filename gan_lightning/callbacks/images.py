"""Pictures at every validation: a fixed-z grid of samples, and real images beside G(E(x))."""
from pathlib import Path
from typing import Optional

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

    def __init__(self, n_samples: int = 64, n_reconstructions: int = 32, dirpath: Optional[str] = None, seed: int = 0):
        self.n_samples, self.n_reconstructions, self.seed = n_samples, n_reconstructions, seed
        self._dirpath = dirpath
        self._x_val: Optional[torch.Tensor] = None

    def dirpath(self, trainer: L.Trainer) -> Path:
        return Path(self._dirpath or Path(trainer.default_root_dir) / "samples")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and self._x_val is None:
            self._x_val = batch[0][: self.n_reconstructions].detach()

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
            pairs = torch.stack([x, pl_module.reconstruct(x)], dim=1).flatten(0, 1)  # x_1, G(E(x_1)), x_2, ...
            pictures["reconstructions"] = (pairs, 16)
        for name, (images, nrow) in pictures.items():
            path = out / f"{name}_it{step:07d}.png"
            save_image(to_unit_range(images.float().cpu()), path, nrow=nrow)
            for logger in trainer.loggers:
                if hasattr(logger, "log_image"):  # W&B
                    logger.log_image(key=f"val/{name}", images=[str(path)], step=step)
