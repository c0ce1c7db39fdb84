"""Small models, trainers and data for fast tests."""
import math
import warnings
from pathlib import Path

import lightning as L

from gan_lightning.data import GANDataModule
from gan_lightning.models import BiGAN


def tiny_bigan(**kwargs) -> BiGAN:
    """A BiGAN small enough for unit tests, on 8x8 digits."""
    kwargs = {"data_shape": (1, 8, 8), "latent_dim": 4, "width": 32, **kwargs}
    return BiGAN(**kwargs)


class RecordWarnings(L.Callback):
    """Each rank appends every warning it raises between setup and teardown to ``out/warnings<rank>.txt``: DDP's
    ranks are forked, so the test process's capture (pytest's, ``pytest.warns``) sees none of theirs."""

    def __init__(self, out: Path):
        self.out, self._catch, self._caught = Path(out), None, []

    def setup(self, trainer, pl_module, stage):
        from lightning.pytorch.trainer.connectors.logger_connector import result

        result.warning_cache.clear()  # Lightning says a thing once per process; a fork inherits what was said
        self._catch = warnings.catch_warnings(record=True)
        self._caught = self._catch.__enter__()
        warnings.simplefilter("always")

    def on_exception(self, trainer, pl_module, exception):
        self.teardown(trainer, pl_module, "exception")

    def teardown(self, trainer, pl_module, stage):
        if self._catch is None:
            return
        self._catch.__exit__(None, None, None)
        self._catch = None
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / f"warnings{trainer.global_rank}.txt").open("a") as file:
            for caught in self._caught:  # one line each
                file.write(f"{caught.category.__name__}: {' '.join(str(caught.message).split())}\n")

    @staticmethod
    def read(out: Path) -> list[str]:
        """The warnings every rank recorded in ``out``, one a line."""
        return [line for path in sorted(Path(out).glob("warnings*.txt")) for line in path.read_text().splitlines()]


# Warnings a run once printed that tell a user nothing to act on; a DDP run that records them fails its test.
UNACTIONABLE = ("It is recommended to use `self.log(",           # a value logged per epoch without sync_dist
                "torch.distributed.nn.functional.all_gather is deprecated")   # Lightning's strategy.all_gather


def unactionable(out: Path) -> list[str]:
    return [line for line in RecordWarnings.read(out) if any(text in line for text in UNACTIONABLE)]


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
    for opt_a, opt_b in zip(optimizers_a, optimizers_b, strict=True):
        for idx, entries in opt_a["state"].items():
            for name, value in entries.items():
                assert same(value, opt_b["state"][idx][name]), f"optimizer state {idx}.{name} differs"


def measure_on_ranks(folder: Path, world_size: int, measure, cases: list) -> list[list]:
    """``measure(dist, *case)`` for every case on ``world_size`` forked gloo ranks, each with a ``Dist`` of its rank;
    returns each rank's list of results. Fails naming the ranks that hung or raised."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_measure_on_rank, args=(rank, world_size, folder, measure, cases))
             for rank in range(world_size)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    hung = [rank for rank, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    errors = {f.name: f.read_text() for f in sorted(folder.glob("error*.txt"))}
    assert not hung and not errors and all(p.exitcode == 0 for p in procs), f"hung ranks {hung}, errors {errors}"
    import torch

    return [torch.load(folder / f"r{rank}.pt") for rank in range(world_size)]


def _measure_on_rank(rank: int, world_size: int, folder: Path, measure, cases: list) -> None:
    from datetime import timedelta

    import torch

    from gan_lightning.metrics.image_scores import Dist

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                                         world_size=world_size, timeout=timedelta(seconds=60))
    try:
        def broadcast(obj):
            box = [obj]
            torch.distributed.broadcast_object_list(box, src=0)
            return box[0]

        dist = Dist(rank, world_size, broadcast, torch.distributed.barrier)
        torch.save([measure(dist, *case) for case in cases], folder / f"r{rank}.pt")
    except BaseException as err:
        (folder / f"error{rank}.txt").write_text(f"{type(err).__name__}: {err}")
        raise
    finally:
        torch.distributed.destroy_process_group()


def refused(*args: str) -> str:
    """The one line ``python -m gan_lightning ARGS`` stops with (in-process: the same ``main``), checked to be one
    line of ``gan_lightning: error: ...``."""
    import pytest

    from gan_lightning.cli import main

    with pytest.raises(SystemExit) as stop:
        main(list(args))
    assert isinstance(stop.value.code, str) and "\n" not in stop.value.code, stop.value.code
    assert stop.value.code.startswith("gan_lightning: error: "), stop.value.code
    return stop.value.code
