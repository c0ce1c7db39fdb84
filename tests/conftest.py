from pathlib import Path

import pytest
from hypothesis import settings

from gan_lightning.data import GANDataModule

# Property-based tests (tests/test_fuzz_inputs.py): a fixed, derandomised count in CI; `--hypothesis-profile soak`
# tries ten times as many examples, drawn afresh each run.
settings.register_profile("ci", max_examples=100, derandomize=True, print_blob=True)
settings.register_profile("soak", max_examples=1000, derandomize=False, print_blob=True)
settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The repository's data folder with Fashion-MNIST staged (from Debian's package or a download)."""
    root = REPO / "data"
    GANDataModule("fashion_mnist", data_dir=str(root)).prepare_data()
    return root


BIGAN_RING = REPO / "configs" / "toy" / "bigan_ring.yaml"
SMOKE = REPO / "configs" / "overlays" / "smoke.yaml"


def toy_fit_args(run: Path, *extra: str) -> list[str]:
    """``fit`` of a small BiGAN on the ring (the smoke overlay: one epoch of 4 iterations) into ``run``."""
    return ["fit", "--config", str(BIGAN_RING), "--config", str(SMOKE), "--model.init_args.width", "16",
            "--run_dir", str(run), "--wandb.mode", "off", "--trainer.enable_progress_bar", "false", *extra]


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> Path:
    """A real run folder, made once per session through the CLI: the file-reading tests mutate copies of it."""
    from gan_lightning.cli import main

    run = tmp_path_factory.mktemp("toy") / "run"
    main(toy_fit_args(run))
    return run


@pytest.fixture(autouse=True)
def no_wandb(monkeypatch):
    """W&B off in every test (W&B's own switch, which ``wandb.mode: auto`` follows): runs that are not about W&B
    make no offline W&B run and start no wandb service. Tests about W&B unset or change it."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
