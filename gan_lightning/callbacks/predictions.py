"""``predict``'s files: the generator's samples, and the encoder's codes and reconstructions of the predict split.

    python -m gan_lightning predict --config configs/bigan.yaml --ckpt_path runs/bigan/checkpoints/last.ckpt

writes ``{trainer.default_root_dir}/predictions/iteration_{N}/predictions.npz`` (N: the model's iteration, the
checkpoint's with ``--ckpt_path``) and a PNG grid beside it, in the layout of ``python -m gan_lightning sample``.
"""
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

# The arrays written as data (uint8 NHWC images, or float points like the data's); the others are written as floats
# (codes) or integers (positions, labels).
DATA_ARRAYS = ("x", "x_real", "reconstruction")


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.npz`` and ``predictions.png`` (with an encoder also ``reconstructions.png``) into
    ``{trainer.default_root_dir}/predictions/iteration_{N}/``, and prints their paths.

    ``predict`` adds one with the defaults when the config names none (``AdversarialModule.configure_callbacks``).
    The .npz holds, one row per example of the predict split (``GANDataModule.predict_dataloader``: the test split;
    ``trainer.limit_predict_batches`` takes fewer), in the split's order:

    - ``x``: a sample of the generator per example, as ``sample`` writes them (uint8 NHWC images in [0, 255], or
      float (N, 2) points), drawn from ``z_prior`` (and ``y_prior``, the classes of a class-conditional decoder):
      ``model.sample(z=z_prior)`` gives them again. Example i's draws come from a generator seeded with (``seed``,
      i // 1024), the same whatever the batch size, the number of devices or the device;
    - with an encoder (``encode`` and ``reconstruct``: BiGAN, ALI, the AAEs, the VAE and the invertible flow):
      ``x_real`` (the examples, as ``x``), their codes ``z`` = E(x_real) and ``reconstruction`` = G(E(x_real));
    - ``y``: the examples' labels where the data has them; ``index``: their positions in the split;
    - ``iteration`` and ``seed``.

    The moving-average weights are used where the model keeps them (``model.ema_decay``), as by ``sample``.

    Under DDP, every rank predicts its share of the split (that of val and test), and at the epoch's end rank 0
    gathers them and writes one file, in the split's order: the same file as one process writes.

    Args:
        seed: seed of the samples' noise.
    """

    def __init__(self, seed: int = 0):
        super().__init__(write_interval="epoch")
        self.seed = seed
        self.written: dict[str, str] = {}  # what the last predict wrote: {"npz": path, "png": path, ...}

    def dirpath(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path:
        return Path(trainer.default_root_dir) / "predictions" / f"iteration_{getattr(pl_module, 'iteration', 0)}"

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        local = _concatenate(predictions)
        parts = _gather_to_rank_zero(trainer, local)
        if not trainer.is_global_zero:
            return
        arrays = _in_order(parts)
        if not arrays:
            _print(trainer, "gan_lightning: the predict split is empty: nothing was written")
            return
        self.written = self.write(arrays, trainer, pl_module)

    def write(self, arrays: dict[str, torch.Tensor], trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        from gan_lightning.data import to_uint8

        iteration = getattr(pl_module, "iteration", 0)
        n = len(arrays["index"])
        for name in ("x", "reconstruction"):
            bad = int((~arrays[name].flatten(1).isfinite().all(dim=1)).sum()) if name in arrays else 0
            if bad:  # as sample: NaN would be written as black images or NaN points
                raise FloatingPointError(
                    f"{bad} of the {n} {'samples' if name == 'x' else 'reconstructions'} of {type(pl_module).__name__} "
                    f"at iteration {iteration} hold NaN or Inf: it has diverged, and nothing was written. Predict "
                    "with an earlier checkpoint")
        images = arrays["x"].dim() == 4
        files = {name: (to_uint8(value).permute(0, 2, 3, 1) if images and name in DATA_ARRAYS else value).numpy()
                 for name, value in arrays.items()}
        out = self.dirpath(trainer, pl_module)
        out.mkdir(parents=True, exist_ok=True)
        npz = out / "predictions.npz"
        np.savez(npz, **files, iteration=iteration, seed=self.seed)
        written = {"npz": str(npz), "png": str(out / "predictions.png")}
        if images:
            from torchvision.utils import save_image

            from gan_lightning.data import to_unit_range

            save_image(to_unit_range(arrays["x"][:64].float()), written["png"], nrow=8)
            if "reconstruction" in arrays:  # x_1, G(E(x_1)), x_2, ... as SampleGrid's
                pairs = torch.stack([arrays["x_real"][:32], arrays["reconstruction"][:32]], dim=1).flatten(0, 1)
                written["reconstructions_png"] = str(out / "reconstructions.png")
                save_image(to_unit_range(pairs.float()), written["reconstructions_png"], nrow=16)
        else:
            from gan_lightning.callbacks.toy import scatter_png
            from gan_lightning.data.toy import mixture_modes

            dataset = str(getattr(getattr(trainer, "datamodule", None), "hparams", {}).get("dataset", ""))
            scatter_png(arrays["x"], mixture_modes(dataset)[0] if dataset.startswith("toy_") else None,
                        Path(written["png"]), f"{n} samples, iteration {iteration}")
        shapes = ", ".join(f"{name} {files[name].dtype} {files[name].shape}" for name in files)
        pictures = " and ".join(path for key, path in written.items() if key != "npz")
        _print(trainer, f"wrote {n} predictions of {type(pl_module).__name__} at iteration {iteration} to {npz} "
                        f"({shapes}) and {pictures}")
        return written


def _print(trainer: L.Trainer, text: str) -> None:
    """``text`` on stdout, on a line of its own above the progress bar when one is drawn."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    bar = getattr(trainer, "progress_bar_callback", None)
    drawn = isinstance(bar, TQDMProgressBar) and bar._predict_progress_bar is not None
    if drawn and not bar.predict_progress_bar.disable:
        bar.predict_progress_bar.write(text)
    else:
        print(text)


def _concatenate(predictions) -> dict[str, torch.Tensor]:
    """This rank's predict_step outputs (one dict per batch; a list per loader with several) as one dict."""
    batches = [p for p in predictions if p] if predictions and isinstance(predictions[0], dict) else \
        [p for loader in predictions or [] for p in loader if p]
    if not batches:
        return {}
    return {name: torch.cat([batch[name].cpu() for batch in batches]) for name in batches[0]}


def _gather_to_rank_zero(trainer: L.Trainer, local: dict) -> list[dict]:
    """Every rank's predictions on rank 0 (others get []); a single process's own."""
    if trainer.world_size == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [local]
    parts = [None] * trainer.world_size if trainer.is_global_zero else None
    torch.distributed.gather_object(local, parts, dst=0)
    return parts or []


def _in_order(parts: list[dict]) -> dict[str, torch.Tensor]:
    """The ranks' predictions as one set, in the order of the split's positions (each once)."""
    parts = [part for part in parts if part]
    if not parts:
        return {}
    arrays = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    index, order = arrays["index"].sort(stable=True)
    keep = torch.ones(len(index), dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]  # a sampler that repeats examples to even out the ranks: once each
    order = order[keep]
    return {name: value[order] for name, value in arrays.items()}
