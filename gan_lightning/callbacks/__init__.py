"""Callbacks: they measure and draw through the model's public sample / encode / reconstruct."""
from gan_lightning.callbacks.images import SampleGrid
from gan_lightning.callbacks.progress import GANProgressBar
from gan_lightning.callbacks.summary import RunSummary
from gan_lightning.callbacks.toy import ModeCoverage

__all__ = ["SampleGrid", "RunSummary", "GANProgressBar", "ModeCoverage"]
