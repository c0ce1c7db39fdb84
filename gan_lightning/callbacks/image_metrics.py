"""FID / IS / KID during training, on every rank, against real statistics cached on disk."""
import hashlib
import os
from pathlib import Path
from typing import Iterator, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Subset

from gan_lightning.callbacks.preemption import signal_pending
from gan_lightning.errors import ConfigError
from gan_lightning.metrics.features import ExtractorName, build_extractor
from gan_lightning.metrics.image_scores import Dist, ImageScores, MetricName, check_cache_dir, chunk

Split = Literal["train", "val", "test"]


def real_shard(datamodule, split: Split, rank: int, world_size: int, batch_size: int,
               n_real: Optional[int] = None) -> Iterator[torch.Tensor]:
    """Rank ``rank``'s contiguous run of the batches of a split's first ``n_real`` uint8 images.

    The batches are cut before they are shared out, so each image meets the extractor in the same batch
    on any number of ranks (float results can depend on the batch).
    """
    if not datamodule.splits:
        datamodule.setup("fit")
    tensors = datamodule._tensors(split)
    if tensors is not None:
        yield from chunk(tensors[0][:n_real].split(batch_size), rank, world_size)
        return
    dataset = datamodule.splits[split]
    batches = list(range(min(len(dataset), n_real or len(dataset))))
    batches = [batches[i:i + batch_size] for i in range(0, len(batches), batch_size)]
    for indices in chunk(batches, rank, world_size):
        yield torch.stack([dataset[i][0] for i in indices])


def real_key(datamodule, split: Split, n_real: Optional[int]) -> dict:
    """What a split's real statistics depend on (the extractor and library versions are added by ImageScores):
    the data settings, the transform that resizes files (its repr: size, interpolation, antialias, crop) and,
    for a folder of files, their names, sizes and modification times (files added or changed later miss)."""
    if not datamodule.splits:
        datamodule.setup("fit")
    hp = datamodule.hparams
    files = _files_of(datamodule.splits[split])
    return {"dataset": hp.dataset, "split": split, "n_real": n_real, "image_size": hp.image_size,
            "val_fraction": hp.val_fraction, "seed": hp.seed,
            "data_dir": str(Path(hp.data_dir).expanduser().resolve()) if hp.dataset == "image_folder" else None,
            "resize": _transform_of(datamodule.splits[split]), "files": _files_digest(files) if files else None,
            "preprocessing": "uint8 [0, 255]; generated images: round((x + 1) * 127.5)"}


def _dataset_of(dataset):
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _transform_of(dataset) -> Optional[str]:
    """The transform a lazily read dataset applies to its files, as text; None for tensors held in memory."""
    transform = getattr(_dataset_of(dataset), "transform", None)
    return repr(transform) if transform is not None else None


def _files_of(dataset) -> Optional[list[str]]:
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


class ImageMetrics(L.Callback):
    """FID, IS and KID of the (EMA) generator every ``every_n_epochs`` validations, logged as ``val/...``.

    The scores are named after their feature extractor: ``val/fid_inception`` (Inception-v3, the
    papers' FID) or ``val/fd_fashion_classifier`` (the project's offline Fashion-MNIST classifier,
    never called FID). With ``report_floor``, the real-vs-real reference is logged once as
    ``val/..._floor`` (the real split against ``floor_split``) and the real images' IS as ``..._real``.

    Args:
        feature_extractor: ``inception`` (needs its weights: downloaded, cached or ``inception_weights``)
            or ``fashion_classifier`` (ships with the package; 28x28 grey images).
        metrics: any of ``fid``, ``is``, ``kid``.
        n_samples: generated images per evaluation, over all ranks (10,000; papers report 50,000).
        real_split: the real images the statistics come from (``train``, ``val`` or ``test``).
        n_real: use only the split's first ``n_real`` images (default: all).
        floor_split: the second real split for the real-vs-real floor.
        report_floor: log the floor (computed, or read from the cache, at the first evaluation).
        every_n_epochs: evaluate at every n-th validation.
        batch_size: images per generator / extractor batch.
        cache_dir: where real statistics are cached (default ``{data_dir}/.stats``).
        inception_weights: a local ``weights-inception-2015-12-05-6726825d.pth`` (checked by SHA-256).
        download_weights: allow downloading the Inception weights when they are not cached.
        kid_subsets, kid_subset_size: KID's estimator (100 subsets of 1,000, as torch-fidelity).
        is_splits: splits of the Inception score (10, as in the papers).
        seed: seed of the generated samples' noise (the same z at every evaluation).
    """

    def __init__(self, feature_extractor: ExtractorName = "inception", metrics: list[MetricName] = ["fid", "is", "kid"],
                 n_samples: int = 10_000, real_split: Split = "train", n_real: Optional[int] = None,
                 floor_split: Split = "test", report_floor: bool = True, every_n_epochs: int = 1,
                 batch_size: int = 500, cache_dir: Optional[str] = None, inception_weights: Optional[str] = None,
                 download_weights: bool = True, kid_subsets: int = 100, kid_subset_size: int = 1000,
                 is_splits: int = 10, seed: int = 0):
        if n_samples < 2 or every_n_epochs < 1 or batch_size < 1:
            raise ValueError(f"ImageMetrics needs n_samples >= 2, every_n_epochs >= 1 and batch_size >= 1; got "
                             f"{n_samples}, {every_n_epochs}, {batch_size}")
        self.feature_extractor, self.metrics, self.n_samples = feature_extractor, list(metrics), n_samples
        self.real_split, self.n_real, self.floor_split, self.report_floor = real_split, n_real, floor_split, report_floor
        self.every_n_epochs, self.batch_size, self.cache_dir, self.seed = every_n_epochs, batch_size, cache_dir, seed
        self.inception_weights, self.download_weights = inception_weights, download_weights
        self.kid = (kid_subsets, kid_subset_size)
        self.is_splits = is_splits
        self.scores: Optional[ImageScores] = None
        self.last: dict[str, float] = {}
        self._floor: Optional[dict[str, float]] = None

    # Runs in every stage's setup, before any training step: a missing weights file stops the run here.
    # The extractor lives here, not in the model: nothing of it goes into checkpoints.
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        shape = tuple(dm.data_shape if dm is not None else pl_module.hparams.get("data_shape", ()))
        if len(shape) != 3:
            raise ConfigError(f"ImageMetrics scores images, but the data are of shape {shape}: remove the callback "
                             "for toy data (ModeCoverage measures those)")
        if self.feature_extractor == "fashion_classifier" and shape != (1, 28, 28):
            raise ConfigError(f"feature_extractor fashion_classifier takes 28x28 grey images, got {shape}: use "
                             "feature_extractor inception for this dataset")
        if not hasattr(pl_module, "sample"):
            raise ConfigError(f"{type(pl_module).__name__} has no sample(): ImageMetrics needs a generative model")
        if self.scores is None:
            extractor = build_extractor(self.feature_extractor, self.inception_weights, self.download_weights)
            strategy = trainer.strategy
            dist = Dist(trainer.global_rank, trainer.world_size, lambda obj: strategy.broadcast(obj),
                        lambda: strategy.barrier())
            self.scores = ImageScores(extractor, self.feature_extractor, self.metrics, *self.kid, self.is_splits, dist)
        if dm is not None and stage in ("fit", "validate"):  # the stages that measure
            self._check_cache(dm)

    def _check_cache(self, datamodule) -> None:
        """At start-up, not at the first validation: the cache folder holds the statistics this run needs, or
        can receive them. Rank 0 looks (it is the one that writes) and every rank raises the same error."""
        cache_dir = self._cache_dir(datamodule)
        splits = [self.real_split] + ([self.floor_split] if self.report_floor else [])
        error = None
        if self.scores.dist.rank == 0:
            try:
                check_cache_dir(cache_dir, [self.scores.cache_path(real_key(datamodule, split, self.n_real), cache_dir)
                                            for split in splits])
            except ConfigError as err:
                error = str(err)
        error = self.scores.dist.broadcast(error)
        if error:
            raise ConfigError(error)

    def _cache_dir(self, datamodule) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else Path(datamodule.hparams.data_dir) / ".stats"

    def _real(self, datamodule, split: Split, hold: bool = True):
        """A split's real statistics; held as the metrics' real half unless ``hold`` is false."""
        dist = self.scores.dist
        load = self.scores.load_real if hold else self.scores.real_statistics
        return load(lambda: real_shard(datamodule, split, dist.rank, dist.world_size, self.batch_size, self.n_real),
                    real_key(datamodule, split, self.n_real), self._cache_dir(datamodule))

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The scores now; training mode, RNG states and the model's weights are as before afterwards."""
        self.scores.extractor.to(pl_module.device)
        datamodule = trainer.datamodule
        if self.report_floor and self._floor is None:
            other = self._real(datamodule, self.floor_split, hold=False)
            self._real(datamodule, self.real_split)
            self._floor = self.scores.floor(other)
        elif self.scores.real is None:
            self._real(datamodule, self.real_split)
        self.scores.add_generator(lambda n, noise: pl_module.sample(n, generator=noise), self.n_samples,
                                  self.batch_size, self.seed)
        self.last = {**self.scores.compute(), **(self._floor or {})}
        if self.scores.nonfinite:  # NaN scores, not the finite score of black images; the run and its checkpoints go on
            iteration = getattr(pl_module, "iteration", trainer.global_step)
            logged = ", ".join("val/" + name for name in self.scores.score_names())
            rank_zero_warn(f"ImageMetrics: {self.scores.nonfinite} of the {self.n_samples} samples of "
                           f"{type(pl_module).__name__} at iteration {iteration} hold NaN or Inf (its generator "
                           f"has diverged): {logged} are logged as NaN, which ModelCheckpoint never counts as a "
                           "best score and EarlyStopping (check_finite) stops on")
        return self.last

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if signal_pending(trainer):  # the run saves and stops at the next iteration: 10,000 samples would delay it
            rank_zero_info("ImageMetrics: skipped, a preemption signal is pending")
            return
        scores = self.evaluate(trainer, pl_module)
        pl_module.log_dict({f"val/{k}": v for k, v in scores.items()}, sync_dist=False, rank_zero_only=True)
        rank_zero_info("  ".join(f"{k} {v:.4g}" for k, v in scores.items() if not k.endswith("_std")))
