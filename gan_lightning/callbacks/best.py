"""``best.ckpt``: the checkpoint of a run's best headline figure so far, whatever the epochs it is measured at."""
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from gan_lightning.run_folders import BEST  # the file's name: `--ckpt_path best` finds it in the checkpoint folder


class BestCheckpoint(ModelCheckpoint):
    """Keeps one checkpoint, ``{dirpath}/best.ckpt``: the one with the best ``monitor`` so far, in ``mode``.

    Headline figures are measured at some validations only (``ImageMetrics`` and ``EncoderProbe`` every few
    epochs, and at the fit's last validation): a validation that did not measure ``monitor`` keeps the
    checkpoint as it is, where ``ModelCheckpoint`` would stop the run for a missing key. The file keeps one name,
    so that ``--ckpt_path best`` (fit, validate, test, predict, evaluate, sample) finds it without reading anything
    else; the iteration and the score are inside it (``gan_lightning.iteration``, the callback's state).

    Args:
        monitor: the logged figure, e.g. ``val/fd_fashion_classifier``, ``val/probe_1nn``, ``val/modes``,
            ``val/error``, ``val/bits_per_dim``.
        mode: ``min`` for distances, errors and bits/dim; ``max`` for accuracies and mode counts. Required: a
            figure's better direction is the config's statement, never a guess from its name.
        dirpath: the run's checkpoint folder (the one ``ModelCheckpoint`` writes ``last.ckpt`` to).
    """

    def __init__(self, monitor: str, mode: Literal["min", "max"], dirpath: str | None = None):
        if mode not in ("min", "max"):
            raise ValueError(f"BestCheckpoint's mode must be 'min' or 'max'; got {mode!r}")
        super().__init__(dirpath=dirpath, filename=BEST, monitor=monitor, mode=mode, save_top_k=1, save_last=False,
                         enable_version_counter=False, auto_insert_metric_name=False, save_on_train_epoch_end=False)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.monitor in trainer.callback_metrics:  # measured at this validation
            super().on_validation_end(trainer, pl_module)
