import dataclasses
import gzip
import shutil
import struct
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from gan_lightning.data import DatasetCorruptError, DatasetNotFoundError, DeviceTensorLoader, GANDataModule
from gan_lightning.data.toy import mixture_modes
from tests.helpers import tiny_bigan, tiny_trainer


def batches(dm: GANDataModule, split: str):
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    for batch in loader:
        yield dm.on_after_batch_transfer(batch, 0)


@pytest.mark.slow
def test_fashion_mnist_splits_ranges_and_labels(data_dir):
    dm = GANDataModule("fashion_mnist", data_dir=str(data_dir), batch_size=1000, val_fraction=0.1)
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 54_000, "val": 6_000, "test": 10_000}
    x, y = next(batches(dm, "train"))
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32 and dm.data_shape == (1, 28, 28)
    assert x.min() == -1.0 and x.max() == 1.0  # uint8 0 and 255 map to the ends of [-1, 1]
    assert set(y.tolist()) == set(range(10))
    # train and val partition the official training file: their pixel sums add up to its sum
    full = GANDataModule("fashion_mnist", data_dir=str(data_dir), val_fraction=0.5)
    full.setup()
    total = sum(ds.tensors[0].long().sum() for name, ds in full.splits.items() if name != "test")
    assert sum(ds.tensors[0].long().sum() for name, ds in dm.splits.items() if name != "test") == total


def test_digits_are_scaled_to_minus_one_one_and_split_three_ways():
    dm = GANDataModule("digits", batch_size=64, val_fraction=0.1)
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 1439, "val": 179, "test": 179}
    xs = torch.cat([x for x, _ in batches(dm, "val")])
    assert xs.min() == -1.0 and xs.max() == 1.0 and xs.shape[1:] == (1, 8, 8)


@pytest.mark.parametrize("name,n_modes,std", [("toy_ring", 8, 0.01), ("toy_grid", 25, 0.05)])
def test_toy_mixtures_follow_pacgan(name, n_modes, std):
    dm = GANDataModule(name, batch_size=500)
    dm.setup()
    points, labels = dm.splits["train"].tensors
    modes, spec_std = mixture_modes(name)
    assert len(points) == 100_000 and len(modes) == n_modes and spec_std == std
    offsets = points - modes[labels]
    assert offsets.std().item() == pytest.approx(std, rel=0.02)
    assert torch.bincount(labels, minlength=n_modes).min() > 100_000 / n_modes * 0.9  # uniform over modes
    if name == "toy_ring":
        assert torch.allclose(modes.norm(dim=1), torch.ones(8))


def test_device_loader_shards_disjointly_and_reshuffles_each_epoch():
    data = torch.arange(103)
    ranks = [DeviceTensorLoader([data], 10, seed=3, rank=r, world_size=2) for r in range(2)]
    epoch0 = [torch.cat([b for (b,) in loader]) for loader in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 5  # 51 examples per rank, drop_last
    assert len(set(epoch0[0].tolist()) & set(epoch0[1].tolist())) == 0
    epoch1 = torch.cat([b for (b,) in ranks[0]])
    assert not torch.equal(epoch0[0], epoch1)
    again = DeviceTensorLoader([data], 10, seed=3, rank=0, world_size=2)
    assert torch.equal(torch.cat([b for (b,) in again]), epoch0[0])  # the same seed, the same order


def test_on_device_loader_serves_model_range_batches_through_the_trainer(tmp_path):
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch[0])

    dm = GANDataModule("digits", batch_size=16, on_device=True)
    tiny_trainer(tmp_path, callbacks=[Record()]).fit(tiny_bigan(), dm)
    assert isinstance(dm.train_dataloader(), DeviceTensorLoader)
    assert len(seen) == 3 and all(x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1 for x in seen)


def test_missing_dataset_names_the_folder_and_the_fix(tmp_path):
    dm = GANDataModule("cifar10", data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DatasetNotFoundError) as err:
        dm.prepare_data()
    assert str(tmp_path / "nowhere") in str(err.value) and "cifar-10-batches-py" in str(err.value)
    assert "data.download=true" in str(err.value)


def test_missing_fashion_mnist_names_the_debian_package(tmp_path, monkeypatch):
    from gan_lightning.data import sources

    source = sources.SOURCES["fashion_mnist"]
    monkeypatch.setitem(sources.SOURCES, "fashion_mnist",
                        source.__class__((1, 28, 28), 10, source.help, str(tmp_path / "no-debian")))
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        GANDataModule("fashion_mnist", data_dir=str(tmp_path), download=False).prepare_data()


def test_image_folder_resizes_mixed_sizes_and_reports_empty_folders(tmp_path):
    for i, (cls, size) in enumerate([("a", (20, 30)), ("a", (40, 40)), ("b", (17, 16)), ("b", (64, 50))] * 3):
        (tmp_path / "imgs" / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color=(i * 20, 0, 255)).save(tmp_path / "imgs" / cls / f"{i}.png")
    dm = GANDataModule("image_folder", data_dir=str(tmp_path / "imgs"), image_size=16, batch_size=4, val_fraction=0.2)
    dm.setup()
    x, y = next(batches(dm, "train"))
    assert dm.data_shape == (3, 16, 16) and x.shape == (4, 3, 16, 16) and -1 <= x.min() and x.max() <= 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="empty"):
        GANDataModule("image_folder", data_dir=str(tmp_path / "empty")).setup()


def fake_idx_set(raw: Path, n_train: int = 6, n_test: int = 4) -> None:
    """A tiny but valid set of the four Fashion-MNIST idx files (headers as in the real ones)."""
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in [("train", n_train), ("t10k", n_test)]:
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">4I", 0x803, n, 28, 28) + bytes(n * 28 * 28))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">2I", 0x801, n) + bytes(range(n)))


def fashion_mnist_gz_files(folder: Path) -> None:
    """The four *-ubyte.gz files in ``folder``: Debian's real ones where installed, else gzipped fakes."""
    debian = Path("/usr/share/datasets/fashion-mnist")
    folder.mkdir(parents=True, exist_ok=True)
    if all((debian / f"{s}-ubyte.gz").exists() for s in ["train-images-idx3", "train-labels-idx1",
                                                         "t10k-images-idx3", "t10k-labels-idx1"]):
        for f in debian.glob("*-ubyte.gz"):
            shutil.copyfile(f, folder / f.name)
        return
    fake_idx_set(folder / "fake")
    for f in (folder / "fake").iterdir():
        (folder / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
    shutil.rmtree(folder / "fake")


@pytest.mark.parametrize("where", ["data_dir", "debian"])
def test_truncated_gz_names_the_file_and_the_fix_and_leaves_no_raw_file(tmp_path, monkeypatch, where):
    from gan_lightning.data import sources

    data_dir = tmp_path / "data"
    gz_dir = data_dir if where == "data_dir" else tmp_path / "debian"
    fashion_mnist_gz_files(gz_dir)
    monkeypatch.setitem(sources.SOURCES, "fashion_mnist",
                        dataclasses.replace(sources.SOURCES["fashion_mnist"], debian_dir=str(tmp_path / "debian")))
    bad = gz_dir / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    dm = GANDataModule("fashion_mnist", data_dir=str(data_dir), download=False)
    with pytest.raises(DatasetCorruptError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert str(bad) in message and "truncated" in message and "\n" not in message
    assert ("apt-get install --reinstall dataset-fashion-mnist" if where == "debian" else "delete it") in message
    raw = data_dir / "FashionMNIST" / "raw"
    assert not (raw / "train-labels-idx1-ubyte").exists() and not list(raw.glob("*.part"))
    with pytest.raises(DatasetCorruptError, match="truncated"):  # and again, not a half file taken as staged
        dm.setup()
    bad.write_bytes(b"not gzip at all" * 10)
    with pytest.raises(DatasetCorruptError, match="not a gzip file"):
        dm.prepare_data()


def test_truncated_or_garbage_idx_files_are_named_before_torchvision_reads_them(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    fake_idx_set(raw)
    dm = GANDataModule("fashion_mnist", data_dir=str(tmp_path), download=False, val_fraction=0.5)
    dm.setup()  # the well-formed set loads
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 3, "val": 3, "test": 4}
    images = raw / "train-images-idx3-ubyte"
    good = images.read_bytes()
    images.write_bytes(good[:-100])
    with pytest.raises(DatasetCorruptError) as err:
        GANDataModule("fashion_mnist", data_dir=str(tmp_path), download=False).setup()
    assert str(images) in str(err.value) and "truncated" in str(err.value) and "delete it" in str(err.value)
    images.write_bytes(b"\x89PNG" + good[4:])  # wrong magic number
    with pytest.raises(DatasetCorruptError, match="not an idx images file"):
        GANDataModule("fashion_mnist", data_dir=str(tmp_path), download=False).prepare_data()
    fake_idx_set(raw, n_test=5)
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">2I", 0x801, 3) + bytes(3))  # well-formed, but 3 labels for 5 images
    with pytest.raises(DatasetCorruptError, match="3 examples") as err:
        GANDataModule("fashion_mnist", data_dir=str(tmp_path), download=False).prepare_data()
    assert str(labels) in str(err.value) and str(raw / "t10k-images-idx3-ubyte") in str(err.value)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupted_image_in_a_folder_is_named_when_its_batch_is_read(tmp_path, num_workers):
    for i in range(8):
        (tmp_path / "imgs" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), color=(i * 20, 0, 255)).save(tmp_path / "imgs" / "a" / f"{i}.png")
    bad = tmp_path / "imgs" / "a" / "3.png"
    bad.write_bytes(bad.read_bytes()[:60])
    dm = GANDataModule("image_folder", data_dir=str(tmp_path / "imgs"), image_size=16, batch_size=1,
                       val_fraction=0.1, num_workers=num_workers)
    dm.setup()
    with pytest.raises(DatasetCorruptError) as err:
        for split in ("train", "val", "test"):
            for _ in batches(dm, split):
                pass
    message = str(err.value)  # one line even when a DataLoader worker raised it
    assert str(bad) in message and "remove that file" in message and "\n" not in message


def test_bad_values_are_refused_with_the_key_name():
    with pytest.raises(ValueError, match="data.batch_size"):
        GANDataModule("digits", batch_size=0)
    with pytest.raises(ValueError, match="data.on_device"):
        GANDataModule("celeba", on_device=True)


def loaders_of_both_kinds(data, batch_size, world_size, rank=0, position=None):
    from torch.utils.data import TensorDataset

    from gan_lightning.data.loader import ResumableDataLoader

    order = dict(seed=3, rank=rank, world_size=world_size, position=position)
    return [DeviceTensorLoader([data], batch_size, **order),
            ResumableDataLoader(TensorDataset(data), batch_size, shuffle=True, drop_last=True, **order)]


def test_loader_state_holds_the_world_size_and_batch_size_it_was_counted_in():
    position = lambda: {"epoch": 1, "batches_done": 2, "epoch_done": False}  # noqa: E731
    for loader in loaders_of_both_kinds(torch.arange(200), 10, world_size=2, position=position):
        assert loader.state_dict() == {"epoch": 1, "batches_done": 2, "epoch_done": False, "world_size": 2,
                                       "batch_size": 10}


def test_a_mid_epoch_position_from_another_global_batch_is_refused_naming_both_world_sizes():
    """Positions are counted in global batches (devices x per-device batch): k batches of 2 x 10 are not k batches
    of 1 x 10. Refused in one line naming both; the same global batch split differently lands exactly."""
    from gan_lightning.checkpoints import CheckpointError

    data = torch.arange(200)
    saved = {"epoch": 1, "batches_done": 2, "epoch_done": False, "world_size": 2, "batch_size": 10}
    for loader in loaders_of_both_kinds(data, 10, world_size=1):
        with pytest.raises(CheckpointError) as err:
            loader.load_state_dict(saved)
        message = str(err.value)
        assert "world size 2" in message and "world size 1" in message and "\n" not in message
        assert "trainer.devices" in message and "start a new run" in message
    for loader in loaders_of_both_kinds(data, 20, world_size=4):
        with pytest.raises(CheckpointError, match="world size 2.*world size 4"):
            loader.load_state_dict(saved)

    # 2 x 10 resumed as 1 x 20: the same global batches, so the third is the two ranks' third batches together.
    ranks = []
    for rank in range(2):
        loader = loaders_of_both_kinds(data, 10, world_size=2, rank=rank)[0]
        loader.sampler.set_epoch(1)
        ranks.append(list(loader))
    for one in loaders_of_both_kinds(data, 20, world_size=1):
        one.load_state_dict(saved)
        (first,) = next(iter(one))
        assert torch.equal(first, torch.cat([ranks[0][2][0], ranks[1][2][0]]))

    # At an epoch's end the position is the next epoch's start, whatever the world size.
    for loader in loaders_of_both_kinds(data, 10, world_size=1):
        loader.load_state_dict({**saved, "epoch_done": True})
        assert (loader.sampler.epoch, loader.sampler.skip) == (2, 0)


def test_an_old_loader_state_without_the_world_size_still_loads():
    for loader in loaders_of_both_kinds(torch.arange(200), 10, world_size=1):
        loader.load_state_dict({"epoch": 1, "batches_done": 2, "epoch_done": False})
        assert (loader.sampler.epoch, loader.sampler.skip) == (1, 2)
