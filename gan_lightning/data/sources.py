"""Where each dataset comes from, and how it is read into (images, labels) per split.

Image tensors stay uint8 (B, C, H, W) until they reach the device; the DataModule maps them to
[-1, 1] in exactly one place. A dataset that is neither on disk nor downloadable raises
``DatasetNotFoundError`` naming the folder the files must go to and the package that provides them; a file
that is there but truncated or damaged raises ``DatasetCorruptError`` naming that file and how to replace it.
"""
import gzip
import shutil
import struct
import zlib
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


class DatasetCorruptError(ValueError):
    """A dataset file is there but truncated or damaged; the one-line message names it and the fix."""

    def __init__(self, message: str):
        # A DataLoader worker re-raises with "Caught DatasetCorruptError in DataLoader worker process 0.\n
        # Original Traceback ..." as the message; keep the original one-line message, its last line.
        if message.startswith("Caught ") and "\nOriginal Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


@dataclass(frozen=True)
class Source:
    shape: tuple[int, ...]          # one example's shape; (C, image_size, image_size) sets use 0 for the size
    num_classes: int
    help: str                       # where the files go, shown when they are missing
    debian_dir: Optional[str] = None  # a Debian package's install folder, searched before any download
    debian_package: Optional[str] = None  # the package that installs debian_dir, named when its files are bad


SOURCES: dict[str, Source] = {
    "fashion_mnist": Source((1, 28, 28), 10, "the four *-ubyte.gz files in {root}/FashionMNIST/raw/ "
                            "(Debian: apt-get install dataset-fashion-mnist)", "/usr/share/datasets/fashion-mnist",
                            "dataset-fashion-mnist"),
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


IDX_STEMS = {"train-images-idx3-ubyte": "images", "train-labels-idx1-ubyte": "labels",
             "t10k-images-idx3-ubyte": "images", "t10k-labels-idx1-ubyte": "labels"}
_IDX_LAYOUT = {"images": (0x00000803, 16, (28, 28)), "labels": (0x00000801, 8, ())}  # magic, header bytes, dims


def corrupt(name: str, path: Path, what: str, pair: bool = False) -> DatasetCorruptError:
    """The error for a dataset file that is there but unusable: the file, what is wrong, and how to replace it
    (``pair``: it and the file ``what`` names)."""
    source = SOURCES[name]
    package = source.debian_package
    if source.debian_dir and Path(path).parent == Path(source.debian_dir):
        fix = (f"reinstall Debian's {package} (apt-get install --reinstall {package})" if package
               else "reinstall the package that installed it")
    else:
        again = "make data" if name == "fashion_mnist" else "rerun prepare_data"
        it = "both and stage them" if pair else "it and stage it"
        fix = f"delete {it} again ({again}{f', or apt-get install --reinstall {package}' if package else ''})"
    return DatasetCorruptError(f"dataset {name!r}: {str(path)!r} is {what}. Fix: {fix}.")


def _idx_count(name: str, path: Path, kind: str, shown: Optional[Path] = None) -> int:
    """Check an idx file's header against its size (no data read); return its number of examples.

    ``shown`` is the file named in the error when ``path`` is a temporary copy of it."""
    magic_want, header, dims_want = _IDX_LAYOUT[kind]
    shown = shown or path
    size = path.stat().st_size
    if size < header:
        raise corrupt(name, shown, f"truncated: {size} bytes, shorter than the {header}-byte idx {kind} header")
    with open(path, "rb") as f:
        magic, n, *dims = struct.unpack(f">{header // 4}I", f.read(header))
    if magic != magic_want:
        raise corrupt(name, shown, f"not an idx {kind} file (magic number 0x{magic:08x}, expected 0x{magic_want:08x})")
    if tuple(dims) != dims_want:
        raise corrupt(name, shown, f"not a file of 28x28 images (its header says {'x'.join(map(str, dims))})")
    want = header + n * (28 * 28 if kind == "images" else 1)
    if size != want:
        state = "truncated" if size < want else "the wrong size"
        raise corrupt(name, shown, f"{state}: {size} bytes where its header's {n} {kind} need exactly {want}")
    return n


def _check_idx_files(name: str, raw: Path) -> None:
    """Every staged idx file's header matches its size, and each split has as many labels as images."""
    counts = {stem: _idx_count(name, raw / stem, kind) for stem, kind in IDX_STEMS.items()}
    for split in ("train", "t10k"):
        images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        if counts[images] != counts[labels]:
            raise corrupt(name, raw / labels, f"a labels file for {counts[labels]} examples but "
                                              f"{str(raw / images)!r} holds {counts[images]} images", pair=True)


def _stage_one(name: str, source: Path, dest: Path, kind: str) -> None:
    """Copy or decompress one idx file to ``dest`` through ``dest.part``, checked before it is renamed, so a
    failed or killed copy never leaves a file that looks complete."""
    part = dest.with_name(dest.name + ".part")
    try:
        if source.suffix == ".gz":
            try:
                with gzip.open(source, "rb") as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except EOFError:
                raise corrupt(name, source, "truncated (its compressed data ends early)") from None
            except gzip.BadGzipFile as err:
                raise corrupt(name, source, f"not a gzip file or damaged ({err})") from None
            except zlib.error as err:
                raise corrupt(name, source, f"damaged ({err})") from None
        else:
            shutil.copyfile(source, part)
        _idx_count(name, part, kind, shown=source)
        part.replace(dest)  # atomic: a killed copy never looks complete
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _stage_idx_files(name: str, root: Path) -> None:
    """Decompress MNIST-style idx files from a Debian package or data_dir into torchvision's raw folder, and
    check them: a truncated or damaged file raises ``DatasetCorruptError`` naming it."""
    raw = root / ("FashionMNIST" if name == "fashion_mnist" else "MNIST") / "raw"
    if all((raw / s).exists() for s in IDX_STEMS):
        _check_idx_files(name, raw)
        return
    candidates = [raw, root, root / name, Path(SOURCES[name].debian_dir or "/nonexistent")]
    for folder in candidates:
        if all((folder / f"{s}.gz").exists() or (folder / s).exists() for s in IDX_STEMS):
            raw.mkdir(parents=True, exist_ok=True)
            for s, kind in IDX_STEMS.items():
                if (folder / s).exists() and folder != raw:
                    _stage_one(name, folder / s, raw / s, kind)
                elif not (raw / s).exists():
                    _stage_one(name, folder / f"{s}.gz", raw / s, kind)
            _check_idx_files(name, raw)
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


def read_image(path: str):
    """ImageFolder's loader: the image as RGB, or ``DatasetCorruptError`` naming a file PIL cannot decode.

    Module-level so that DataLoader workers can pickle it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except UnidentifiedImageError:
        reason = "PIL does not recognise its format"
    except Image.DecompressionBombError as err:  # more pixels than PIL's limit: a decompression bomb, or a huge image
        reason = " ".join(str(err).split())[:160]
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as err:  # truncated, ...
        reason = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
    raise DatasetCorruptError(f"image {path!r} cannot be read ({reason}): it is truncated or not an image. "
                              "Fix: remove that file or replace it with a good copy.")


def image_dataset(name: str, root: Path, split: Literal["train", "valid", "test"], image_size: int,
                  download: bool) -> Dataset:
    """A lazily read image dataset (CelebA, an image folder) yielding (uint8 (3, S, S), label)."""
    import torchvision.datasets as tvd
    from torchvision.transforms import v2

    transform = v2.Compose([v2.Resize(image_size), v2.CenterCrop(image_size), v2.PILToTensor()])
    try:
        if name == "celeba":
            return tvd.CelebA(str(root), split=split, target_type="identity", transform=transform, download=download)
        from gan_lightning.data.image_folder import RegularImageFolder

        return RegularImageFolder(str(root), transform=transform, loader=read_image)
    except (RuntimeError, OSError) as err:
        raise missing(name, root, err, download) from None
