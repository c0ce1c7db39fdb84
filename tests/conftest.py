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
