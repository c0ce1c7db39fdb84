"""Callbacks: they measure and draw through the model's public sample / encode / reconstruct."""
from gan_lightning.callbacks.best import BestCheckpoint
from gan_lightning.callbacks.image_metrics import ImageMetrics
from gan_lightning.callbacks.images import Interpolations, SampleGrid
from gan_lightning.callbacks.latent import LatentScatter, StyleGrid
from gan_lightning.callbacks.predictions import PredictionWriter
from gan_lightning.callbacks.preemption import Preemption
from gan_lightning.callbacks.probes import EncoderProbe
from gan_lightning.callbacks.progress import GANProgressBar
from gan_lightning.callbacks.summary import RunSummary
from gan_lightning.callbacks.toy import ModeCoverage

__all__ = ["BestCheckpoint", "SampleGrid", "Interpolations", "ImageMetrics", "EncoderProbe", "RunSummary",
           "GANProgressBar", "ModeCoverage", "Preemption", "LatentScatter", "StyleGrid", "PredictionWriter"]
