"""FID / IS / KID of a generator against cached real statistics, on one process or many.

The metric classes are torchmetrics' (their states are summed or gathered across DDP ranks at
``compute()``). One extractor pass per batch feeds all three: the metrics receive precomputed
features through a pass-through module instead of running the extractor once each.

Real statistics are computed once per (dataset, split, preprocessing, extractor, count, library versions;
an image folder's file list, sizes and mtimes), each rank over its shard, gathered, written atomically by
rank 0 (with the umask's permissions, so a shared cache folder serves every user) and read back by every
later run and rank.
Fake samples come in batches whose noise is seeded by the batch's index, and rank r generates the
r-th contiguous run of batches: gathered in rank order, the samples are the same, in the same order,
on any number of ranks (which keeps even KID's and IS's random subsets identical).
"""
import hashlib
import importlib.metadata
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torchmetrics.aggregation import SumMetric
from torchmetrics.image import FrechetInceptionDistance, InceptionScore, KernelInceptionDistance
from torchmetrics.image.fid import _compute_fid
from torchmetrics.utilities import dim_zero_cat

from gan_lightning.errors import ConfigError
from gan_lightning.metrics.features import SCORE_NAMES, ExtractorName, extractor_fingerprint
from gan_lightning.metrics.precision_recall import PrecisionRecall

MetricName = Literal["fid", "is", "kid", "prc"]  # prc: precision and recall
# keeping features is what KID and IS need; the memory is reported in the docs, not at every construction
warnings.filterwarnings("ignore", message=r"Metric `(InceptionScore|Kernel Inception Distance)` will save all")
CACHE_FORMAT = 2  # bump when what a cache file holds changes (2: the real IS as torch-fidelity computes it)


class NonFiniteSamplesError(FloatingPointError, ValueError):
    """Generated samples hold NaN or Inf: the generator has diverged and its scores would be meaningless.

    A ``FloatingPointError`` like the training's own non-finite checks, and a ``ValueError`` so that every
    command reports it in one line."""


class NoBar:
    """What a progress-bar factory gives when no one watches: tqdm's interface (``tqdm(total=, desc=, unit=)`` as a
    context manager with ``update`` and ``set_postfix_str``), doing nothing. The training callbacks use it; the
    ``evaluate`` command passes tqdm, writing to stderr."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self) -> "NoBar":
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass


Bar = Callable[..., Any]  # tqdm, a functools.partial of it, or NoBar


class PassThrough(nn.Module):
    """Hands precomputed features to a torchmetrics metric, which calls its 'inception' on its input."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def inception_score(logits: torch.Tensor, splits: int, seed: int = 2020) -> tuple[float, float]:
    """Salimans et al. 2016: exp(E_x KL(p(y|x) || p(y))) over each of ``splits`` parts; their mean and spread.

    torch-fidelity's ``isc_features_to_metric`` step for step: rows shuffled by numpy's RandomState(``seed``) (a
    generator of its own: the score does not depend on what else drew random numbers), float64, part i the rows
    [i N / splits, (i + 1) N / splits), and the spread over the parts divided by their number, as torch-fidelity
    and the OpenAI code compute it (torchmetrics divides by one less)."""
    n = len(logits)  # (N, classes)
    logits = logits[torch.from_numpy(np.random.RandomState(seed).permutation(n)).to(logits.device)].double()
    p, log_p = logits.softmax(1), logits.log_softmax(1)
    scores = []
    for i in range(splits):
        part, log_part = p[i * n // splits:(i + 1) * n // splits], log_p[i * n // splits:(i + 1) * n // splits]
        kl = part * (log_part - part.mean(0, keepdim=True).log())  # p(y|x) (log p(y|x) - log p(y))
        scores.append(kl.sum(1).mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


class FidelityInceptionScore(InceptionScore):
    """torchmetrics' Inception-score states, gathered across ranks by its sync; the score by ``inception_score``."""

    def compute(self) -> tuple[float, float]:
        return inception_score(dim_zero_cat(self.features), self.splits)


@dataclass
class Dist:
    """How a computation talks to its peers; the single-process default does nothing."""

    rank: int = 0
    world_size: int = 1
    broadcast: Callable[[Any], Any] = lambda obj: obj
    barrier: Callable[[], None] = lambda: None


def chunk(items, rank: int, world_size: int):
    """The rank-th of world_size contiguous, near-equal parts: concatenated in rank order, they are ``items``."""
    n = len(items)
    return items[n * rank // world_size: n * (rank + 1) // world_size]


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps({**parts, "format": CACHE_FORMAT}, sort_keys=True).encode()).hexdigest()[:20]


def library_versions() -> dict[str, str]:
    """The versions of the libraries whose code computes the statistics (part of every cache key)."""
    return {name: importlib.metadata.version(name) for name in ("torch", "torchmetrics", "torch-fidelity")}


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask alone must set one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_cache_dir(cache_dir: Path, needed: Sequence[Path] = ()) -> None:
    """Raises ``ConfigError`` naming the folder and the fix when real statistics can be neither read from
    ``cache_dir`` (all of ``needed`` there: a read-only shared cache is fine) nor written to it."""
    if needed and all(p.is_file() for p in needed):
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as err:
        raise ConfigError(f"cannot write real statistics to the cache folder {cache_dir} "
                          f"({err.strerror or type(err).__name__}): make it writable for this user, or set the "
                          "ImageMetrics callback's cache_dir (evaluate: --cache_dir) to a folder you can "
                          "write") from None


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: readers never see half a file.

    The file gets the permissions of any new file (0666 less the umask), not mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class RealStatistics:
    """What the scores need from the real data: FID's sums, KID's features, and the real images' IS."""

    features_sum: torch.Tensor       # float64 (F,)
    features_cov_sum: torch.Tensor   # float64 (F, F)
    n: int
    features: torch.Tensor           # float32 (N, F), for KID
    inception_score: tuple[float, float] = (float("nan"), float("nan"))
    meta: dict = field(default_factory=dict)

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.features_sum / self.n
        cov = (self.features_cov_sum - self.n * torch.outer(mean, mean)) / (self.n - 1)
        return mean, cov

    def frechet_distance(self, other: "RealStatistics") -> float:
        return float(_compute_fid(*self.mean_cov(), *other.mean_cov()))


class CacheFileError(ValueError):
    """A cached real-statistics file that is not what this code writes; the one-line message names it and the fix."""


def _canonical(value: object) -> str:
    """A value as JSON, tuples as lists: how a description compares once saved and read back."""
    return json.dumps(value, sort_keys=True, default=repr)


def read_cached(path: Path, num_features: int, parts: dict | None = None) -> RealStatistics:
    """A cache file's statistics, checked: written by anyone who can write the cache folder, so trusted for nothing
    but tensors (the weights-only loader, entries no larger than the file) of the shapes this extractor gives,
    finite, with counts that agree and a description (``meta``) equal to the ``parts`` its name was made from."""
    from gan_lightning.checkpoints import CheckpointError, inflation_bounded

    def bad(what: str) -> CacheFileError:
        return CacheFileError(f"cached real statistics {path} {what}: it was not written by this code or is damaged; "
                              "delete it and it is computed again")

    try:
        if not path.is_file():
            raise OSError("not a regular file")
        inflation_bounded(path, "cached real statistics")
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError as err:  # its entries inflate past the file, or it is no zip archive at all
        raise bad("is a zip archive whose entries inflate past its own size" if "inflate" in str(err)
                  else "cannot be read (not a whole zip archive)") from None
    except Exception as err:  # truncated, not a torch file, a forbidden global
        raise bad(f"cannot be read ({str(err).splitlines()[0] if str(err).strip() else type(err).__name__})") from None
    tensors = ("features_sum", "features_cov_sum", "features")
    if not isinstance(saved, dict) or not all(isinstance(saved.get(k), torch.Tensor) for k in tensors):
        raise bad("does not hold the tensors features_sum, features_cov_sum and features")
    n, score, meta = saved.get("n"), saved.get("inception_score"), saved.get("meta")
    f = num_features
    if (saved["features_sum"].shape != (f,) or saved["features_cov_sum"].shape != (f, f)
            or saved["features"].dim() != 2 or saved["features"].shape[1] != f):
        raise bad(f"holds tensors of other shapes than this extractor's {f} features")
    if not isinstance(n, int) or isinstance(n, bool) or n != len(saved["features"]) or n < 2:
        raise bad(f"counts {n!r} images but holds {len(saved['features'])} images' features")
    if not (isinstance(score, (list, tuple)) and len(score) == 2 and all(isinstance(v, float) for v in score)
            and isinstance(meta, dict)):
        raise bad("lacks the real images' Inception score or its description")
    if parts is not None and _canonical(meta) != _canonical(parts):
        differ = sorted(k for k in {*meta, *parts} if _canonical(meta.get(k)) != _canonical(parts.get(k)))
        raise bad(f"describes other statistics than its name stands for ({', '.join(map(str, differ[:4]))} differ)")
    if not all(bool(saved[k].isfinite().all()) for k in tensors):
        raise bad("holds NaN or Inf")
    return RealStatistics(saved["features_sum"].double(), saved["features_cov_sum"].double(), n,
                          saved["features"].float(), tuple(score), meta)


def kid_as_torch_fidelity(kid: KernelInceptionDistance, subsets: int, subset_size: int) -> tuple[float, float]:
    """KID's mean and standard deviation over ``subsets`` random subsets, drawn as torch-fidelity draws them:
    ``RandomState(2020).choice`` over the generated features, then over the real ones, for each subset (its
    ``kid_features_to_metric``, whose ``input1`` is the generator). The features are every rank's, gathered."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    with kid.sync_context():
        real, fake = dim_zero_cat(kid.real_features), dim_zero_cat(kid.fake_features)
    result = kid_features_to_metric(fake.double(), real.double(), kid_subsets=subsets, kid_subset_size=subset_size,
                                    verbose=False)  # torch-fidelity's defaults: cubic kernel, rng_seed 2020
    return result["kernel_inception_distance_mean"], result["kernel_inception_distance_std"]


class ImageScores:
    """FID, IS, KID and precision/recall (any subset) with one feature extractor, on ``dist.world_size`` processes.

    Args:
        extractor: maps uint8 images to ``(features, logits)``, e.g. ``features.build_extractor(...)``.
        extractor_name: one of ``features.SCORE_NAMES``: ``inception``, ``fashion_classifier``, or a DINOv2 /
            CLIP model (``dinov2_vit_l_14``, ``clip_vit_b_32``, ...: no logits, so no ``is``); it names
            every score.
        metrics: which of ``fid``, ``is``, ``kid``, ``prc`` (precision and recall, Kynkaanniemi et al. 2019, against
            the first real features, as many as generated: StyleGAN2-ADA's pr50k3 rule).
        kid_subsets, kid_subset_size: KID's subsets (torchmetrics' defaults, 100 of 1,000).
        is_splits: the Inception score's splits (10, as in the papers).
        bar: a progress-bar factory (``NoBar`` or tqdm): one bar for the generated samples and their features
            (``add_generator``), one for precision and recall (``compute``).
    """

    def __init__(self, extractor: nn.Module, extractor_name: ExtractorName,
                 metrics: Sequence[MetricName] = ("fid", "is", "kid"), kid_subsets: int = 100,
                 kid_subset_size: int = 1000, is_splits: int = 10, dist: Dist | None = None, bar: Bar = NoBar):
        unknown = set(metrics) - {"fid", "is", "kid", "prc"}
        if unknown or not metrics:
            raise ValueError(f"metrics must be a non-empty subset of fid, is, kid, prc; got {list(metrics)}")
        if "is" in metrics and "is" not in SCORE_NAMES[extractor_name]:
            raise ValueError(f"the Inception score needs class logits, which {extractor_name} does not give: drop is "
                             "from metrics")
        self.extractor, self.extractor_name, self.metrics = extractor, extractor_name, tuple(metrics)
        self.kid_subsets, self.kid_subset_size, self.is_splits = kid_subsets, kid_subset_size, is_splits
        self.dist = dist or Dist()
        self.bar = bar
        self.num_logits = _num_logits(extractor)
        if self.dist.world_size > 1 and self.num_logits is None:
            raise ValueError(f"{type(extractor).__name__} declares no num_logits (nor has a Linear `head`): a rank "
                             "that draws no batch needs it to join the ranks' sync with an empty state of the right "
                             "shape")
        self.names = SCORE_NAMES[extractor_name]
        self.real: RealStatistics | None = None
        self.cache_hit: bool | None = None
        self._metrics: dict[str, Any] = {}
        self._fingerprint: str | None = None
        self._n_fake: int | None = None  # over all ranks, when add_generator knows it
        self._n_added = 0                   # added on this rank
        self._nonfinite: SumMetric | None = None  # generated samples holding NaN or Inf, summed over ranks
        self.nonfinite = 0  # such samples in the last compute(), over all ranks; its scores are then NaN

    @property
    def device(self) -> torch.device:
        return next(self.extractor.parameters()).device

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, logits = self.extractor(images.to(self.device))
        return features.float(), logits.float()

    # --- real statistics ---------------------------------------------------------------------

    def _compute_real(self, shard: Iterable[torch.Tensor]) -> RealStatistics:
        """Each rank's shard through the extractor, gathered across ranks by the metrics' own sync."""
        dim = self.extractor.num_features
        fid = FrechetInceptionDistance(PassThrough(dim), reset_real_features=False).to(self.device)
        kid = KernelInceptionDistance(PassThrough(dim), subsets=1, subset_size=1).to(self.device)
        isc = FidelityInceptionScore(PassThrough(1), splits=self.is_splits).to(self.device)
        n = 0
        for images in shard:
            features, logits = self.features(images)
            fid.update(features, real=True)
            kid.update(features, real=True)
            isc.update(logits)
            n += len(images)
        if n == 0 and self.dist.world_size > 1:  # fewer batches than ranks: this rank joins the sync with empty
            # states of the others' shapes
            features, logits = self._nothing()
            fid.update(features, real=True)
            kid.update(features, real=True)
            isc.update(logits)
        for m in (fid, kid, isc):
            _one_tensor_per_list(m)
            m.sync(should_sync=self.dist.world_size > 1)
        features = kid.real_features if isinstance(kid.real_features, torch.Tensor) else torch.cat(kid.real_features)
        is_mean = is_std = float("nan")  # no logits (DINOv2, CLIP), no Inception score
        if self.num_logits != 0:
            is_mean, is_std = _compute_synced(isc)
        return RealStatistics(fid.real_features_sum.cpu(), fid.real_features_cov_sum.cpu(),
                              int(fid.real_features_num_samples), features.cpu(), (float(is_mean), float(is_std)))

    def load_real(self, shard_fn: Callable[[], Iterable[torch.Tensor]], key_parts: dict,
                  cache_dir: Path | None) -> RealStatistics:
        """``real_statistics(...)``, then held as the real half of the metrics (``set_real``)."""
        stats = self.real_statistics(shard_fn, key_parts, cache_dir)
        self.set_real(stats)
        return stats

    def real_statistics(self, shard_fn: Callable[[], Iterable[torch.Tensor]], key_parts: dict,
                        cache_dir: Path | None) -> RealStatistics:
        """Real statistics from ``cache_dir`` when a file for ``key_parts`` is there, else computed and cached.

        ``shard_fn()`` yields this rank's share of the real uint8 images (only called on a cache miss).
        """
        parts = self.key_parts(key_parts)
        path = self.cache_path(key_parts, cache_dir)
        self.dist.barrier()  # nobody is writing the file while the ranks look for it
        hit = bool(self.dist.broadcast(path is not None and path.is_file()))
        if hit:
            stats = read_cached(path, self.extractor.num_features, parts)
        else:
            stats = self._compute_real(shard_fn())
            stats.meta = parts
            if path is not None and self.dist.rank == 0:
                atomic_save({"features_sum": stats.features_sum, "features_cov_sum": stats.features_cov_sum,
                             "n": stats.n, "features": stats.features, "inception_score": list(stats.inception_score),
                             "meta": parts}, path)
            self.dist.barrier()
        self.cache_hit = hit
        return stats

    @property
    def extractor_digest(self) -> str:
        """The extractor's name and its weights' SHA-256 prefix, e.g. ``fashion_classifier:41840ceb...``."""
        if self._fingerprint is None:  # hashing Inception's weights takes a while: once per extractor
            self._fingerprint = extractor_fingerprint(self.extractor_name, self.extractor)
        return self._fingerprint

    def key_parts(self, key_parts: dict) -> dict:
        """What real statistics depend on: the data's ``key_parts``, the extractor (weights and resize) and
        the libraries' versions."""
        return {**key_parts, "extractor": self.extractor_digest,
                "extractor_resize": getattr(self.extractor, "resize", None), **library_versions()}

    def cache_path(self, key_parts: dict, cache_dir: Path | None) -> Path | None:
        """The file that holds (or will hold) the real statistics for ``key_parts`` in ``cache_dir``."""
        if cache_dir is None:
            return None
        return Path(cache_dir) / (f"real_{key_parts.get('dataset', 'data')}_{self.extractor_name}_"
                                  f"{cache_key(self.key_parts(key_parts))}.pt")

    def set_real(self, stats: RealStatistics) -> None:
        """Fresh metrics holding ``stats`` as their real half, split so the ranks' sync adds up to it once."""
        self.real, rank, world = stats, self.dist.rank, self.dist.world_size
        dim, device = stats.features.shape[1], self.device
        self._metrics = {}
        if "fid" in self.metrics:
            fid = FrechetInceptionDistance(PassThrough(dim), reset_real_features=False).to(device)
            if rank == 0:  # the sums are all-reduced: the others hold zeros
                fid.real_features_sum = stats.features_sum.to(device)
                fid.real_features_cov_sum = stats.features_cov_sum.to(device)
                fid.real_features_num_samples = torch.tensor(stats.n, device=device)
            self._metrics["fid"] = fid
        if "kid" in self.metrics:
            kid = KernelInceptionDistance(PassThrough(dim), subsets=self.kid_subsets,
                                          subset_size=self.kid_subset_size, reset_real_features=False).to(device)
            # float64 like torch-fidelity: the cubic kernel of large features cancels badly in float32
            kid.real_features.append(chunk(stats.features, rank, world).to(device, torch.float64))
            self._metrics["kid"] = kid
        if "is" in self.metrics:
            self._metrics["is"] = FidelityInceptionScore(PassThrough(1), splits=self.is_splits).to(device)
        if "prc" in self.metrics:  # the real features split like KID's: gathered, they are all of them once
            prc = PrecisionRecall(reset_real_features=False).to(device)
            prc.update(chunk(stats.features, rank, world).to(device), real=True)
            self._metrics["prc"] = prc
        self._nonfinite = SumMetric(nan_strategy="disable").to(device)

    # --- fake samples ----------------------------------------------------------------------

    @torch.no_grad()
    def add_fake(self, images: torch.Tensor) -> None:
        """A batch of generated uint8 images (this rank's)."""
        self._n_added += len(images)
        self._update_fake(*self.features(images))

    def _update_fake(self, features: torch.Tensor, logits: torch.Tensor) -> None:
        if "fid" in self._metrics:
            self._metrics["fid"].update(features, real=False)
        if "kid" in self._metrics:
            self._metrics["kid"].update(features.double(), real=False)
        if "is" in self._metrics:
            self._metrics["is"].update(logits)
        if "prc" in self._metrics:
            self._metrics["prc"].update(features, real=False)

    @torch.no_grad()
    def add_generator(self, generate: Callable[[int, torch.Generator], torch.Tensor], n: int, batch_size: int,
                      seed: int = 0) -> None:
        """Generates this rank's batches of the ``n`` samples: ``generate(count, noise)`` -> images in [-1, 1].

        Samples holding NaN or Inf (a diverged generator) are counted, on the device, with no host sync; they
        would otherwise become black images with a finite score. ``compute()`` then gives NaN scores."""
        from gan_lightning.data import to_uint8  # here: the module imports no Lightning (evaluate --help)

        if self._nonfinite is None:
            raise RuntimeError("load_real() or set_real() first")
        self._n_fake = n
        batches = chunk(range(math.ceil(n / batch_size)), self.dist.rank, self.dist.world_size)
        mine = sum(min(batch_size, n - b * batch_size) for b in batches)
        with self.bar(total=mine, desc=f"generating {n:,} samples and their {self.extractor_name} features",
                      unit="samples") as bar:
            for b in batches:
                noise = torch.Generator(self.device).manual_seed(seed * 1_000_003 + b)
                images = generate(min(batch_size, n - b * batch_size), noise)
                self._nonfinite.update(images.flatten(1).isfinite().all(1).logical_not().sum())
                self.add_fake(to_uint8(images))
                bar.update(len(images))

    def compute(self) -> dict[str, float]:
        """The scores over every rank's samples (a collective: every rank must call it), then a reset.

        When any rank generated a sample with NaN or Inf, every score is NaN on every rank and ``nonfinite``
        says how many samples were; callers decide whether that is an error (``evaluate``) or a logged NaN."""
        if self.real is None:
            raise RuntimeError("load_real() or set_real() first")
        self._nonfinite.update(torch.zeros((), device=self.device))  # updated at least once: no "compute before update"
        self.nonfinite = int(self._nonfinite.compute())  # summed over the ranks: all of them take the same branch
        self._nonfinite.reset()
        if self.nonfinite:
            for m in self._metrics.values():
                m.reset()
            self._n_fake, self._n_added = None, 0
            return {name: float("nan") for name in self.score_names()}
        out = {}
        if self._n_added == 0 and self.dist.world_size > 1:  # fewer generated batches than ranks: this rank
            # still joins every sync below, with no features
            self._update_fake(*self._nothing())
        for m in self._metrics.values():
            _one_tensor_per_list(m)
        with _rng_kept(self.device):
            if "fid" in self._metrics:
                out[self.names["fid"]] = float(self._metrics["fid"].compute())
            if "kid" in self._metrics:
                kid = self._metrics["kid"]
                size = min(self.kid_subset_size, self.real.n, self._n_fake or self._n_added)
                with self.bar(total=1, desc=f"kid: {self.kid_subsets} subsets of {size:,} samples",
                              unit="metric") as bar:  # float64 kernels: seconds to minutes, whatever the count
                    mean, std = kid_as_torch_fidelity(kid, self.kid_subsets, size)
                    bar.update()
                out[self.names["kid"]], out[self.names["kid"] + "_std"] = mean, std
            if "is" in self._metrics:
                mean, std = self._metrics["is"].compute()
                out[self.names["is"]], out[self.names["is"] + "_std"] = float(mean), float(std)
            if "prc" in self._metrics:  # k-NN radii of both sets: quadratic in the number of samples
                n = self._n_fake or self._n_added
                with self.bar(total=1, desc=f"precision/recall ({n:,} generated vs as many real features)",
                              unit="metric") as bar:
                    out[self.names["precision"]], out[self.names["recall"]] = self._metrics["prc"].compute()
                    bar.update()
        for m in self._metrics.values():
            m.reset()
        self._n_fake, self._n_added = None, 0
        return out

    def score_names(self) -> list[str]:
        """The keys ``compute()`` returns, in its order."""
        keys = {"fid": [("fid", "")], "kid": [("kid", ""), ("kid", "_std")], "is": [("is", ""), ("is", "_std")],
                "prc": [("precision", ""), ("recall", "")]}
        return [self.names[key] + suffix for metric in ("fid", "kid", "is", "prc") if metric in self.metrics
                for key, suffix in keys[metric]]

    def _nothing(self) -> tuple[torch.Tensor, torch.Tensor]:
        """No images' features and logits, shaped and typed like ``features()``'s: what a rank without a batch
        feeds the metrics, so that its states gather with the other ranks' (torchmetrics' own placeholder for an
        empty list state is 1-D, which the gather of 2-D states refuses or waits on forever)."""
        if self.num_logits is None:
            raise ValueError(f"{type(self.extractor).__name__} declares no num_logits")
        return (torch.zeros(0, self.extractor.num_features, device=self.device),
                torch.zeros(0, self.num_logits, device=self.device))

    def floor(self, other: RealStatistics) -> dict[str, float]:
        """The real-vs-real reference: Frechet distance between two real sets, and the real set's IS (if any)."""
        floor = {self.names["fid"] + "_floor": self.real.frechet_distance(other)}
        if "is" in self.names:
            floor[self.names["is"] + "_real"] = float(other.inception_score[0])
        return floor


def _num_logits(extractor: nn.Module) -> int | None:
    """The extractor's logits per image: its ``num_logits``, else its Linear ``head``'s width, else None."""
    if getattr(extractor, "num_logits", None) is not None:
        return int(extractor.num_logits)
    head = getattr(extractor, "head", None)
    return head.out_features if isinstance(head, nn.Linear) else None


def _one_tensor_per_list(metric) -> None:
    """Concatenates each list state into one tensor: the sync gathers list states element by element, so
    several batches per rank would come back interleaved across ranks instead of in rank order."""
    for name in metric._defaults:
        value = getattr(metric, name)
        if isinstance(value, list) and len(value) > 1:
            setattr(metric, name, [torch.cat(value)])


def _rng_kept(device: torch.device):
    """The global RNG as it was after the block: KID and IS draw from it, training must not notice."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _compute_synced(metric) -> Any:
    """``metric.compute()`` on states already synced by hand (compute() would try to sync them again)."""
    metric._to_sync = False
    try:
        return metric.compute()
    finally:
        metric._to_sync = True
