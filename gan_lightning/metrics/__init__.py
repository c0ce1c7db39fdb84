"""Metrics: pure functions of samples (and, later, feature extractors); they talk to models only
through the models' public ``sample`` / ``encode``."""
from gan_lightning.metrics.mode_coverage import N_SAMPLES, mode_coverage

__all__ = ["mode_coverage", "N_SAMPLES"]
