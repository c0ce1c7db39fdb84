"""Small models, trainers and data for fast tests."""
import math
from pathlib import Path

import lightning as L

from gan_lightning.data import GANDataModule
from gan_lightning.models import BiGAN


def tiny_bigan(**kwargs) -> BiGAN:
    """A BiGAN small enough for unit tests, on 8x8 digits."""
    kwargs = {"data_shape": (1, 8, 8), "latent_dim": 4, "width": 32, **kwargs}
    return BiGAN(**kwargs)


def tiny_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    kwargs = {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 0,
              "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
              "enable_model_summary": False, "default_root_dir": tmp_path, **kwargs}
    return L.Trainer(**kwargs)


def digits(batch_size: int = 16, **kwargs) -> GANDataModule:
    return GANDataModule("digits", batch_size=batch_size, **kwargs)


LOG4 = 2 * math.log(2)


def tiny_gan(**kwargs):
    from gan_lightning.models import GAN

    return GAN(**{"data_shape": (1, 8, 8), "latent_dim": 4, "architecture": "mlp", "width": 32, **kwargs})


def tiny_ali(**kwargs):
    from gan_lightning.models import ALI

    return ALI(**{"data_shape": (1, 8, 8), "latent_dim": 4, "architecture": "mlp", "width": 32, **kwargs})


def assert_same_training_state(model_a: dict, model_b: dict, optimizers_a: list, optimizers_b: list,
                               atol: float = 0.0) -> None:
    """Two runs ended in the same place: equal tensors in the model state (bitwise when atol is 0) and in
    every optimizer's per-parameter state."""
    import torch

    def same(a, b):
        return torch.equal(a, b) if not atol else torch.allclose(a, b, atol=atol, rtol=0)

    for key, value in model_a.items():
        assert same(value, model_b[key]), f"{key} differs"
    for opt_a, opt_b in zip(optimizers_a, optimizers_b):
        for idx, entries in opt_a["state"].items():
            for name, value in entries.items():
                assert same(value, opt_b["state"][idx][name]), f"optimizer state {idx}.{name} differs"
