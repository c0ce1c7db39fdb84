import lightning as L
import pytest
import torch
from PIL import Image

from gan_lightning.data import DatasetNotFoundError, DeviceTensorLoader, GANDataModule
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

    monkeypatch.setitem(sources.SOURCES, "fashion_mnist",
                        sources.SOURCES["fashion_mnist"].__class__((1, 28, 28), 10, sources.SOURCES["fashion_mnist"].help,
                                                                 str(tmp_path / "no-debian")))
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


def test_bad_values_are_refused_with_the_key_name():
    with pytest.raises(ValueError, match="data.batch_size"):
        GANDataModule("digits", batch_size=0)
    with pytest.raises(ValueError, match="data.on_device"):
        GANDataModule("celeba", on_device=True)
