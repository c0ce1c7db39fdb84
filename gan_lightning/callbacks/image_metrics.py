"""FID / IS / KID during training, on every rank, under a named protocol, against real statistics cached on disk."""
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from gan_lightning.callbacks.cadence import log_after_fit, measures_now
from gan_lightning.callbacks.preemption import signal_pending
from gan_lightning.distributed import GLOBAL_VALUE
from gan_lightning.errors import ConfigError
from gan_lightning.metrics.features import ExtractorName, build_extractor
from gan_lightning.metrics.image_scores import Dist, ImageScores, MetricName, check_cache_dir
from gan_lightning.metrics.protocols import (
    ProtocolName,
    RealImages,
    describe,
    get_protocol,
    load_statistics,
    one_line,
    protocol_images,
)
from gan_lightning.tracking import WandbLogger


class ImageMetrics(L.Callback):
    """FID, IS and KID of the (EMA) generator every ``every_n_epochs`` validations, logged as ``val/...``; also at
    the fit's last validation, at every ``validate`` whatever the checkpoint's epoch, and once more at the end of
    fit when the last validation did not measure the final weights (a run always ends with its scores).

    The scores are named after their feature extractor: ``val/fid_inception`` (Inception-v3, the
    papers' FID) or ``val/fd_fashion_classifier`` (the project's offline Fashion-MNIST classifier,
    never called FID). With ``report_floor``, the real-vs-real reference is logged once as
    ``val/..._floor`` (the protocol's reference against its floor set) and that set's IS as ``..._real``.
    The protocol (samples, reference set and size, extractor and its weights' digest, resize) goes into every
    logger once, at start-up: ``eval_protocol`` in the CSV log's ``hparams.yaml``, ``eval_protocol/*`` in the W&B
    run's summary.

    Args:
        feature_extractor: ``inception`` (needs its weights: downloaded, cached or ``inception_weights``),
            ``fashion_classifier`` (ships with the package; 28x28 grey images), or torch-fidelity's DINOv2 /
            CLIP (``dinov2_vit_l_14``, ``clip_vit_b_32``, ...: weights in torch.hub's cache or
            ``extractor_weights``, never downloaded, checked by full SHA-256; features only, so no ``is``; see
            ``metrics/dinov2_clip.py``).
        metrics: any of ``fid``, ``is``, ``kid``, ``prc`` (precision and recall, logged as ``val/precision_...``
            and ``val/recall_...``).
        protocol: which real images the scores compare against and how many samples (see
            ``gan_lightning/metrics/protocols.py``): ``trainsplit10k`` (10,000 samples against the data module's
            training split, the images the model learns from: cheap enough for every few epochs), ``train50k``
            (50,000 against the full official training set, as BigGAN and StudioGAN report), ``test10k``
            (10,000 against the official test set) or ``val10k`` (10,000 against the held-out validation split).
        n_samples: generated images per evaluation instead of the protocol's; the protocol is then reported as,
            e.g., ``trainsplit10k[n_samples=2000]``.
        n_real: use only the reference's first ``n_real`` images (reported likewise).
        report_floor: log the floor (computed, or read from the cache, at the first evaluation).
        every_n_epochs: evaluate at every n-th validation.
        batch_size: images per generator / extractor batch.
        cache_dir: where real statistics are cached (default ``{data_dir}/.stats``).
        inception_weights: a local ``weights-inception-2015-12-05-6726825d.pth`` (checked by SHA-256).
        download_weights: allow downloading the Inception weights when they are not cached.
        extractor_weights: the feature extractor's weights file instead of the one in torch.hub's cache
            (DINOv2's ``dinov2_vitl14_pretrain.pth``, CLIP's ``ViT-B-32.pt``, ...; for Inception the same as
            ``inception_weights``). Its weights' digest is part of the protocol every output names.
        extractor_sha256: the full SHA-256 the weights file must have (``sha256sum FILE``): DINOv2 needs one
            (Meta publishes none), here or in ``GAN_LIGHTNING_SHA256_DINOV2_VIT_L_14`` (etc.); for Inception it
            adds to the published prefix; CLIP's is pinned by OpenAI's URL.
        kid_subsets, kid_subset_size: KID's estimator (100 subsets of 1,000, as torch-fidelity).
        is_splits: splits of the Inception score (10, as in the papers).
        seed: seed of the generated samples' noise (the same z at every evaluation).
    """

    def __init__(self, feature_extractor: ExtractorName = "inception",
                 metrics: list[MetricName] = ["fid", "is", "kid"],  # noqa: B006 -- copied, never mutated; --help shows it
                 protocol: ProtocolName = "trainsplit10k", n_samples: int | None = None,
                 n_real: int | None = None, report_floor: bool = True, every_n_epochs: int = 1,
                 batch_size: int = 500, cache_dir: str | None = None, inception_weights: str | None = None,
                 download_weights: bool = True, extractor_weights: str | None = None,
                 extractor_sha256: str | None = None, kid_subsets: int = 100, kid_subset_size: int = 1000,
                 is_splits: int = 10, seed: int = 0):
        if every_n_epochs < 1 or batch_size < 1:
            raise ValueError(f"ImageMetrics needs every_n_epochs >= 1 and batch_size >= 1; got {every_n_epochs}, "
                             f"{batch_size}")
        self.protocol = get_protocol(protocol, n_samples, n_real)
        self.feature_extractor, self.metrics, self.report_floor = feature_extractor, list(metrics), report_floor
        self.every_n_epochs, self.batch_size, self.cache_dir, self.seed = every_n_epochs, batch_size, cache_dir, seed
        self.inception_weights, self.download_weights = inception_weights, download_weights
        self.extractor_weights, self.extractor_sha256 = extractor_weights, extractor_sha256
        self.kid = (kid_subsets, kid_subset_size)
        self.is_splits = is_splits
        self.scores: ImageScores | None = None
        self.last: dict[str, float] = {}
        self.last_iteration: int | None = None  # the iteration ``last`` was measured at
        self._floor: dict[str, float] | None = None
        self._reference: RealImages | None = None
        self._floor_images: RealImages | None = None
        self.protocol_info: dict = {}  # protocols.describe(): what every output says about the measurement

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
            extractor = build_extractor(self.feature_extractor, self.inception_weights, self.download_weights,
                                        self.extractor_weights, self.extractor_sha256)
            strategy = trainer.strategy
            dist = Dist(trainer.global_rank, trainer.world_size, lambda obj: strategy.broadcast(obj),
                        lambda: strategy.barrier())
            self.scores = ImageScores(extractor, self.feature_extractor, self.metrics, *self.kid, self.is_splits, dist)
        if dm is not None and stage in ("fit", "validate"):  # the stages that measure
            self._prepare(dm)
            self._check_cache(dm)
            rank_zero_info(f"ImageMetrics: {one_line(self.protocol_info)}")
            self._log_protocol(trainer)
            if stage == "fit" and len(dm.splits.get("val", ())) == 0:
                rank_zero_warn("ImageMetrics measures at the end of validation, and data.val_fraction=0 leaves no "
                               "validation batches, so Lightning skips validation: the scores are measured once, "
                               "at the end of fit. Set data.val_fraction > 0 for scores along training, or score "
                               "checkpoints with `python -m gan_lightning evaluate`")

    def _prepare(self, datamodule) -> None:
        """The protocol's real images (a data set that lacks them stops the run here, naming the fix) and its
        description."""
        self._reference, self._floor_images = protocol_images(datamodule, self.protocol, self.report_floor)
        self.protocol_info = describe(self.protocol, self._reference, self._floor_images, self.scores)

    def _log_protocol(self, trainer: L.Trainer) -> None:
        """The protocol into every logger: W&B's run summary, the others' hyperparameters (the CSV log's
        ``hparams.yaml``, beside ``metrics.csv``, which holds numbers only)."""
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_summary({f"eval_protocol/{k}": v for k, v in self.protocol_info.items()})
            else:
                logger.log_hyperparams({"eval_protocol": self.protocol_info})

    def _check_cache(self, datamodule) -> None:
        """At start-up, not at the first validation: the cache folder holds the statistics this run needs, or
        can receive them. Rank 0 looks (it is the one that writes) and every rank raises the same error."""
        cache_dir = self._cache_dir(datamodule)
        needed = [images for images in (self._reference, self._floor_images) if images is not None]
        error = None
        if self.scores.dist.rank == 0:
            try:
                check_cache_dir(cache_dir, [self.scores.cache_path(images.key, cache_dir) for images in needed])
            except ConfigError as err:
                error = str(err)
        error = self.scores.dist.broadcast(error)
        if error:
            raise ConfigError(error)

    def _cache_dir(self, datamodule) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else Path(datamodule.hparams.data_dir) / ".stats"

    def _real(self, datamodule, images: RealImages, hold: bool = True):
        """A set's real statistics; held as the metrics' real half unless ``hold`` is false."""
        return load_statistics(self.scores, images, self._cache_dir(datamodule), self.batch_size, hold)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The scores now; training mode, RNG states and the model's weights are as before afterwards."""
        self.scores.extractor.to(pl_module.device)
        datamodule = trainer.datamodule
        if self._reference is None:
            self._prepare(datamodule)
        if self._floor_images is not None and self._floor is None:
            other = self._real(datamodule, self._floor_images, hold=False)
            self._real(datamodule, self._reference)
            self._floor = self.scores.floor(other)
        elif self.scores.real is None:
            self._real(datamodule, self._reference)
        self.scores.add_generator(lambda n, noise: pl_module.sample(n, generator=noise), self.protocol.n_samples,
                                  self.batch_size, self.seed)
        self.last = {**self.scores.compute(), **(self._floor or {})}
        self.last_iteration = getattr(pl_module, "iteration", trainer.global_step)
        if self.scores.nonfinite:  # NaN scores, not the finite score of black images; the run and its checkpoints go on
            iteration = getattr(pl_module, "iteration", trainer.global_step)
            logged = ", ".join("val/" + name for name in self.scores.score_names())
            rank_zero_warn(f"ImageMetrics: {self.scores.nonfinite} of the {self.protocol.n_samples} samples of "
                           f"{type(pl_module).__name__} at iteration {iteration} hold NaN or Inf (its generator "
                           f"has diverged): {logged} are logged as NaN, which ModelCheckpoint never counts as a "
                           "best score and EarlyStopping (check_finite) stops on")
        return self.last

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not measures_now(trainer, self.every_n_epochs):
            return
        if signal_pending(trainer):  # the run saves and stops at the next iteration: 10,000 samples would delay it
            rank_zero_info("ImageMetrics: skipped, a preemption signal is pending")
            return
        scores = self.evaluate(trainer, pl_module)
        pl_module.log_dict({f"val/{k}": v for k, v in scores.items()}, **GLOBAL_VALUE)  # every rank has the scores
        rank_zero_info("  ".join(f"{k} {v:.4g}" for k, v in scores.items() if not k.endswith("_std")))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The final weights' scores, when the last validation did not measure them (a stop by ``max_time`` or
        ``max_steps`` inside an epoch, or no validation at all)."""
        if self.last_iteration == getattr(pl_module, "iteration", trainer.global_step) or signal_pending(trainer):
            return
        if self.scores is None or trainer.datamodule is None or not hasattr(trainer.datamodule, "splits"):
            return
        scores = self.evaluate(trainer, pl_module)
        log_after_fit(trainer, pl_module, {f"val/{k}": v for k, v in scores.items()})
        rank_zero_info("ImageMetrics at the end of fit: " + "  ".join(
            f"{k} {v:.4g}" for k, v in scores.items() if not k.endswith("_std")))
