"""Mode coverage of a toy 2-D mixture at every validation, and a scatter of samples over the modes."""
from pathlib import Path

import lightning as L
import torch

from gan_lightning.callbacks.cadence import log_after_fit
from gan_lightning.callbacks.preemption import signal_pending
from gan_lightning.data.toy import mixture_modes
from gan_lightning.distributed import GLOBAL_VALUE
from gan_lightning.errors import ConfigError
from gan_lightning.metrics import N_SAMPLES, mode_coverage


class ModeCoverage(L.Callback):
    """Logs ``val/modes``, ``val/high_quality`` and ``val/reverse_kl`` (PacGAN's protocol) and writes
    ``toy_it{iteration}.png``, at every validation and once more at the end of fit when the last validation did
    not see the final weights.

    Every rank draws the same samples (a seeded generator), so every rank logs the same values.

    Args:
        n_samples: samples drawn per evaluation (2,500 in PacGAN and VEEGAN).
        dirpath: folder for the scatter plots; default ``{trainer.default_root_dir}/samples``.
        seed: seed of the evaluation noise.
        plot: draw the scatter plot.
    """

    def __init__(self, n_samples: int = N_SAMPLES, dirpath: str | None = None, seed: int = 0, plot: bool = True):
        self.n_samples, self._dirpath, self.seed, self.plot = n_samples, dirpath, seed, plot
        self.last: dict[str, float] = {}
        self.last_iteration: int | None = None  # the iteration ``last`` was measured at

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dataset = getattr(trainer.datamodule, "hparams", {}).get("dataset", "")
        if not dataset.startswith("toy_"):
            raise ConfigError(f"the ModeCoverage callback measures the toy mixtures; data.dataset is {dataset!r}. "
                             "Remove the callback or set data.dataset to toy_ring or toy_grid.")
        self.modes, self.std = mixture_modes(dataset)

    def measure(self, pl_module: L.LightningModule) -> tuple[torch.Tensor, dict[str, float]]:
        samples = pl_module.sample(self.n_samples, generator=torch.Generator().manual_seed(self.seed)).float().cpu()
        return samples, mode_coverage(samples, self.modes, self.std)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        samples, self.last = self.measure(pl_module)
        pl_module.log_dict({f"val/{k}": v for k, v in self.last.items()}, **GLOBAL_VALUE)  # one seed: alike on ranks
        self._draw(trainer, pl_module, samples)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The final generator's coverage, when the last validation did not measure it."""
        if self.last_iteration == getattr(pl_module, "iteration", trainer.global_step) or signal_pending(trainer):
            return
        samples, self.last = self.measure(pl_module)
        log_after_fit(trainer, pl_module, {f"val/{k}": v for k, v in self.last.items()})
        self._draw(trainer, pl_module, samples)

    def _draw(self, trainer: L.Trainer, pl_module: L.LightningModule, samples: torch.Tensor) -> None:
        self.last_iteration = getattr(pl_module, "iteration", trainer.global_step)
        if self.plot and trainer.is_global_zero:
            step = getattr(pl_module, "iteration", trainer.global_step)
            out = Path(self._dirpath or Path(trainer.default_root_dir) / "samples")
            out.mkdir(parents=True, exist_ok=True)
            self.scatter(samples, out / f"toy_it{step:07d}.png", title=f"iteration {step}: " + ", ".join(
                f"{k} {v:.3g}" for k, v in self.last.items()))

    def scatter(self, samples: torch.Tensor, path: Path, title: str) -> None:
        scatter_png(samples, self.modes, path, title)


def scatter_png(samples: torch.Tensor, modes: torch.Tensor | None, path: Path, title: str = "") -> None:
    """A scatter plot of 2-D samples (and of the mixture's modes, when given) as a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.4, label="samples")
    if modes is not None:
        ax.scatter(modes[:, 0], modes[:, 1], s=40, c="red", marker="x", label="modes")
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
