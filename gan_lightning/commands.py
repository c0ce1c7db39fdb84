"""``evaluate`` and ``sample``: what a trained checkpoint is worth, and its samples for other tools.

    python -m gan_lightning evaluate --ckpt_path runs/bigan/checkpoints/last.ckpt [--protocol train50k] \\
        [--metrics fid is kid probes]
    python -m gan_lightning sample --ckpt_path runs/bigan/checkpoints/last.ckpt --n 10000 --out samples.npz

Both rebuild the model and its data module from the checkpoint alone (its saved hyperparameters),
load it with the weights-only loader, and use the EMA weights when the run kept them. The checkpoint's class
names are looked up among gan_lightning's models, never imported: `--model_class pkg.module.Class` loads a
model class of your own.
"""
import argparse
import inspect
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gan_lightning.checkpoints import CheckpointError, check_settings, plain, read_checkpoint
from gan_lightning.data import GANDataModule
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
    from gan_lightning.models.registry import checked_model

    ckpt = read_checkpoint(path)
    hp = dict(ckpt.get("hyper_parameters", {}))
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
    datamodule = None
    if data_hp:
        datamodule = GANDataModule(**{**data_hp, "on_device": False, "num_workers": 0, "download": download,
                                      **({"data_dir": data_dir} if data_dir else {})})
        # The data's shape must be the one the weights were trained on: a forged image_size would make every image
        # be resized to whatever the file says.
        trained = tuple(model.hparams.get("data_shape") or datamodule.data_shape)
        if tuple(datamodule.data_shape) != trained:
            raise CheckpointError(f"checkpoint {path}: its data settings give examples of shape "
                                  f"{tuple(datamodule.data_shape)}, its model was trained on {trained}: it was edited; "
                                  "use another checkpoint")
    return model.to(device).eval(), datamodule


# Data settings a checkpoint does not choose: where files are read and written, and whether anything is downloaded,
# are the command's own options and defaults (``--data_dir``), never the text of a file from elsewhere.
NOT_FROM_CHECKPOINTS = ("data_dir", "download")


def data_settings(hparams: dict, path: str) -> dict:
    """The checkpoint's data settings that ``GANDataModule`` accepts, each a plain value, less those that say
    where files go (``NOT_FROM_CHECKPOINTS``); its ``_class_path`` is ignored (the data module is always ours),
    and anything else is refused as in ``model_settings``."""
    accepted = set(inspect.signature(GANDataModule.__init__).parameters) - {"self", *NOT_FROM_CHECKPOINTS}
    settings = {key: value for key, value in dict(hparams).items() if key in accepted}
    for key, value in settings.items():
        if not plain(value):
            raise CheckpointError(f"checkpoint {path}: data setting {key!r} is not a plain value; it was not "
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


def evaluate(args: argparse.Namespace) -> dict:
    """Scores a checkpoint (or an image folder with ``--images``) under a named protocol, prints a table and
    writes JSON; both name the protocol and its parts."""
    from gan_lightning.callbacks.probes import model_probe_scores
    from gan_lightning.metrics import protocols
    from gan_lightning.metrics.features import build_extractor
    from gan_lightning.metrics.image_scores import ImageScores, NonFiniteSamplesError, check_cache_dir

    model, dm = load_model(args.ckpt_path, args.device, args.data_dir, args.model_class, args.download_data)
    if dm is None:
        raise CheckpointError(f"checkpoint {args.ckpt_path} holds no data settings; evaluate needs them")
    dm.prepare_data()
    dm.setup("fit")
    results: dict = {"checkpoint": str(args.ckpt_path), "model": type(model).__name__,
                     "iteration": getattr(model, "iteration", 0), "dataset": dm.hparams.dataset}
    image_metrics = [m for m in args.metrics if m in ("fid", "is", "kid", "prc")]
    if image_metrics:
        folder = protocols.folder_images(Path(args.images), dm.data_shape) if args.images else None
        protocol = protocols.get_protocol(args.protocol, len(folder) if folder is not None else args.n_samples,
                                          args.n_real)
        reference, floor_images = protocols.protocol_images(dm, protocol)  # a missing split fails before any work
        extractor_name = args.feature_extractor or ("fashion_classifier" if tuple(dm.data_shape) == (1, 28, 28)
                                                    else "inception")
        extractor = build_extractor(extractor_name, args.inception_weights, not args.no_download,
                                    args.extractor_weights, args.extractor_sha256).to(model.device)
        scores = ImageScores(extractor, extractor_name, image_metrics)
        cache = Path(args.cache_dir).expanduser() if args.cache_dir else dm.root / ".stats"
        check_cache_dir(cache, [scores.cache_path(images.key, cache) for images in (reference, floor_images) if images])
        floor = (protocols.load_statistics(scores, floor_images, cache, args.batch_size, hold=False)
                 if floor_images else None)
        protocols.load_statistics(scores, reference, cache, args.batch_size)
        start = time.perf_counter()
        if folder is not None:
            for i in range(0, len(folder), args.batch_size):
                scores.add_fake(torch.stack([folder[j][0] for j in range(i, min(i + args.batch_size, len(folder)))]))
            results["images"] = str(args.images)
        else:
            scores.add_generator(lambda n, noise: model.sample(n, generator=noise), protocol.n_samples,
                                 args.batch_size, args.seed)
        results.update(scores.compute())
        if scores.nonfinite:  # black images would get a finite score: refuse instead
            raise NonFiniteSamplesError(
                f"{scores.nonfinite} of the {protocol.n_samples} samples of {type(model).__name__} at iteration "
                f"{results['iteration']} ({args.ckpt_path}) hold NaN or Inf: its generator has diverged, there is "
                "nothing to score. Evaluate an earlier checkpoint")
        if floor is not None:
            results.update(scores.floor(floor))
        results.update({"n_samples": protocol.n_samples, "feature_extractor": extractor_name,
                        "protocol": protocols.describe(protocol, reference, floor_images, scores),
                        "seconds": round(time.perf_counter() - start, 2)})
    if "probes" in args.metrics:
        if not hasattr(model, "encode"):
            raise CheckpointError(f"--metrics probes needs an encoder; {type(model).__name__} has none")
        results.update(model_probe_scores(model, dm, args.n_train, linear=not args.no_linear))
    _print_table(results)
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return results


def _print_table(results: dict) -> None:
    rows = []
    for key, value in results.items():  # a dict (the protocol) as one row per part
        rows += [(f"{key}.{part}", v) for part, v in value.items()] if isinstance(value, dict) else [(key, value)]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        text = f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else str(value)
        print(f"{key:<{width}}  {text}")


def parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m gan_lightning {command}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", required=True, help="a checkpoint written by `python -m gan_lightning fit`")
    p.add_argument("--model_class", default=None,
                   help="your own model class (pkg.module.Class, a subclass of gan_lightning.models.AdversarialModule) "
                        "when the checkpoint names one outside gan_lightning.models; it is imported, so name only "
                        "code you trust (a checkpoint's own class names are never imported)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples' noise")
    p.add_argument("--batch_size", type=_positive, default=500)
    if command == "sample":
        p.add_argument("--n", type=int, default=10_000, help="number of samples")
        p.add_argument("--out", default="samples.npz", help=".npz file; a PNG grid goes beside it")
    else:
        p.add_argument("--metrics", nargs="+", default=["fid", "is", "kid", "probes"],
                       choices=["fid", "is", "kid", "prc", "probes"])  # prc: precision and recall
        from gan_lightning.metrics.features import SCORE_NAMES

        p.add_argument("--feature_extractor", choices=list(SCORE_NAMES), default=None,
                       help="default: fashion_classifier for 28x28 grey data, else inception")
        from gan_lightning.metrics.protocols import PROTOCOLS

        p.add_argument("--protocol", choices=list(PROTOCOLS), default="train50k",
                       help="which real images and how many samples (docs/evaluation.md): train50k (default: 50,000 "
                            "samples against the full official training set, as BigGAN and StudioGAN report; "
                            "seconds with fashion_classifier, hours with Inception on a CPU), test10k (10,000 "
                            "against the official test set), trainsplit10k (10,000 against the training split "
                            "less the val_fraction hold-out, the training-time default) or val10k (10,000 "
                            "against that hold-out)")
        p.add_argument("--n_samples", type=int, default=None,
                       help="generated images instead of the protocol's (reported as, e.g., train50k[n_samples=10000])")
        p.add_argument("--n_real", type=int, default=None,
                       help="use the reference's first n images (reported as, e.g., train50k[n_real=5000])")
        p.add_argument("--n_train", type=int, default=10_000, help="training images the encoder probes use")
        p.add_argument("--no_linear", action="store_true",
                       help="1-NN probes only: skip the logistic regressions, the slow part at 50,000 training images")
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
        p.add_argument("--out", default=None, help="JSON file (default: <checkpoint>.eval.json)")
    return p


def run(command: str, argv: list[str]) -> dict:
    args = parser(command).parse_args(argv)
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
