"""Where feature extractors' weights live, and the error that names the fix when they are not there.

Shared by ``features.py`` (Inception, the dispatcher) and ``dinov2_clip.py`` (DINOv2, CLIP), so that the
dispatcher imports the extractors and never the other way round.
"""
from pathlib import Path

import torch


class WeightsNotFoundError(FileNotFoundError):
    """The feature extractor's weights are neither at the given path nor in the cache nor downloadable."""


def hub_checkpoint_dir() -> Path:
    """torch.hub's checkpoint folder ($TORCH_HOME/hub/checkpoints), where every extractor's weights are looked for."""
    return Path(torch.hub.get_dir()) / "checkpoints"
