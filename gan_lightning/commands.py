"""``evaluate``, ``sample`` and ``export``: what a trained checkpoint is worth, its samples for other tools, and the
checkpoint as a model folder to share.

    python -m gan_lightning evaluate --ckpt_path runs/bigan/checkpoints/last.ckpt [--protocol train50k] \\
        [--metrics fid is kid probes] [--quiet]
    python -m gan_lightning evaluate --ckpt_path runs/toy/gan_ring/checkpoints/last.ckpt   # PacGAN's modes
    python -m gan_lightning sample --ckpt_path runs/bigan/checkpoints/last.ckpt --n 10000 --out samples.npz
    python -m gan_lightning export --ckpt_path runs/bigan/checkpoints/last.ckpt --out exported/bigan
    python -m gan_lightning evaluate --ckpt_path exported/bigan     # evaluate and sample take an exported folder

evaluate prints its plan first (each phase and about how long it takes), a progress bar per phase on stderr, then
the table; a toy mixture's checkpoint is scored by PacGAN's mode coverage. Both rebuild the model and its data
module from the checkpoint alone (its saved hyperparameters), load it with the weights-only loader, and use the EMA
weights when the run kept them. The checkpoint's class
names are looked up among gan_lightning's models, never imported: `--model_class pkg.module.Class` loads a
model class of your own.
"""
import argparse
import contextlib
import inspect
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gan_lightning.errors import first_line


def load_model(path: str, device: str = "cpu", data_dir: str | None = None, chosen_class: str | None = None,
               download: bool = False):
    """(model in eval mode on ``device``, data module) rebuilt from a checkpoint's hyperparameters; ``data_dir``:
    where the dataset is (default: the data module's own default; never the checkpoint's); ``download``: whether
    the data module may download the dataset there (``--download_data``; never the checkpoint's); ``chosen_class``: the
    user's own model class (``--model_class``) where the checkpoint names one outside ``gan_lightning.models``.

    The file is read weights-only, and what its text names is neither imported nor called: the model class is
    looked up among gan_lightning's models (``models.registry.model_class``), the data module is always
    ``GANDataModule``, and Lightning's ``_instantiator`` is ignored. Its settings are checked against the
    classes' signatures and its weights against the model built on the meta device before anything is built."""
    from gan_lightning.checkpoints import CheckpointError, check_settings, read_checkpoint
    from gan_lightning.data import GANDataModule
    from gan_lightning.models.registry import checked_model

    if Path(path).expanduser().is_dir():  # a folder written by `export` (gan_lightning/pretrained.py)
        return load_folder_and_data(path, device, data_dir, chosen_class, download)
    ckpt = read_checkpoint(path)
    hp = dict(ckpt.get("hyper_parameters", {}))
    named = ckpt.get("gan_lightning", {}).get("model")  # the class name our models write (also when trained from
    if not hp.get("_class_path") and isinstance(named, str) and named.isidentifier():  # Python, without the CLI)
        hp["_class_path"] = f"gan_lightning.models.{named}"
    if not hp.get("_class_path") or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint {path} has no model class or weights: it was not written by "
                              "`python -m gan_lightning fit`")
    cls, settings = checked_model(hp, ckpt["state_dict"], path, chosen_class)
    data_hp = data_settings(ckpt.get("datamodule_hyper_parameters", {}), path)
    if data_hp:
        check_settings(GANDataModule, data_hp, path, group="data")
    try:
        model = cls(**settings)
    except Exception as err:  # what the meta build could not see (a setting that only fails with real tensors)
        raise CheckpointError(f"checkpoint {path}: its settings do not build a {cls.__name__} ({type(err).__name__}: "
                              f"{first_line(err)}); use another checkpoint") from None
    model.on_load_checkpoint(ckpt)  # its counters, and its weights' names and shapes checked once more
    model.load_state_dict(ckpt["state_dict"])
    datamodule = data_module(model, data_hp, f"checkpoint {path}", data_dir, download, "use another checkpoint")
    return model.to(device).eval(), datamodule


def load_folder_and_data(path: str, device: str, data_dir: str | None, chosen_class: str | None, download: bool):
    """``load_model`` for an exported model folder: its model, and the data module its config.json's data
    settings describe (checked as a checkpoint's are)."""
    from gan_lightning.checkpoints import check_settings
    from gan_lightning.data import GANDataModule
    from gan_lightning.pretrained import load_folder

    model, config = load_folder(path, chosen_class)
    data_hp = data_settings(config["data"], path)
    if data_hp:
        check_settings(GANDataModule, data_hp, path, group="data")
    datamodule = data_module(model, data_hp, f"model folder {path}", data_dir, download, "export the checkpoint again")
    return model.to(device).eval(), datamodule


def data_module(model, data_hp: dict, source: str, data_dir: str | None, download: bool, fix: str):
    """The data module of a file's checked data settings (None without any), reading where the user says
    (``data_dir``, ``download``), never where the file says; its examples must have the shape the model was
    trained on: a forged ``image_size`` would make every image be resized to whatever the file says."""
    from gan_lightning.checkpoints import CheckpointError
    from gan_lightning.data import GANDataModule

    if not data_hp:
        return None
    datamodule = GANDataModule(**{**data_hp, "on_device": False, "num_workers": 0, "download": download,
                                  **({"data_dir": data_dir} if data_dir else {})})
    trained = tuple(model.hparams.get("data_shape") or datamodule.data_shape)
    if tuple(datamodule.data_shape) != trained:
        raise CheckpointError(f"{source}: its data settings give examples of shape {tuple(datamodule.data_shape)}, "
                              f"its model was trained on {trained}: it was edited; {fix}")
    return datamodule


# Data settings a checkpoint does not choose: where files are read and written, and whether anything is downloaded,
# are the command's own options and defaults (``--data_dir``), never the text of a file from elsewhere.
NOT_FROM_CHECKPOINTS = ("data_dir", "download")


def data_settings(hparams: dict, path: str) -> dict:
    """The checkpoint's data settings that ``GANDataModule`` accepts, each a plain value, less those that say
    where files go (``NOT_FROM_CHECKPOINTS``); its ``_class_path`` is ignored (the data module is always ours),
    and anything else is refused as in ``model_settings``."""
    from gan_lightning.checkpoints import CheckpointError, plain, source_name
    from gan_lightning.data import GANDataModule

    accepted = set(inspect.signature(GANDataModule.__init__).parameters) - {"self", *NOT_FROM_CHECKPOINTS}
    settings = {key: value for key, value in dict(hparams).items() if key in accepted}
    for key, value in settings.items():
        if not plain(value):
            raise CheckpointError(f"{source_name(path)}: data setting {key!r} is not a plain value; it was not "
                                  "written by `python -m gan_lightning fit` and is not loaded")
    return settings


def _device(name: str | None) -> str:
    """The device to run on: the one named (checked to exist here), else cuda when available, else cpu."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ValueError(f"--device {name}: this machine has {count} CUDA device{'s' if count != 1 else ''}; "
                         "use --device cpu" + (f" or cuda:0 to cuda:{count - 1}" if count else ""))
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: sample and evaluate run on cpu or cuda")
    return name


def sample(args: argparse.Namespace) -> dict:
    """Writes ``--n`` samples as an .npz (``x``: uint8 NHWC images, or float (N, 2) points) and a PNG."""
    from gan_lightning.checkpoints import CheckpointError
    from gan_lightning.data import to_uint8

    model, dm = load_model(args.ckpt_path, args.device, chosen_class=args.model_class)
    noise = torch.Generator(model.device).manual_seed(args.seed)
    with torch.no_grad():
        x = torch.cat([model.sample(min(args.batch_size, args.n - i), generator=noise).cpu()
                       for i in range(0, args.n, args.batch_size)])
    bad = int((~x.flatten(1).isfinite().all(dim=1)).sum())
    if bad:  # as evaluate: a diverged generator's NaN would be written as black images or NaN points
        raise CheckpointError(f"{bad} of the {args.n} samples of {type(model).__name__} at iteration "
                              f"{getattr(model, 'iteration', 0)} ({args.ckpt_path}) hold NaN or Inf: its generator "
                              "has diverged, and nothing was written. Sample an earlier checkpoint")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x": to_uint8(x).permute(0, 2, 3, 1).numpy()} if x.dim() == 4 else {"x": x.numpy()}
    np.savez(out, **arrays, iteration=getattr(model, "iteration", 0), seed=args.seed)
    picture = out.with_suffix(".png")
    if x.dim() == 4:
        from torchvision.utils import save_image

        from gan_lightning.data import to_unit_range

        save_image(to_unit_range(x[:64].float()), picture, nrow=8)
    else:
        from gan_lightning.callbacks.toy import scatter_png
        from gan_lightning.data.toy import mixture_modes

        dataset = dm.hparams.dataset if dm is not None else ""
        scatter_png(x, mixture_modes(dataset)[0] if dataset.startswith("toy_") else None, picture,
                    f"{args.n} samples, iteration {getattr(model, 'iteration', 0)}")
    print(f"wrote {args.n} samples to {out} (array 'x', {arrays['x'].dtype} {arrays['x'].shape}) and {picture}")
    return {"npz": str(out), "png": str(picture)}


# --- export ------------------------------------------------------------------------------------------------------

def export(checkpoint: str | Path, out: str | Path, chosen_class: str | None = None) -> Path:
    """The model folder of a checkpoint (``gan_lightning/pretrained.py``), written to ``out``, which must be new or
    empty: the networks that sample and encode (their moving averages where the run kept them), the settings that
    build them, and a model card with the scores recorded at the checkpoint's iteration."""
    import gan_lightning.pretrained as pretrained
    from gan_lightning.checkpoints import plain, read_checkpoint
    from gan_lightning.data import to_unit_range

    checkpoint, out = Path(checkpoint).expanduser(), Path(out).expanduser()
    if checkpoint.is_dir():
        raise ValueError(f"--ckpt_path {checkpoint} is a folder (an export already?): export takes a checkpoint "
                         "written by fit")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not an empty folder: name a new folder (export never "
                         "overwrites)")
    model, _ = load_model(str(checkpoint), "cpu", chosen_class=chosen_class)
    data = data_settings(read_checkpoint(checkpoint).get("datamodule_hyper_parameters", {}), str(checkpoint))
    settings = {key: value for key, value in dict(model.hparams).items() if not key.startswith("_") and plain(value)}
    name = type(model).__name__
    kept = pretrained.exported_state(model)
    unsaved = [key for key, _ in model.named_buffers()
               if key.split(".")[0] not in pretrained.left_out(model) | {"ema"} and key not in model.state_dict()]
    if unsaved:
        raise ValueError(f"{name} holds buffers that are not saved with its weights ({', '.join(unsaved[:3])}): "
                         "register them as persistent to export it")
    config = {"library": "gan_lightning", "format": pretrained.FORMAT, "model_class": name, "settings": settings,
              "data": data, "iteration": int(model.iteration), "images_seen": int(model.images_seen),
              "networks": sorted({key.split(".")[0] for key in kept}),
              "weights": "moving average" if len(model.ema) else "trained"}
    grid = None
    if len(settings.get("data_shape") or ()) == 3:
        with torch.no_grad():
            grid = to_unit_range(model.sample(64, generator=torch.Generator().manual_seed(0)).float())
    card = {"paper": pretrained.PAPERS.get(name, "see the model class's docstring"), "grid": grid,
            "encoder": hasattr(model, "encode") and hasattr(model, "reconstruct"),
            "scores": pretrained.run_scores(checkpoint, model.iteration), "checkpoint": checkpoint.name,
            "config": pretrained.training_config(checkpoint)}
    return pretrained.write_folder(model, config, card, out)


# --- evaluate ----------------------------------------------------------------------------------------------------

IMAGE_METRICS = ("fid", "is", "kid", "prc")  # prc: precision and recall
DEFAULT_METRICS = ("fid", "is", "kid", "probes")  # on image data; on a toy mixture: modes
TOY_METRICS = ("modes",)  # PacGAN's mode coverage, high-quality fraction and reverse KL

# What each phase of `evaluate` costs on a CPU, in seconds: measured by evaluate's own bars (its JSON's
# `phase_seconds`) on a 2-core AMD EPYC shared with other jobs (load average 5 to 7), no GPU, with a BiGAN of
# configs/bigan.yaml; Inception by its architecture with random weights. The commands and the raw figures are in
# docs/evaluation.md ("What evaluate costs"). A bigger generator or encoder takes longer, a GPU far less.
CPU_COST = {
    "start": 10.0,              # starting Python, loading the checkpoint, the data and the extractor
    "generate": 0.6,            # per 1,000 samples: the generator alone (BiGAN's)
    "features": {"fashion_classifier": 2.5, "inception": 520.0},  # per 1,000 images through the extractor
    "kid": 22.0,                # KID's 100 subsets of 1,000 (float64 kernels), per 128 features
    "prc": 0.13,                # precision/recall: per (1,000 samples)^2 (k-NN radii of both sets)
    "probes_1nn": (16.0, 1.0),  # (seconds, + seconds per 1,000 training images), at 10,000 test images; with the
                                # reconstruction MSE of the test images (6 s of the 16)
    "probes_linear": (52.0, 17.0),  # the same for the three logistic regressions (E(x), penultimate, pixels)
}
COST_MACHINE = "a 2-core CPU"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return "under 10 s"
    if seconds < 90:
        return f"about {int(seconds / 10 + 0.5) * 10} s"
    if seconds < 5400:
        return f"about {int(seconds / 60 + 0.5)} min"
    return f"about {seconds / 3600:.1f} h"


def _plan_line(parts: list[tuple[str, float | None]], device: str) -> str:
    """``evaluate: PHASE [cost]; PHASE [cost]; ...; expect about N min on a 2-core CPU``: what will be computed, in
    the order it runs, and its cost by ``CPU_COST`` (None: not measured, e.g. DINOv2's passes)."""
    known = CPU_COST["start"] + sum(seconds for _, seconds in parts if seconds is not None)
    unknown = any(seconds is None for _, seconds in parts)
    said = [text if seconds == 0 else f"{text} [{_duration(seconds) if seconds is not None else 'not measured'}]"
            for text, seconds in parts]  # 0: read from a cache, or a toy's second
    expect = _duration(known) + (" plus what was not measured" if unknown else "")
    where = f"on {COST_MACHINE}" + ("; far less on the GPU" if device.startswith("cuda") else "")
    return f"evaluate: {'; '.join(said)}; expect {expect} {where} (docs/evaluation.md)"


class _Bars:
    """A progress-bar factory for evaluate's phases: tqdm on stderr (the table stays alone on stdout), throttled to
    a refresh per ``mininterval`` seconds (30 where stderr is a file: a log gets a line per half minute, not per
    batch), off with ``--quiet``; it records each phase's seconds for the JSON."""

    KEYS = (("real statistics: ", "real_statistics_"), ("generating", "samples"), ("features of", "samples"),
            ("precision/recall", "precision_recall"), ("kid:", "kid"), ("probes: 1-NN", "probes_1nn"),
            ("probes: linear", "probes_linear"), ("mode coverage", "modes"))

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, total: int | None = None, desc: str = "", unit: str = "it", **kwargs):
        from tqdm import tqdm

        interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        start = time.perf_counter()
        with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=0.5 if interactive else 30,
                  disable=self.quiet, dynamic_ncols=interactive, **kwargs) as bar:
            yield bar
        self.seconds[self.key(desc)] = round(time.perf_counter() - start, 2)

    def key(self, desc: str) -> str:
        for prefix, key in self.KEYS:
            if desc.startswith(prefix):
                return key + (desc.split()[3] if key == "real_statistics_" else "")  # ... 60,000 train_full images
        return desc


def _probes_plan(args: argparse.Namespace, dm) -> list[tuple[str, float]]:
    n_train = min(args.n_train, len(dm.splits["train"]))
    n_test = len(dm.splits["test"])
    one_nn = n_test / 10_000 * (CPU_COST["probes_1nn"][0] + CPU_COST["probes_1nn"][1] * n_train / 1000)
    plan = [(f"probes: 1-NN of E(x), the encoder's penultimate layer and the raw inputs, {n_train:,} training vs "
             f"{n_test:,} test images, and reconstruction", one_nn)]
    if not args.no_linear:
        plan.append((f"probes: linear, three logistic regressions on {n_train:,} training images (--no_linear "
                     "skips them)", CPU_COST["probes_linear"][0] + CPU_COST["probes_linear"][1] * n_train / 1000))
    return plan


def evaluate(args: argparse.Namespace) -> dict:
    """Scores a checkpoint (or an image folder with ``--images``) under a named protocol, prints a one-line plan
    (what will be computed, and roughly how long it takes), a progress bar per phase on stderr, then a table, and
    writes JSON; both name the protocol and its parts. A toy mixture's checkpoint is scored by PacGAN's protocol
    (the ``ModeCoverage`` callback's computation)."""
    from gan_lightning.callbacks.probes import model_probe_scores
    from gan_lightning.checkpoints import CheckpointError

    model, dm = load_model(args.ckpt_path, args.device, args.data_dir, args.model_class, args.download_data)
    if dm is None:
        raise CheckpointError(f"checkpoint {args.ckpt_path} holds no data settings; evaluate needs them")
    dataset = dm.hparams.dataset
    toy = dataset.startswith("toy_")
    metrics = _chosen_metrics(args, model, dataset, toy)
    bars = _Bars(args.quiet)
    dm.prepare_data()
    dm.setup("fit")
    results: dict = {"checkpoint": str(args.ckpt_path), "model": type(model).__name__,
                     "iteration": getattr(model, "iteration", 0), "dataset": dataset}
    parts: list[tuple[str, float | None]] = []
    scores = None
    if toy and "modes" in metrics:
        from gan_lightning.data.toy import mixture_modes
        from gan_lightning.metrics import N_SAMPLES

        n_toy = args.n_samples or N_SAMPLES
        parts.append((f"mode coverage and high-quality fraction of {n_toy:,} samples (PacGAN's protocol: high "
                      f"quality within 3 std of one of {dataset}'s {len(mixture_modes(dataset)[0])} modes)", 0.0))
    image_metrics = [m for m in metrics if m in IMAGE_METRICS]
    if image_metrics:
        scores, work = _prepare_image_scores(args, model, dm, image_metrics, bars)
        parts += work["plan"]
    if "probes" in metrics:
        parts += _probes_plan(args, dm)
    print(_plan_line(parts, args.device), flush=True)
    start = time.perf_counter()
    if toy and "modes" in metrics:
        results.update(_mode_coverage(args, model, dm, n_toy, bars))
    if image_metrics:
        results.update(_image_scores(args, model, scores, work, results))
    if "probes" in metrics:
        results.update(model_probe_scores(model, dm, args.n_train, linear=not args.no_linear, bar=bars))
    results["phase_seconds"] = {**bars.seconds, "total": round(time.perf_counter() - start, 2)}
    _print_table(results)
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return results


def _chosen_metrics(args: argparse.Namespace, model, dataset: str, toy: bool) -> list[str]:
    """``--metrics``, or the defaults for this data and model; a choice that cannot be scored is refused here,
    before any work, in one line."""
    from gan_lightning.checkpoints import CheckpointError

    asked = args.metrics is not None
    metrics = list(args.metrics) if asked else (["modes"] if toy else list(DEFAULT_METRICS))
    encoder = hasattr(model, "encode") and hasattr(model, "reconstruct")
    if toy:
        images = [m for m in metrics if m in IMAGE_METRICS]
        if images:
            raise ValueError(f"--metrics {' '.join(images)}: {dataset} holds 2-D points, not images; a toy run is "
                             "scored by mode coverage and high-quality fraction (--metrics modes, the default here)"
                             + (" and probes" if encoder else ""))
        options = [name for name, value in (("--protocol", args.protocol), ("--feature_extractor",
                   args.feature_extractor), ("--images", args.images), ("--n_real", args.n_real)) if value is not None]
        if options:
            raise ValueError(f"{', '.join(options)}: {dataset} is scored by PacGAN's protocol, not an image "
                             "protocol: drop them (--n_samples changes its 2,500 samples)")
        if args.n_samples is not None and args.n_samples < 1:
            raise ValueError(f"--n_samples must be >= 1, got {args.n_samples} (PacGAN's protocol draws 2,500)")
    elif "modes" in metrics:
        raise ValueError(f"--metrics modes: mode coverage scores the toy mixtures (toy_ring, toy_grid), and "
                         f"{dataset!r} is not one: use fid, is, kid, prc or probes")
    if "probes" in metrics and not encoder:
        if asked:
            raise CheckpointError(f"--metrics probes needs an encoder; {type(model).__name__} has none: drop probes")
        metrics.remove("probes")  # the defaults: what the model can be scored by
    return metrics


def _prepare_image_scores(args: argparse.Namespace, model, dm, image_metrics: list[str], bars: _Bars):
    """The image metrics' protocol, extractor, real sets and cache, checked before any work, and their part of
    the plan."""
    from gan_lightning.metrics import protocols
    from gan_lightning.metrics.features import SCORE_NAMES, build_extractor
    from gan_lightning.metrics.image_scores import ImageScores, check_cache_dir

    folder = protocols.folder_images(Path(args.images), dm.data_shape) if args.images else None
    protocol = protocols.get_protocol(args.protocol or "train50k",
                                      len(folder) if folder is not None else args.n_samples, args.n_real)
    reference, floor_images = protocols.protocol_images(dm, protocol)  # a missing split fails before any work
    extractor_name = args.feature_extractor or ("fashion_classifier" if tuple(dm.data_shape) == (1, 28, 28)
                                                else "inception")
    if args.metrics is None and "is" not in SCORE_NAMES[extractor_name]:
        image_metrics = [m for m in image_metrics if m != "is"]  # the defaults: no logits (DINOv2, CLIP), no IS
    extractor = build_extractor(extractor_name, args.inception_weights, not args.no_download,
                                args.extractor_weights, args.extractor_sha256).to(model.device)
    scores = ImageScores(extractor, extractor_name, image_metrics, bar=bars)
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else dm.root / ".stats"
    real_sets = [images for images in (floor_images, reference) if images]
    check_cache_dir(cache, [scores.cache_path(images.key, cache) for images in real_sets])
    per_image = CPU_COST["features"].get(extractor_name)
    plan = []
    for images in real_sets:
        cached = scores.cache_path(images.key, cache).is_file()
        which = "reference" if images is reference else "floor"
        plan.append((f"real statistics of the {which}, {images.size:,} {images.reference} images"
                     f" ({'cached' if cached else 'not cached'})",
                     0.0 if cached else per_image and per_image * images.size / 1000))
    n = protocol.n_samples
    names = ", ".join(scores.names[m] if m != "prc" else "precision/recall" for m in image_metrics)
    if folder is not None:
        plan.append((f"features of {n:,} images of {args.images} for {names} (protocol {protocol.name})",
                     per_image and per_image * n / 1000))
    else:
        plan.append((f"generating {n:,} samples and their {extractor_name} features for {names} (protocol "
                     f"{protocol.name}, against {reference.size:,} {reference.reference} images)",
                     per_image and (CPU_COST["generate"] + per_image) * n / 1000))
    if "kid" in image_metrics:
        plan.append((f"kid: {scores.kid_subsets} subsets of {min(scores.kid_subset_size, n, reference.size):,} samples",
                     CPU_COST["kid"] * extractor.num_features / 128))
    if "prc" in image_metrics:
        plan.append((f"precision/recall of {n:,} vs {min(n, reference.size):,} features (quadratic in the count)",
                     CPU_COST["prc"] * (n / 1000) ** 2))
    return scores, {"protocol": protocol, "reference": reference, "floor": floor_images, "folder": folder,
                    "cache": cache, "plan": plan}


def _image_scores(args: argparse.Namespace, model, scores, work: dict, results: dict) -> dict:
    from gan_lightning.metrics import protocols
    from gan_lightning.metrics.image_scores import NonFiniteSamplesError

    protocol, reference, floor_images, folder = work["protocol"], work["reference"], work["floor"], work["folder"]
    floor = (protocols.load_statistics(scores, floor_images, work["cache"], args.batch_size, hold=False,
                                       bar=scores.bar) if floor_images else None)
    protocols.load_statistics(scores, reference, work["cache"], args.batch_size, bar=scores.bar)
    start = time.perf_counter()
    out: dict = {}
    if folder is not None:
        with scores.bar(total=len(folder), desc=f"features of {len(folder):,} images of {args.images}",
                        unit="images") as bar:
            for i in range(0, len(folder), args.batch_size):
                batch = torch.stack([folder[j][0] for j in range(i, min(i + args.batch_size, len(folder)))])
                scores.add_fake(batch)
                bar.update(len(batch))
        out["images"] = str(args.images)
    else:
        scores.add_generator(lambda n, noise: model.sample(n, generator=noise), protocol.n_samples,
                             args.batch_size, args.seed)
    out.update(scores.compute())
    if scores.nonfinite:  # black images would get a finite score: refuse instead
        raise NonFiniteSamplesError(
            f"{scores.nonfinite} of the {protocol.n_samples} samples of {type(model).__name__} at iteration "
            f"{results['iteration']} ({args.ckpt_path}) hold NaN or Inf: its generator has diverged, there is "
            "nothing to score. Evaluate an earlier checkpoint")
    if floor is not None:
        out.update(scores.floor(floor))
    out.update({"n_samples": protocol.n_samples, "feature_extractor": scores.extractor_name,
                "protocol": protocols.describe(protocol, reference, floor_images, scores),
                "seconds": round(time.perf_counter() - start, 2)})
    return out


def _mode_coverage(args: argparse.Namespace, model, dm, n: int, bars: _Bars) -> dict:
    """PacGAN's scores of a toy mixture's generator, computed by the ``ModeCoverage`` callback itself (its modes,
    its seeded samples, its ``mode_coverage``), so they equal what a run logs as ``val/modes``, ... for the same
    generator, seed and sample count; and the protocol they were measured under."""
    from types import SimpleNamespace

    from gan_lightning.callbacks.toy import ModeCoverage
    from gan_lightning.checkpoints import CheckpointError
    from gan_lightning.metrics import N_SAMPLES

    coverage = ModeCoverage(n_samples=n, seed=args.seed, plot=False)
    coverage.setup(SimpleNamespace(datamodule=dm), model, "validate")  # the mixture's modes and std
    with bars(total=n, desc=f"mode coverage: {n:,} samples", unit="samples") as bar:
        samples, scores = coverage.measure(model)
        bar.update(n)
    bad = int((~samples.isfinite().all(dim=1)).sum())
    if bad:
        raise CheckpointError(f"{bad} of the {n} samples of {type(model).__name__} at iteration "
                              f"{getattr(model, 'iteration', 0)} ({args.ckpt_path}) hold NaN or Inf: its generator "
                              "has diverged, there is nothing to score. Evaluate an earlier checkpoint")
    name = "pacgan" if n == N_SAMPLES else f"pacgan[n_samples={n}]"
    return {**scores, "n_modes": len(coverage.modes), "n_samples": n,
            "protocol": {"name": name, "n_samples": n, "dataset": dm.hparams.dataset, "n_modes": len(coverage.modes),
                         "mode_std": coverage.std, "high_quality": f"within 3 std ({3 * coverage.std:g}) of the "
                         "nearest mode", "modes": "modes nearest to at least one high-quality sample",
                         "reverse_kl": "KL(nearest-mode histogram || uniform)", "seed": args.seed,
                         "as_in": "Lin et al. 2018 (PacGAN), Srivastava et al. 2017 (VEEGAN)"}}


def _print_table(results: dict) -> None:
    rows = []
    for key, value in results.items():  # a dict (the protocol) as one row per part
        rows += [(f"{key}.{part}", v) for part, v in value.items()] if isinstance(value, dict) else [(key, value)]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        text = f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else str(value)
        print(f"{key:<{width}}  {text}")


def _cost(n: int, extractor: str = "fashion_classifier", real: bool = False) -> str:
    """``CPU_COST``'s time for ``n`` samples (or, ``real``, real images) through ``extractor``."""
    return _duration(n / 1000 * (CPU_COST["features"][extractor] + (0 if real else CPU_COST["generate"])))


def _linear_cost(n_train: int) -> float:
    return CPU_COST["probes_linear"][0] + CPU_COST["probes_linear"][1] * n_train / 1000


def _metrics_help() -> str:
    one_nn = CPU_COST["probes_1nn"][0] + CPU_COST["probes_1nn"][1] * 10
    return ("what to score (default: fid is kid probes on images, the probes where the model has an encoder; modes "
            f"on a toy mixture). What each costs on {COST_MACHINE} (docs/evaluation.md, \"What evaluate costs\"): "
            "fid, is and kid share one pass of the feature extractor over the samples, with fashion_classifier "
            f"{_cost(50_000)} for train50k's 50,000 and {_cost(10_000)} for 10,000 (--protocol trainsplit10k or "
            f"--n_samples 10000), with Inception {_cost(1000, 'inception')} per 1,000 (a GPU's work); the real "
            "statistics are computed once per reference and cached. prc (precision and recall) is quadratic in the "
            f"samples: {_duration(CPU_COST['prc'] * 100)} at 10,000, {_duration(CPU_COST['prc'] * 2500)} at 50,000. "
            f"probes: the encoder probes, 1-NN {_duration(one_nn)} and linear {_duration(_linear_cost(10_000))} at "
            "--n_train 10,000. modes: PacGAN's mode coverage and high-quality fraction of a toy mixture, a second. "
            "Skip what you do not need: --metrics fid scores FID alone (no probes), --metrics probes skips the "
            "image metrics, --no_linear the linear probes, a smaller --n_train or --n_samples shortens them")


def parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m gan_lightning {command}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--ckpt_path", required=True,
                   help="a checkpoint written by `python -m gan_lightning fit`, or `best` / `last` with --config: "
                        "the best.ckpt (the config's headline figure) or newest last.ckpt in the config's checkpoint "
                        "folder" + ("" if command == "export" else "; or a model folder written by `export`"))
    p.add_argument("--config", action="append", default=[],
                   help="with --ckpt_path best or last: the run's config (repeatable, as in fit: overlays stack)")
    p.add_argument("--run_dir", default=None, help="with --ckpt_path best or last: the run's --run_dir, as in fit")
    p.add_argument("--model_class", default=None,
                   help="your own model class (pkg.module.Class, a subclass of gan_lightning.models.AdversarialModule) "
                        "when the checkpoint names one outside gan_lightning.models; it is imported, so name only "
                        "code you trust (a checkpoint's own class names are never imported)")
    if command == "export":
        p.add_argument("--out", required=True,
                       help="the model folder to write (new or empty): model.safetensors, config.json, README.md (the "
                            "model card) and samples.png; upload it with `hf upload USER/REPO DIR .`")
        return p
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples' noise")
    p.add_argument("--batch_size", type=_positive, default=500)
    if command == "sample":
        p.add_argument("--n", type=int, default=10_000, help="number of samples")
        p.add_argument("--out", default="samples.npz", help=".npz file; a PNG grid goes beside it")
    else:
        p.add_argument("--metrics", nargs="+", default=None, choices=[*IMAGE_METRICS, "probes", *TOY_METRICS],
                       help=_metrics_help())
        from gan_lightning.metrics.features import SCORE_NAMES

        p.add_argument("--feature_extractor", choices=list(SCORE_NAMES), default=None,
                       help="default: fashion_classifier for 28x28 grey data, else inception")
        from gan_lightning.metrics.protocols import PROTOCOLS

        p.add_argument("--protocol", choices=list(PROTOCOLS), default=None,
                       help="which real images and how many samples (docs/evaluation.md): train50k (default: 50,000 "
                            "samples against the full official training set, as BigGAN and StudioGAN report; on "
                            f"{COST_MACHINE} {_cost(50_000)} with fashion_classifier, {_cost(50_000, 'inception')} "
                            "with Inception, and as long again once for its real statistics: use a GPU), test10k "
                            "(10,000 against the official test set), trainsplit10k (10,000 against the training "
                            "split less the val_fraction hold-out, the "
                            f"training-time default; {_cost(10_000)} with fashion_classifier) or val10k (10,000 "
                            "against that hold-out). A reference's real statistics are computed once (60,000 images: "
                            f"{_cost(60_000, real=True)} with fashion_classifier), then read from --cache_dir")
        p.add_argument("--n_samples", type=int, default=None,
                       help="generated images instead of the protocol's (reported as, e.g., train50k[n_samples=10000])")
        p.add_argument("--n_real", type=int, default=None,
                       help="use the reference's first n images (reported as, e.g., train50k[n_real=5000])")
        p.add_argument("--n_train", type=_positive, default=10_000,
                       help="training images the encoder probes fit (default 10,000); on "
                            f"{COST_MACHINE} the 1-NN probes take {CPU_COST['probes_1nn'][0]:.0f} s + "
                            f"{CPU_COST['probes_1nn'][1]:.0f} s per 1,000 of them, the linear probes "
                            f"{CPU_COST['probes_linear'][0]:.0f} s + {CPU_COST['probes_linear'][1]:.0f} s per 1,000")
        p.add_argument("--no_linear", action="store_true",
                       help="1-NN probes only: skip the three logistic regressions, the slow part (on "
                            f"{COST_MACHINE} {_duration(_linear_cost(10_000))} at --n_train 10,000)")
        p.add_argument("--images", default=None, help="score this folder of images instead of the model's samples")
        p.add_argument("--data_dir", default=None, help="where the dataset is (default: data); never the checkpoint's")
        p.add_argument("--download_data", action="store_true",
                       help="download the dataset into --data_dir when it is not there (never the checkpoint's choice)")
        p.add_argument("--cache_dir", default=None, help="real statistics cache (default: <data_dir>/.stats)")
        p.add_argument("--inception_weights", default=None, help="local weights-inception-2015-12-05-6726825d.pth")
        p.add_argument("--no_download", action="store_true", help="never download the Inception weights")
        p.add_argument("--extractor_weights", default=None, metavar="PATH",
                       help="the feature extractor's weights file instead of the one in torch.hub's cache: DINOv2's "
                            "dinov2_vitl14_pretrain.pth, CLIP's ViT-B-32.pt, ... (for inception the same as "
                            "--inception_weights); its digest goes into the protocol the outputs name")
        p.add_argument("--extractor_sha256", default=None, metavar="HEX",
                       help="the full SHA-256 that weights file must have (sha256sum FILE): DINOv2 needs one, here "
                            "or in GAN_LIGHTNING_SHA256_DINOV2_VIT_L_14 (etc.); for inception it adds to the "
                            "published prefix; CLIP's is pinned by OpenAI's URL")
        p.add_argument("--quiet", action="store_true",
                       help="no progress bars on stderr (the plan line and the table still print on stdout)")
        p.add_argument("--out", default=None, help="JSON file (default: <checkpoint>.eval.json)")
    return p


def run(command: str, argv: list[str]) -> dict:
    args = parser(command).parse_args(argv)
    if args.ckpt_path in ("best", "last"):
        from gan_lightning.run_folders import checkpoint_file, folders_of_configs

        if not args.config:
            raise ValueError(f"--ckpt_path {args.ckpt_path} needs the run's --config (and --run_dir if it had one) to "
                             "find the checkpoint folder; or pass the checkpoint's path")
        args.ckpt_path = checkpoint_file(folders_of_configs(args.config, args.run_dir), args.ckpt_path, command)
    elif args.config or args.run_dir:
        raise ValueError("--config and --run_dir only find --ckpt_path best or last; a checkpoint's path needs neither")
    if command == "export":
        from gan_lightning.pretrained import UPLOAD

        folder = export(args.ckpt_path, args.out, args.model_class)
        files = ", ".join(sorted(path.name for path in folder.iterdir()))
        print(f"wrote {folder}: {files}. Load it with gan_lightning.load_pretrained({str(folder)!r}); upload it with "
              f"{UPLOAD.format(folder=folder)}")
        return {"folder": str(folder)}
    if command == "sample" and args.n < 1:
        sys.exit(f"gan_lightning: error: --n must be >= 1, got {args.n}")
    # Everything the options say is checked before any work: an hour of scoring must not end in a bad --out.
    args.device = _device(args.device)
    args.out = str(output_path(args.out if args.out else Path(args.ckpt_path).with_suffix(".eval.json"),
                               ".npz" if command == "sample" else ".json"))
    return sample(args) if command == "sample" else evaluate(args)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def output_path(out: str | Path, suffix: str) -> Path:
    """``out`` with ``suffix`` (numpy adds .npz to a name without it: say the name it will have), checked to be
    writable now: a folder where the file goes, no file where a folder must be."""
    path = Path(out).expanduser()
    path = path if path.suffix == suffix else path.with_name(path.name + suffix)
    blocked = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None or path.is_dir():
        raise ValueError(f"--out {out}: cannot write {path} ({blocked or path} is "
                         f"{'a file' if blocked else 'a folder'}): name a file in a folder you can write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError("not writable")
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write in {path.parent} ({err.strerror or err}): name a file in a "
                         "folder you can write") from None
    return path
