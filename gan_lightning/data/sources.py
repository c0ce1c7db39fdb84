"""Where each dataset comes from, and how it is read into (images, labels) per split.

Image tensors stay uint8 (B, C, H, W) until they reach the device; the DataModule maps them to
[-1, 1] in exactly one place. A dataset that is neither on disk nor downloadable raises
``DatasetNotFoundError`` naming the folder the files must go to and the package that provides them.
"""
import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
from torch.utils.data import Dataset

DatasetName = Literal[
    "fashion_mnist", "mnist", "cifar10", "svhn", "celeba", "image_folder", "digits", "toy_ring", "toy_grid"
]
Split = Literal["train", "test"]


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are missing and could not be obtained; the message says how to fix it."""


@dataclass(frozen=True)
class Source:
    shape: tuple[int, ...]          # one example's shape; (C, image_size, image_size) sets use 0 for the size
    num_classes: int
    help: str                       # where the files go, shown when they are missing
    debian_dir: Optional[str] = None  # a Debian package's install folder, searched before any download


SOURCES: dict[str, Source] = {
    "fashion_mnist": Source((1, 28, 28), 10, "the four *-ubyte.gz files in {root}/FashionMNIST/raw/ "
                            "(Debian: apt-get install dataset-fashion-mnist)", "/usr/share/datasets/fashion-mnist"),
    "mnist": Source((1, 28, 28), 10, "the four *-ubyte.gz files in {root}/MNIST/raw/", "/usr/share/datasets/mnist"),
    "cifar10": Source((3, 32, 32), 10, "cifar-10-python.tar.gz extracted in {root}/cifar-10-batches-py/"),
    "svhn": Source((3, 32, 32), 10, "train_32x32.mat and test_32x32.mat in {root}/"),
    "celeba": Source((3, 0, 0), 0, "the CelebA files (img_align_celeba/, list_eval_partition.txt, ...) in {root}/celeba/"),
    "image_folder": Source((3, 0, 0), 0, "images in class sub-folders of {root}/ (torchvision ImageFolder layout)"),
    "digits": Source((1, 8, 8), 10, "nothing: scikit-learn ships it"),
    "toy_ring": Source((2,), 8, "nothing: it is generated"),
    "toy_grid": Source((2,), 25, "nothing: it is generated"),
}


def missing(name: str, root: Path, cause: BaseException, download: bool) -> DatasetNotFoundError:
    where = SOURCES[name].help.format(root=root)
    reason = [line for line in str(cause).splitlines() if line.strip()][-1:] or [type(cause).__name__]
    fix = "" if download else ", or set data.download=true on a machine with internet access"
    return DatasetNotFoundError(
        f"dataset {name!r} is not in data_dir={str(root)!r}"
        f"{' and could not be downloaded' if download else ''} ({reason[0].strip()}). Put {where}{fix}."
    )


def _stage_idx_files(name: str, root: Path) -> None:
    """Decompress MNIST-style idx files from a Debian package or data_dir into torchvision's raw folder."""
    raw = root / ("FashionMNIST" if name == "fashion_mnist" else "MNIST") / "raw"
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    if all((raw / s).exists() for s in stems):
        return
    candidates = [raw, root, root / name, Path(SOURCES[name].debian_dir or "/nonexistent")]
    for folder in candidates:
        if all((folder / f"{s}.gz").exists() or (folder / s).exists() for s in stems):
            raw.mkdir(parents=True, exist_ok=True)
            for s in stems:
                if (folder / s).exists() and folder != raw:
                    shutil.copyfile(folder / s, raw / s)
                elif not (raw / s).exists():
                    with gzip.open(folder / f"{s}.gz", "rb") as src, open(raw / f"{s}.part", "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    (raw / f"{s}.part").replace(raw / s)  # atomic: a killed copy never looks complete
            return


def load_tensors(name: str, root: Path, split: Split, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A small dataset's split as (uint8 images (N, C, H, W), int64 labels (N,))."""
    import torchvision.datasets as tvd

    try:
        if name in ("fashion_mnist", "mnist"):
            _stage_idx_files(name, root)
            cls = tvd.FashionMNIST if name == "fashion_mnist" else tvd.MNIST
            ds = cls(str(root), train=split == "train", download=download)
            return ds.data.unsqueeze(1), ds.targets.long()
        if name == "cifar10":
            ds = tvd.CIFAR10(str(root), train=split == "train", download=download)
            return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)
        if name == "svhn":
            ds = tvd.SVHN(str(root), split=split, download=download)
            return torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long()
    except (RuntimeError, OSError) as err:  # torchvision: "Dataset not found", URLError when offline
        raise missing(name, root, err, download) from None
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)  # 0..16 -> 0..255
        return images, torch.from_numpy(digits.target).long()
    raise ValueError(f"{name!r} is not a tensor dataset")


def image_dataset(name: str, root: Path, split: Literal["train", "valid", "test"], image_size: int,
                  download: bool) -> Dataset:
    """A lazily read image dataset (CelebA, an image folder) yielding (uint8 (3, S, S), label)."""
    import torchvision.datasets as tvd
    from torchvision.transforms import v2

    transform = v2.Compose([v2.Resize(image_size), v2.CenterCrop(image_size), v2.PILToTensor()])
    try:
        if name == "celeba":
            return tvd.CelebA(str(root), split=split, target_type="identity", transform=transform, download=download)
        return tvd.ImageFolder(str(root), transform=transform)
    except (RuntimeError, OSError) as err:
        raise missing(name, root, err, download) from None
