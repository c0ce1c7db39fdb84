from pathlib import Path

import pytest

from gan_lightning.data import GANDataModule

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The repository's data folder with Fashion-MNIST staged (from Debian's package or a download)."""
    root = REPO / "data"
    GANDataModule("fashion_mnist", data_dir=str(root)).prepare_data()
    return root


@pytest.fixture(autouse=True)
def no_wandb(monkeypatch):
    """W&B off in every test (W&B's own switch, which ``wandb.mode: auto`` follows): runs that are not about W&B
    make no offline W&B run and start no wandb service. Tests about W&B unset or change it."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
