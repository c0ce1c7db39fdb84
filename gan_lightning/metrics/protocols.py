"""Evaluation protocols: which real images FID / IS / KID compare against, how many samples, how the images are
read, and the key their statistics are cached under. The ``ImageMetrics`` callback and the ``evaluate`` command
both take their protocol from here, by name:

| name          | samples | reference (the real statistics)                                  | as reported by        |
|---------------|---------|------------------------------------------------------------------|-----------------------|
| train50k      | 50,000  | the full official training set (Fashion-MNIST 60,000 images)     | BigGAN, StudioGAN     |
| test10k       | 10,000  | the official test set (Fashion-MNIST 10,000 images)              | StudioGAN's test rows |
| trainsplit10k | 10,000  | the data module's training split: the training set less the      | this project, during  |
|               |         | seeded ``val_fraction`` hold-out (54,000 images at 0.1)          | training              |
| val10k        | 10,000  | that held-out validation split (6,000 images at 0.1)             | -                     |

Each also names a second real set for the real-vs-real floor. An image folder (and ``digits``) has no official
splits: its "full training set" is all its files, it has no official test set, and the data module carves its
val and test images out of the files.
"""
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from gan_lightning.errors import ConfigError
from gan_lightning.metrics.image_scores import Bar, ImageScores, NoBar, RealStatistics, chunk

ProtocolName = Literal["train50k", "test10k", "trainsplit10k", "val10k"]
Reference = Literal["train_full", "train", "val", "test"]
POOLS = ("image_folder", "digits")  # one pool of files, no official splits
PREPROCESSING = "uint8 [0, 255]; generated images: round((x + 1) * 127.5)"


@dataclass(frozen=True)
class Protocol:
    name: str
    n_samples: int            # generated images, over all ranks
    reference: Reference      # the real set the scores compare against
    floor: Reference          # the second real set of the real-vs-real floor
    n_real: int | None = None  # only the reference's first n_real images (None: all)


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    Protocol("train50k", 50_000, "train_full", "test"),
    Protocol("test10k", 10_000, "test", "train_full"),
    Protocol("trainsplit10k", 10_000, "train", "test"),
    Protocol("val10k", 10_000, "val", "test"),
]}


def get_protocol(name: str, n_samples: int | None = None, n_real: int | None = None) -> Protocol:
    """The named protocol; with another ``n_samples`` or ``n_real`` it is renamed to say so, e.g.
    ``train50k[n_samples=200]``: a changed protocol is never reported under the published name."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown evaluation protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    if n_samples is not None and n_samples < 2 or n_real is not None and n_real < 2:
        raise ConfigError(f"protocol {name}: n_samples and n_real must be >= 2 (or unset), got {n_samples}, {n_real}")
    base = PROTOCOLS[name]
    changed = {k: v for k, v in (("n_samples", n_samples), ("n_real", n_real))
               if v is not None and v != getattr(base, k)}
    if not changed:
        return base
    return replace(base, name=f"{name}[{','.join(f'{k}={v}' for k, v in changed.items())}]", **changed)


def describe_reference(dataset: str, reference: Reference) -> str:
    pool = dataset in POOLS
    return {"train_full": "all the files" if pool else "the full official training set",
            "train": "the data module's training split (the files less its val and test share)" if pool else
            "the data module's training split (the training set less the val_fraction hold-out)",
            "val": "the data module's validation split (the val_fraction hold-out)",
            "test": "the test images the data module carves out of the files" if pool else "the official test set",
            }[reference]


@dataclass
class RealImages:
    """One set of real images: which, how many, where they come from, and the key of their cached statistics."""

    reference: Reference
    size: int
    key: dict
    source: torch.Tensor | Dataset  # uint8 (N, C, H, W) in memory, or a lazily read dataset of (image, label)

    def shard(self, rank: int, world_size: int, batch_size: int) -> Iterator[torch.Tensor]:
        """Rank ``rank``'s contiguous run of the batches of the first ``size`` images.

        The batches are cut before they are shared out, so each image meets the extractor in the same batch
        on any number of ranks (float results can depend on the batch)."""
        if isinstance(self.source, torch.Tensor):
            yield from chunk(self.source[:self.size].split(batch_size), rank, world_size)
            return
        batches = [range(i, min(i + batch_size, self.size)) for i in range(0, self.size, batch_size)]
        for indices in chunk(batches, rank, world_size):
            yield torch.stack([self.source[i][0] for i in indices])


def real_images(datamodule, reference: Reference, n_real: int | None = None) -> RealImages:
    """The real images of ``reference`` (their first ``n_real``) and what their statistics depend on (the extractor
    and library versions are added by ImageScores): the data settings the set depends on, the transform that
    resizes files (its repr: size, interpolation, antialias, crop) and, for a folder of files, their names, sizes
    and modification times (files added or changed later miss)."""
    if not datamodule.splits:
        datamodule.setup("fit")
    hp = datamodule.hparams
    dataset = _full_training_set(datamodule) if reference == "train_full" else datamodule.splits[reference]
    tensors = _tensors_of(dataset)
    source = tensors if tensors is not None else dataset
    files = _files_of(dataset)
    # the data module's own splits depend on its seed and val_fraction; the official sets and a whole folder do not
    carved = reference in ("train", "val") or (reference == "test" and hp.dataset in POOLS)
    key = {"dataset": hp.dataset, "split": reference, "n_real": n_real, "image_size": hp.image_size,
           **({"val_fraction": hp.val_fraction, "seed": hp.seed} if carved else {}),
           "data_dir": str(Path(hp.data_dir).expanduser().resolve()) if hp.dataset == "image_folder" else None,
           "resize": _transform_of(dataset), "files": _files_digest(files) if files else None,
           "preprocessing": PREPROCESSING}
    return RealImages(reference, min(len(source), n_real or len(source)), key, source)


def protocol_images(datamodule, protocol: Protocol, floor: bool = True) -> tuple[RealImages, RealImages | None]:
    """The protocol's reference images and its floor's (None when ``floor`` is off, or when the data have no
    set apart from the reference: a folder's files are all in ``train_full``). Raises ``ConfigError`` naming the
    protocol and the fix when the data lack the reference."""
    name = datamodule.hparams.dataset
    if protocol.reference == "test" and name in POOLS:
        raise ConfigError(f"protocol {protocol.name} scores against the official test set, and {name!r} has none (its "
                          "test images are carved out of its files): use protocol train50k or trainsplit10k")
    reference = real_images(datamodule, protocol.reference, protocol.n_real)
    if reference.size == 0:
        if protocol.reference == "val" and datamodule.hparams.val_fraction == 0:
            raise ConfigError(f"protocol {protocol.name} scores against the validation split, and data.val_fraction=0 "
                              "leaves it empty: set data.val_fraction > 0, or use protocol train50k or trainsplit10k")
        raise ConfigError(f"protocol {protocol.name}: {name!r} has no images in its {protocol.reference} split")
    disjoint = not (name in POOLS and protocol.reference == "train_full")
    other = real_images(datamodule, protocol.floor) if floor and disjoint else None
    return reference, other if other is not None and other.size >= 2 else None


def load_statistics(scores: ImageScores, images: RealImages, cache_dir: Path | None, batch_size: int,
                    hold: bool = True, bar: Bar = NoBar) -> RealStatistics:
    """``images``' real statistics, from the cache or computed on every rank; held as the metrics' real half
    unless ``hold`` is off. A cache file that counts other than ``images.size`` images is refused. ``bar``: a
    progress-bar factory (tqdm), shown only when the statistics are computed."""
    dist = scores.dist

    def shard() -> Iterator[torch.Tensor]:  # called on a cache miss alone
        with bar(total=images.size if dist.world_size == 1 else None, unit="images",
                 desc=f"real statistics: {images.size:,} {images.reference} images (not cached)") as progress:
            for batch in images.shard(dist.rank, dist.world_size, batch_size):
                yield batch
                progress.update(len(batch))

    load = scores.load_real if hold else scores.real_statistics
    stats = load(shard, images.key, cache_dir)
    if stats.n != images.size:
        where = scores.cache_path(images.key, cache_dir)
        raise ValueError(f"real statistics {where or ''} hold {stats.n} images where the {images.reference} set has "
                         f"{images.size}: delete that cache file and it is computed again")
    return stats


def describe(protocol: Protocol, reference: RealImages, floor: RealImages | None, scores: ImageScores) -> dict:
    """What every output writes about how its scores were measured: flat, so a W&B summary and a table take it."""
    dataset = reference.key["dataset"]
    return {"name": protocol.name, "n_samples": protocol.n_samples, "dataset": dataset,
            "reference": reference.reference, "reference_size": reference.size,
            "reference_is": describe_reference(dataset, reference.reference),
            "floor_reference": floor.reference if floor else None, "floor_size": floor.size if floor else None,
            "extractor": scores.extractor_digest,
            "extractor_resize": getattr(scores.extractor, "resize", None) or "none (it takes the data's size)",
            "data_resize": reference.key["resize"] or "none (images at their stored size)",
            "preprocessing": PREPROCESSING,
            **({"kid_subsets": f"{scores.kid_subsets} of {scores.kid_subset_size} (torch-fidelity's RandomState(2020))"}
               if "kid" in scores.metrics else {}),
            **({"prc_real": f"the first {protocol.n_samples:,} reference images, k = 3 (StyleGAN2-ADA's pr50k3 rule)"}
               if "prc" in scores.metrics else {})}


def one_line(info: dict) -> str:
    """``describe``'s dict as one line for logs and tables."""
    floor = (f"; floor against {info['floor_reference']} ({info['floor_size']:,} images)"
             if info["floor_reference"] else "; no floor")
    return (f"protocol {info['name']}: {info['n_samples']:,} samples against {info['dataset']} "
            f"{info['reference']} ({info['reference_is']}, {info['reference_size']:,} images){floor}; extractor "
            f"{info['extractor']}, resize {info['extractor_resize']}")


# --- what a set of images is made of -----------------------------------------------------------------------

def _full_training_set(datamodule) -> Dataset:
    """The whole official training set in its file order (all the files for a folder), whatever val_fraction."""
    from gan_lightning.data.sources import load_tensors

    name = datamodule.hparams.dataset
    if name in POOLS:
        return _dataset_of(datamodule.splits["train"])
    if name == "celeba":  # the data module serves CelebA's official partitions as they are
        return datamodule.splits["train"]
    return TensorDataset(*load_tensors(name, datamodule.root, "train", False))


def _dataset_of(dataset):
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _tensors_of(dataset) -> torch.Tensor | None:
    """The images of a dataset held in memory (a TensorDataset or a Subset of one), else None."""
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        return dataset.dataset.tensors[0][dataset.indices]
    return dataset.tensors[0] if isinstance(dataset, TensorDataset) else None


def _transform_of(dataset) -> str | None:
    """The transform a lazily read dataset applies to its files, as text; None for tensors held in memory."""
    transform = getattr(_dataset_of(dataset), "transform", None)
    return repr(transform) if transform is not None else None


def _files_of(dataset) -> list[str] | None:
    """The files of a folder dataset (torchvision ImageFolder's ``samples``): all of them, since the split
    that is carved out of the folder depends on every file."""
    samples = getattr(_dataset_of(dataset), "samples", None)
    return [path for path, _ in samples] if samples else None


def _files_digest(files: list[str]) -> str:
    """SHA-256 of the files' names, sizes and modification times (not their bytes: a stat per file)."""
    root = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0])
    digest = hashlib.sha256()
    for path in sorted(files):
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


# --- scoring a folder of images --------------------------------------------------------------------------

def read_grey(path: str):
    """A file as one grey channel, PIL's ``L`` conversion (ITU-R 601-2 luma: L = R 299/1000 + G 587/1000 +
    B 114/1000), for data of one channel."""
    from gan_lightning.data.sources import read_image

    return read_image(path).convert("L")


def folder_images(folder: Path, data_shape: tuple[int, ...]) -> Dataset:
    """A folder of images (ImageFolder layout) yielding uint8 (C, S, S) images shaped like the data: resized and
    cropped as the data module reads a folder, and grey as PIL's ``L`` mode makes it for data of one channel."""
    from gan_lightning.data.sources import image_dataset

    images = image_dataset("image_folder", Path(folder), "train", data_shape[-1], False)
    if data_shape[0] == 1:
        images.loader = read_grey
    return images


def real_key(datamodule, split: Reference, n_real: int | None) -> dict:
    """``real_images(...).key``: the cache key of a reference set."""
    return real_images(datamodule, split, n_real).key


def real_shard(datamodule, split: Reference, rank: int, world_size: int, batch_size: int,
               n_real: int | None = None) -> Iterator[torch.Tensor]:
    """``real_images(...).shard(...)``: a rank's batches of a reference set."""
    return real_images(datamodule, split, n_real).shard(rank, world_size, batch_size)
