"""Encoder probes during training: 1-NN and linear-probe accuracy of E(x), next to raw pixels."""
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from gan_lightning.callbacks.cadence import log_after_fit, measures_now
from gan_lightning.callbacks.preemption import signal_pending
from gan_lightning.data import to_model_range
from gan_lightning.distributed import GLOBAL_VALUE
from gan_lightning.errors import ConfigError
from gan_lightning.metrics.probes import penultimate_features, probe_scores


def labelled_split(datamodule, split: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's first ``n`` (images in [-1, 1], labels) on the CPU."""
    if not datamodule.splits:
        datamodule.setup("fit")
    tensors = datamodule._tensors(split)
    if tensors is None:
        from torch.utils.data import DataLoader, Subset

        ds = datamodule.splits[split]
        ds = Subset(ds, range(min(n or len(ds), len(ds))))
        tensors = [torch.cat(t) for t in zip(*DataLoader(ds, batch_size=500), strict=True)]
    images, labels = tensors[0][:n], tensors[1][:n]
    return to_model_range(images), labels


def model_probe_scores(model, datamodule, n_train: int | None, n_test: int | None = None, pixels: bool = True,
                       linear: bool = True, penultimate: bool = True, paired: bool = True,
                       split: Literal["val", "test"] = "test", bar=None) -> dict[str, float]:
    """``probe_scores`` of a model with an encoder on its data module's labelled splits: E(x) (``model.features``
    where the model has it, the encoder's output before a squashing map; else ``model.encode``),
    the encoder's penultimate layer (when ``penultimate``) and raw pixels (when ``pixels``), fit on ``n_train``
    training images and scored on ``n_test`` images of ``split`` (None: all), plus the reconstruction MSE on
    those and (``paired``, with ``pixels``) McNemar's test of each 1-NN classifier against the pixels'. No
    other split is read. ``bar``: a progress-bar factory (tqdm's signature) for ``probe_scores``' bars (``evaluate``
    shows them; the callback does not)."""
    train, test = labelled_split(datamodule, "train", n_train), labelled_split(datamodule, split, n_test)
    features = getattr(model, "features", model.encode)
    return probe_scores(features, model.reconstruct, train, test, model.device, pixels=pixels, linear=linear,
                        penultimate=penultimate_features(model.net("encoder")) if penultimate else None,
                        paired=paired, bar=bar)


class EncoderProbe(L.Callback):
    """Logs ``val/probe_1nn``, ``val/probe_linear`` (and the raw-pixel baselines, once) and ``val/reconstruction_mse``,
    scored on the validation split, so that a checkpoint chosen by them is not chosen on the test set.

    Features are ``model.features(x)`` where the model has it (ALI/BiGAN: the encoder's output before
    ``squash_encoder``'s map; the posterior mean for ALI), else ``model.encode(x)``, of ``n_test`` images of the
    scored split against ``n_train`` training images. Runs on rank 0; the probes are cheap next to a training epoch.

    Args:
        n_train: training images the probes fit / search (default 10,000; None for all).
        n_test: images of the scored split they are scored on (default: all).
        every_n_epochs: probe at every n-th validation.
        linear: also fit the linear probe (scikit-learn's logistic regression).
        penultimate: also probe the encoder's penultimate layer (the input of its last linear layer), the
            BiGAN paper's second feature set: ``val/probe_1nn_penultimate``, ``val/probe_linear_penultimate``.
        split: the split scored, and the logged names' prefix: ``val`` (default), or ``test`` for a measurement
            of the papers' protocol along training (``test/probe_1nn``, ...), never to choose checkpoints by.
    """

    def __init__(self, n_train: int | None = 10_000, n_test: int | None = None, every_n_epochs: int = 1,
                 linear: bool = True, penultimate: bool = True, split: Literal["val", "test"] = "val"):
        if split not in ("val", "test"):
            raise ConfigError(f"EncoderProbe's split must be 'val' or 'test'; got {split!r}")
        self.n_train, self.n_test, self.every_n_epochs, self.linear = n_train, n_test, every_n_epochs, linear
        self.penultimate, self.split = penultimate, split
        self._pixels: dict[str, float] | None = None
        self.last: dict[str, float] = {}
        self.last_iteration: int | None = None  # the iteration ``last`` was measured at

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not (hasattr(pl_module, "encode") and hasattr(pl_module, "reconstruct")):
            raise ConfigError(f"EncoderProbe needs a model with an encoder; {type(pl_module).__name__} has none: "
                             "remove the callback or use ALI, BiGAN, an AAE or the VAE")
        if trainer.datamodule is not None and trainer.datamodule.num_classes == 0:
            raise ConfigError(f"EncoderProbe needs labels; data.dataset {trainer.datamodule.hparams.dataset!r} "
                              "has none")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not measures_now(trainer, self.every_n_epochs):
            return
        if signal_pending(trainer):  # the run saves and stops at the next iteration: do not delay it
            rank_zero_info("EncoderProbe: skipped, a preemption signal is pending")
            return
        if trainer.is_global_zero:
            pl_module.log_dict({f"{self.split}/{k}": v for k, v in self.measure(trainer, pl_module).items()},
                               **GLOBAL_VALUE)  # rank 0 alone
            rank_zero_info("  ".join(f"{k} {v:.4f}" for k, v in self.last.items()))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The final encoder's probes, when the last validation did not measure them."""
        if self.last_iteration == getattr(pl_module, "iteration", trainer.global_step) or signal_pending(trainer):
            return
        if not trainer.is_global_zero or trainer.datamodule is None or not hasattr(trainer.datamodule, "splits"):
            return
        log_after_fit(trainer, pl_module, {f"{self.split}/{k}": v for k, v in self.measure(trainer, pl_module).items()})
        rank_zero_info("EncoderProbe at the end of fit: " + "  ".join(f"{k} {v:.4f}" for k, v in self.last.items()))

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The probes of the encoder now (the raw pixels' baselines scored at the first probe only)."""
        scores = model_probe_scores(pl_module, trainer.datamodule, self.n_train, self.n_test,
                                    pixels=self._pixels is None, linear=self.linear, penultimate=self.penultimate,
                                    # the pixels are scored at the first probe alone, so no paired test: `evaluate`
                                    # and benchmarks/probe_trajectory.py give it for a checkpoint
                                    paired=False, split=self.split)
        if self._pixels is None:
            self._pixels = {k: v for k, v in scores.items() if k.endswith("_pixels")}
        self.last = {**scores, **self._pixels}
        self.last_iteration = getattr(pl_module, "iteration", trainer.global_step)
        return self.last
