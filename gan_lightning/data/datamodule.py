"""One LightningDataModule that serves every model: toy 2-D mixtures and image datasets."""
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, random_split

from gan_lightning.data.loader import Batches, DeviceTensorLoader, ResumableDataLoader, ResumableSampler
from gan_lightning.data.sources import SOURCES, DatasetName, image_dataset, load_tensors
from gan_lightning.data.toy import sample_mixture

TOY_TRAIN_POINTS = 100_000  # PacGAN's training-set size
TOY_EVAL_POINTS = 10_000


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> floats in [-1, 1]; the only place images are rescaled on the way in."""
    return x.float().div_(127.5).sub_(1.0) if x.dtype == torch.uint8 else x


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Model-range images in [-1, 1] -> [0, 1], the only place they are rescaled on the way out."""
    return x.add(1.0).div(2.0).clamp(0.0, 1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model-range images in [-1, 1] -> uint8 [0, 255], rounding like the real data's own quantisation."""
    return to_unit_range(x.float()).mul(255).round().to(torch.uint8)


class _WithIndex(Dataset):
    """A dataset's items with their positions appended: ``(*item, i)`` (``predict_dataloader``)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return (*self.dataset[i], i)


class GANDataModule(L.LightningDataModule):
    def __init__(
        self,
        dataset: DatasetName = "fashion_mnist",
        data_dir: str = "data",
        batch_size: int = 128,
        val_fraction: float = 0.1,
        image_size: int = 64,
        on_device: bool = False,
        num_workers: int = 0,
        download: bool = True,
        seed: int = 0,
        n_labelled: Optional[int] = None,
        iterations_per_batch: int = 1,
    ):
        """The shared data for every model; images are served in [-1, 1] with their labels.

        Args:
            dataset: which data to serve.
            data_dir: folder holding (or receiving) the dataset's files.
            batch_size: examples per batch on each device.
            val_fraction: share of the training files held out for validation (datasets without an
                official validation split); the official test split is kept for testing. 0 trains on the whole
                training set and leaves validation empty (Lightning then skips it; not for image folders and
                digits, whose test images are carved out by this fraction).
            image_size: side length that CelebA and image folders are resized and cropped to.
            on_device: keep the whole training set as one tensor in device memory and batch by
                index-gathering, with no DataLoader workers (small datasets only; fastest for small GANs).
            num_workers: DataLoader worker processes when ``on_device`` is off.
            download: let torchvision download missing files (users' machines; not possible offline).
            seed: seed of the train/val split, the toy mixtures, the on-device shuffling and the labelled subset.
            n_labelled: semi-supervised learning: keep the labels of this many training examples (the same
                number per class, chosen with ``seed``) and serve the others with label -1; the labelled
                ones are also available whole through ``labelled_subset()``. None: every label is kept.
            iterations_per_batch: with ``on_device``, serve this many consecutive training batches to Lightning
                as one; the model trains on each in turn, exactly as with 1, and Lightning's per-batch work
                (hooks, logging, progress: about 0.5 to 1 ms of host time) is paid once for all of them. Settings
                that Lightning counts in batches (``limit_train_batches``, ``val_check_interval``,
                ``log_every_n_steps``, ``ModelCheckpoint(every_n_train_steps)``) then count these groups; the
                models' ``iteration`` counts iterations. See docs/performance.md.
        """
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if val_fraction == 0 and dataset in ("image_folder", "digits"):
            raise ValueError(f"data.val_fraction=0: {dataset!r} carves its val and test images out of its files by "
                             "val_fraction, so 0 would leave no test images; set data.val_fraction > 0 (protocol "
                             "train50k scores against all its files anyway)")
        if on_device and dataset in ("celeba", "image_folder"):
            raise ValueError(f"data.on_device=true keeps the dataset in device memory; {dataset!r} is read "
                             "lazily from disk. Set data.on_device=false for it.")
        if iterations_per_batch < 1:
            raise ValueError(f"data.iterations_per_batch must be >= 1, got {iterations_per_batch}")
        if iterations_per_batch > 1 and not on_device:
            raise ValueError(f"data.iterations_per_batch={iterations_per_batch} groups batches of the data held in "
                             "device memory: set data.on_device true, or data.iterations_per_batch 1")
        if n_labelled is not None and n_labelled < 0:
            raise ValueError(f"data.n_labelled must be >= 0 or null, got {n_labelled}")
        # In checkpoints (evaluate rebuilds the data from them) but not in the loggers' hyperparameters: Lightning
        # refuses to log a model and a data module that share a key with different values (model.seed and
        # data.seed may rightly differ); config.yaml and the W&B run hold the whole config anyway.
        self.save_hyperparameters(logger=False)
        self.root = Path(data_dir).expanduser()
        self.splits: dict[str, Dataset] = {}

    @property
    def data_shape(self) -> tuple[int, ...]:
        """One example's shape, e.g. (1, 28, 28) for Fashion-MNIST or (2,) for a toy mixture."""
        shape = SOURCES[self.hparams.dataset].shape
        return (shape[0], self.hparams.image_size, self.hparams.image_size) if shape[1:] == (0, 0) else shape

    @property
    def num_classes(self) -> int:
        return SOURCES[self.hparams.dataset].num_classes

    def prepare_data(self) -> None:
        """Runs on one process per node: stage or download the files once."""
        name = self.hparams.dataset
        if name in ("fashion_mnist", "mnist", "cifar10", "svhn"):
            load_tensors(name, self.root, "train", self.hparams.download)
            load_tensors(name, self.root, "test", self.hparams.download)
        elif name == "celeba":
            image_dataset(name, self.root, "train", self.hparams.image_size, self.hparams.download)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits:
            return
        name, seed = self.hparams.dataset, self.hparams.seed
        if name.startswith("toy_"):
            self.splits = {split: TensorDataset(*sample_mixture(name, n, seed=seed + offset))
                           for split, n, offset in [("train", TOY_TRAIN_POINTS, 0), ("val", TOY_EVAL_POINTS, 1),
                                                    ("test", TOY_EVAL_POINTS, 2)]}
        elif name == "celeba":
            self.splits = {split: image_dataset(name, self.root, official, self.hparams.image_size, False)
                           for split, official in [("train", "train"), ("val", "valid"), ("test", "test")]}
        elif name in ("image_folder", "digits"):  # one pool of files: carve val and test out of it
            full = (TensorDataset(*load_tensors(name, self.root, "train", False)) if name == "digits"
                    else image_dataset(name, self.root, "train", self.hparams.image_size, False))
            n_held = max(1, int(len(full) * self.hparams.val_fraction))
            train, val, test = random_split(full, [len(full) - 2 * n_held, n_held, n_held],
                                            generator=torch.Generator().manual_seed(seed))
            self.splits = {"train": train, "val": val, "test": test}
        else:
            full = TensorDataset(*load_tensors(name, self.root, "train", False))
            n_val = int(len(full) * self.hparams.val_fraction)
            order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
            self.splits = {"train": TensorDataset(*full[order[n_val:]]), "val": TensorDataset(*full[order[:n_val]]),
                           "test": TensorDataset(*load_tensors(name, self.root, "test", False))}
        if self.hparams.n_labelled is not None:
            self.labelled_indices()  # fail at set-up, naming the option, if the data cannot have a labelled subset

    def labelled_indices(self) -> torch.Tensor:
        """Positions in the training split of the examples whose labels are kept: n_labelled // C per class
        (the first n_labelled % C classes one more), chosen with ``seed``; all of them when n_labelled is None."""
        tensors = self._tensors("train")
        labels = tensors[1] if tensors is not None and len(tensors) > 1 else None
        n, name = self.hparams.n_labelled, self.hparams.dataset
        if labels is None or self.num_classes == 0:
            raise ValueError(f"data.n_labelled needs a labelled dataset held in memory; {name!r} has no labels here")
        if n is None:
            return torch.arange(len(labels))
        if n > len(labels):
            raise ValueError(f"data.n_labelled={n} exceeds the {len(labels)} training examples of {name!r}")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.hparams.seed + 7))
        shuffled = labels[order]
        chosen = [order[shuffled == c][: n // self.num_classes + (c < n % self.num_classes)]
                  for c in range(self.num_classes)]
        return torch.cat(chosen).sort().values

    def labelled_subset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The labelled training examples as (images in [-1, 1], labels), on the CPU."""
        if not self.splits:
            self.setup("fit")
        x, y = self._tensors("train")[:2]
        keep = self.labelled_indices()
        return to_model_range(x[keep]), y[keep]

    def _tensors(self, split: str) -> Optional[list[torch.Tensor]]:
        ds = self.splits[split]
        if isinstance(ds, Subset) and isinstance(ds.dataset, TensorDataset):
            return [t[ds.indices] for t in ds.dataset.tensors]
        return list(ds.tensors) if isinstance(ds, TensorDataset) else None

    def _loader(self, split: str, train: bool):
        """Every split in ``ResumableSampler`` order: the training split shuffled per epoch in global-batch
        blocks and resumable mid-epoch, the others in file order."""
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        order = dict(shuffle=train, drop_last=train, seed=self.hparams.seed, rank=rank, world_size=world)
        position = self._position if train else None
        tensors = self._tensors(split)
        if split == "train" and self.hparams.n_labelled is not None:
            hidden, keep = torch.full_like(tensors[1], -1), self.labelled_indices()
            hidden[keep] = tensors[1][keep]
            tensors = [tensors[0], hidden, *tensors[2:]]  # unlabelled examples carry -1
            dataset = TensorDataset(*tensors)
        else:
            dataset = self.splits[split]
        if self.hparams.on_device and tensors is not None and self.trainer is not None:
            return DeviceTensorLoader(tensors, self.hparams.batch_size, device=self.trainer.strategy.root_device,
                                      position=position, **order,
                                      iterations_per_batch=self.hparams.iterations_per_batch if train else 1)
        return ResumableDataLoader(dataset, self.hparams.batch_size, position=position, **order,
                                   num_workers=self.hparams.num_workers,
                                   persistent_workers=self.hparams.num_workers > 0)

    def _position(self) -> dict:
        """Where training stands, as Lightning's loop counts it: the epoch and the batches it has trained on."""
        loop = self.trainer.fit_loop
        done = loop.epoch_loop.batch_progress.current.processed  # Lightning's batches: groups of iterations_per_batch
        epoch_done = done >= self.trainer.num_training_batches
        return {"epoch": self.trainer.current_epoch, "batches_done": done * self.hparams.get("iterations_per_batch", 1),
                "epoch_done": epoch_done, "data": self.order_name()}

    def order_name(self) -> str:
        """The settings that decide the training examples' order: a position inside an epoch holds only with them."""
        hp = self.hparams
        return (f"dataset {hp.dataset}, seed {hp.seed}, val_fraction {hp.val_fraction}, n_labelled {hp.n_labelled}, "
                f"{len(self.splits['train']) if 'train' in self.splits else '?'} training examples")

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader("test", train=False)

    def predict_dataloader(self):
        """``predict``'s data: the test split (as ``test``: the official test set, or the images carved out for
        testing), in file order, each batch ``(x, y, index)`` with the examples' positions in the split. Sharded
        as val and test: rank r of W takes positions r, r + W, ... (the first ``len // W`` of them)."""
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        tensors = self._tensors("test")
        dataset = TensorDataset(*tensors, torch.arange(len(tensors[0]))) if tensors is not None \
            else _WithIndex(self.splits["test"])  # a lazily read image dataset: its items with their positions
        sampler = ResumableSampler(len(dataset), self.hparams.batch_size, shuffle=False, drop_last=False, rank=rank,
                                   world_size=world)
        # A plain DataLoader (also with on_device: one pass), which Lightning rebuilds to record the batches' indices.
        return DataLoader(dataset, batch_size=self.hparams.batch_size, sampler=sampler,
                          num_workers=self.hparams.num_workers)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Lightning's move, skipped for batches already on the device (``on_device``: gathered there)."""
        tensors = batch.tensors if isinstance(batch, Batches) else batch
        if isinstance(tensors, (tuple, list)) and all(isinstance(t, torch.Tensor) and t.device == device
                                                      for t in tensors):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, Batches):
            return batch.map_first(to_model_range)
        x, *rest = batch
        return (to_model_range(x), *rest)
