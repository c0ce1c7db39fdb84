"""Training throughput of BiGAN-MLP (batch 128, Fashion-MNIST): gan_lightning versus a plain PyTorch loop.

The plain loop runs the same networks and the same updates as ``BiGAN.training_step`` (G(z) and E(x)
once per iteration, a D step on detached pairs, then a G/E step against the updated D with D frozen),
written as a careful engineer would write it. Variants run alternately, several repeats each. Each run
times every iteration (batch start to batch start, data loading included); a run's figure is
128 / its median iteration time, which bursts of load from other processes on a shared machine do
not move, and the table reports the median over repeats.

    python benchmarks/throughput.py                      # all variants, CPU
    python benchmarks/throughput.py --device cuda --precision bf16-mixed

Variants:
  plain           plain PyTorch loop, DataLoader over the uint8 training tensor, torch's default Adam, without
                  the CUDA device count that ``import lightning`` makes every Adam step redo on a CPU
  framework       python -m gan_lightning's default path: Trainer + GANDataModule (DataLoader),
                  CSV logger and progress bar on, as configs/bigan.yaml
  framework-fast  the same, with data.on_device=true and Adam(fused=True) (configs/bigan.yaml's setting)
  framework-fast-compile  framework-fast with model.compile=true (torch.compile of every network)
"""
import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import statistics
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from gan_lightning.data import GANDataModule, to_model_range
from gan_lightning.losses import bigan_encoder_generator_loss, discriminator_loss
from gan_lightning.models import BiGAN
from gan_lightning.nets import JointDiscriminator, MLPEncoder, MLPGenerator
from provenance import commit  # benchmarks/provenance.py

BATCH, LATENT, HIDDEN = 128, 50, 1024
ADAM = dict(lr=2e-4, betas=(0.5, 0.999), weight_decay=2.5e-5)


@contextlib.contextmanager
def without_lightnings_device_check():
    """Torch as a script that never imports Lightning sees it: without ``PYTORCH_NVML_BASED_CUDA_CHECK``, which
    ``import lightning`` sets and which makes every Adam step count the CUDA devices through NVML on a machine
    where CUDA is not initialised (gan_lightning/models/device_count.py; ``device_count_cost.py``)."""
    setting = os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    try:
        yield
    finally:
        if setting is not None:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = setting


def plain_loop(data: GANDataModule, device: str, warmup: int, iterations: int, hidden: int = HIDDEN) -> float:
    """images/s of a hand-written loop over the same networks and updates."""
    G = MLPGenerator(LATENT, (1, 28, 28), hidden).to(device)
    E = MLPEncoder(LATENT, (1, 28, 28), hidden).to(device)
    D = JointDiscriminator(LATENT, (1, 28, 28), hidden).to(device)
    opt_d = torch.optim.Adam(D.parameters(), **ADAM)
    opt_ge = torch.optim.Adam([*G.parameters(), *E.parameters()], **ADAM)
    loader = DataLoader(data.splits["train"], batch_size=BATCH, shuffle=True, drop_last=True)
    stamps = []
    with without_lightnings_device_check():
        for i, (x, _) in enumerate(loader):
            if i >= warmup:
                stamps.append(time.perf_counter())
            if i == warmup + iterations:
                break
            x = to_model_range(x.to(device))
            z = torch.rand(len(x), LATENT, device=device) * 2 - 1
            x_fake, z_enc = G(z), E(x)
            d_loss = discriminator_loss(D(x, z_enc.detach()), D(x_fake.detach(), z))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            D.requires_grad_(False)
            ge_loss = bigan_encoder_generator_loss(D(x, z_enc), D(x_fake, z))
            opt_ge.zero_grad(set_to_none=True)
            ge_loss.backward()
            opt_ge.step()
            D.requires_grad_(True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
    return images_per_second(stamps)


def images_per_second(stamps: list[float], batch_size: int = BATCH) -> float:
    """batch_size over the median interval between consecutive time stamps."""
    return batch_size / statistics.median(b - a for a, b in pairwise(stamps))


class Timer(L.Callback):
    """Time stamps at the start of every batch after the warm-up, and one after the last batch."""

    def __init__(self, warmup: int):
        self.warmup, self.stamps = warmup, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.stamps.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        if batch_idx == trainer.num_training_batches - 1:
            self.stamps.append(time.perf_counter())


def framework(data_root: str, device: str, precision: str, warmup: int, iterations: int, fast: bool,
              compile: bool, hidden: int = HIDDEN) -> float:
    """images/s of BiGAN trained through the Trainer, timed between batches like the plain loop."""
    adam = dict(ADAM, fused=True) if fast else ADAM
    model = BiGAN(latent_dim=LATENT, width=hidden, compile=compile,
                  optimizer_d=lambda p: torch.optim.Adam(p, **adam), optimizer_ge=lambda p: torch.optim.Adam(p, **adam))
    data = GANDataModule("fashion_mnist", data_dir=data_root, batch_size=BATCH, on_device=fast)
    timer = Timer(warmup)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):  # the progress bar
        trainer = L.Trainer(accelerator="cuda" if device.startswith("cuda") else "cpu", devices=1, precision=precision,
                            max_epochs=1, limit_train_batches=warmup + iterations, limit_val_batches=0,
                            logger=CSVLogger(tmp), log_every_n_steps=50, enable_checkpointing=False,
                            enable_model_summary=False, callbacks=[timer, TQDMProgressBar(refresh_rate=20)],
                            default_root_dir=tmp)
        trainer.fit(model, data)
    return images_per_second(timer.stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--hidden", type=int, default=HIDDEN,
                        help="hidden width of G, E, D; a tiny width (16) isolates the per-iteration overhead")
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", nargs="+",
                        default=["plain", "framework", "framework-fast", "framework-fast-compile"])
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    args = parser.parse_args()

    data = GANDataModule("fashion_mnist", data_dir=args.data_dir, batch_size=BATCH)
    data.prepare_data()
    data.setup()
    runs = {
        "plain": lambda: plain_loop(data, args.device, args.warmup, args.iterations, args.hidden),
        "framework": lambda: framework(args.data_dir, args.device, args.precision, args.warmup, args.iterations,
                                       fast=False, compile=False, hidden=args.hidden),
        "framework-fast": lambda: framework(args.data_dir, args.device, args.precision, args.warmup, args.iterations,
                                            fast=True, compile=False, hidden=args.hidden),
        "framework-fast-compile": lambda: framework(args.data_dir, args.device, args.precision, args.warmup,
                                                    args.iterations, fast=True, compile=True, hidden=args.hidden),
    }
    samples: dict[str, list[float]] = {v: [] for v in args.variants}
    for repeat in range(args.repeats):
        # Forward and backward order in turn (ABBA), so a machine whose speed drifts favours no variant.
        for variant in args.variants if repeat % 2 == 0 else args.variants[::-1]:
            samples[variant].append(runs[variant]())
            print(f"repeat {repeat}: {variant:24s} {samples[variant][-1]:8.1f} images/s", flush=True)

    medians = {v: statistics.median(s) for v, s in samples.items()}
    # Speed relative to the plain loop of the same repeat, whose runs were seconds apart: the median of
    # these paired ratios is steadier than a ratio of medians on a machine whose speed drifts.
    ratios = {v: statistics.median(a / b for a, b in zip(s, samples["plain"], strict=True))
              for v, s in samples.items()} if "plain" in samples else {}
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    report = {"command": "python benchmarks/throughput.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                    vars(args).items() if k != "variants"),
              "date": datetime.date.today().isoformat(), "commit": commit(), "machine": machine,
              "torch": torch.__version__, "lightning": L.__version__, "hidden": args.hidden, "samples": samples,
              "median_ms_per_iteration": {v: 1000 * BATCH / m for v, m in medians.items()}, "medians": medians,
              "paired_ratio_to_plain": ratios}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nBiGAN-MLP, hidden width {args.hidden}, batch {BATCH}")
    print(f"\n| variant | images/s (median of {args.repeats} runs) | vs plain loop (median paired ratio) |\n"
          "|---|---|---|")
    for v, m in medians.items():
        print(f"| {v} | {m:,.0f} | {f'{100 * (ratios[v] - 1):+.1f} %' if ratios else '-'} |")
    print(f"\n{machine}; torch {torch.__version__}, lightning {L.__version__}; commit {report['commit']}; "
          f"written to {args.out}")


if __name__ == "__main__":
    main()
