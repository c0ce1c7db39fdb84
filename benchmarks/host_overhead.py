"""Host time per iteration: gan_lightning versus a plain PyTorch loop, every model, tiny networks.

With 16-unit networks the kernels cost almost nothing, so an iteration's time is host work: Python,
dispatch, autograd, the optimizer, and whatever bookkeeping the framework adds. On a GPU that host time
bounds every small model directly; on this CPU it is what the iteration time measures.

For each model the networks, optimizers and data come from the model's own config, with every width set
to 16 and fused Adam (the same networks, initialised from the same seed, in both variants):

  framework  ``python -m gan_lightning fit``'s path: Trainer, the model's ``training_step`` (manual
             optimisation, per-iteration seeding from (seed, iteration, rank), the non-finite check of
             ``model.on_nonfinite``, EMA), CSV logger, progress bar, checkpointing and the preemption
             handler on; the training set resident in memory (``data.on_device: true``).
  plain      a hand-written loop over the same networks with the same updates, in the order the model's
             ``update_players`` runs them (``benchmarks/throughput_models.py``'s plain loops), the same
             optimizers, and batches indexed from the same resident tensor (in another shuffled order, so that
             neither variant reads rows the other has just read into the cache).

The two are interleaved (``Interleaved``): at every Lightning batch start the plain loop's iterations for that
batch run and are timed first, then the framework's batch is timed up to the next batch start, so that the slow
phases of a shared machine fall on both alike. A round's figure is the median over its batches of framework time
/ plain time (and each variant's median time an iteration); the table gives the median over rounds. One thread.
With ``--iterations_per_batch k`` the framework serves k batches to Lightning as one (``data.iterations_per_batch``).
With ``--accelerator gpu`` both run on the GPU (``--precision bf16-mixed``: the plain loop under the same autocast),
and each timed stretch starts and ends with ``torch.cuda.synchronize()``, so that a batch's time is its wall time.
See docs/performance.md.

    python benchmarks/host_overhead.py --rounds 3 --iterations 192                    # every model
    python benchmarks/host_overhead.py --models bigan aae vae --rounds 4 --iterations 384 --iterations_per_batch 8
    python benchmarks/host_overhead.py --accelerator gpu --precision bf16-mixed --rounds 3 --iterations 192   # a GPU
"""
import argparse
import contextlib
import datetime
import io
import platform
import statistics
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from gan_lightning.callbacks import GANProgressBar, Preemption
from gan_lightning.data import DeviceTensorLoader, to_model_range
from provenance import commit, write_report  # benchmarks/provenance.py
from throughput_models import CONFIGS, build, plain_update  # benchmarks/throughput_models.py

WIDTH = "16"
FUSED = ["--model.init_args.{}.init_args.fused", "true"]
TINY = {  # every width of each config set to 16, and fused Adam where the config does not say so already
    "gan": ["--model.init_args.width", WIDTH],
    "ali": ["--model.init_args.width", WIDTH],
    "bigan": ["--model.init_args.width", WIDTH],
    "aae": ["--model.init_args.width", WIDTH, "--model.init_args.discriminator_width", WIDTH,
            *[arg.format(opt) for opt in ("optimizer_ae", "optimizer_d", "optimizer_e") for arg in FUSED]],
    "vae": ["--model.init_args.width", WIDTH],
    "flow": ["--model.init_args.hidden", WIDTH],
}


def tiny(name: str, data_dir: str, iterations_per_batch: int = 1, accelerator: str = "cpu"):
    """The config's model and data module with 16-unit networks and the training set resident in memory."""
    torch.manual_seed(0)
    return build(name, data_dir, accelerator, (*TINY[name], "--data.init_args.on_device", "true",
                                               "--data.init_args.iterations_per_batch", str(iterations_per_batch)))


def synchronize() -> None:
    """Wait for the GPU's queued kernels (nothing on a CPU): a timed stretch then holds its own kernels' time."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


class Interleaved(L.Callback):
    """Times the framework's iterations and, right before each, as many iterations of the plain loop.

    At every batch start (before any other callback's hook) it runs and times the plain loop's iterations for
    the batch (``iterations_per_batch`` of them), then stamps the framework's start; the framework's time is that
    stamp to the next batch's start (everything Lightning and the model do for the batch, hooks and logging
    included). The plain loop's iterations sit beside the framework's in time, so that the slow phases of a
    shared machine fall on both variants alike."""

    def __init__(self, plain_iteration, batches, warmup: int, iterations_per_batch: int):
        self.plain_iteration, self.batches, self.warmup = plain_iteration, batches, warmup
        self.k = iterations_per_batch
        self.starts, self.stamps = [], []  # before the plain iterations, and after them (the framework's start)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        synchronize()  # the framework's previous batch, kernels included
        if batch_idx >= self.warmup:
            self.starts.append(time.perf_counter())
        for _ in range(self.k):
            self.plain_iteration(next(self.batches))
        synchronize()
        if batch_idx >= self.warmup:
            self.stamps.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        synchronize()
        self.starts.append(time.perf_counter())

    def seconds(self) -> tuple[list[float], list[float]]:
        """The (plain, framework) time of one iteration, in each timed batch."""
        return ([(b - a) / self.k for a, b in zip(self.starts[:-1], self.stamps, strict=True)],
                [(b - a) / self.k for a, b in zip(self.stamps, self.starts[1:], strict=True)])


def plain_loop(name: str, args):
    """One iteration of the hand-written loop (a function of a batch) and its batches, over its own copy of the
    networks: the resident training tensor indexed in the data module's order."""
    model, data = tiny(name, args.data_dir, accelerator=args.accelerator)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    data.prepare_data()
    data.setup("fit")
    model.to(device).train()
    optimizers, _ = model.configure_optimizers()
    iteration = plain_update(model, optimizers)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision.startswith("bf16")
                else contextlib.nullcontext())

    def plain(x):
        with autocast:
            iteration(to_model_range(x))

    # Another order than the framework's (seed + 1): each variant gathers rows the other has not just read.
    loader = DeviceTensorLoader(data._tensors("train")[:1], data.hparams.batch_size, seed=data.hparams.seed + 1,
                                device=device)
    return plain, (x for (x,) in loader)


def paired_round(name: str, args) -> tuple[float, float, float]:
    """The plain loop's and the framework's median iteration times in ms over ``args.iterations`` interleaved
    iterations, and the median over the round's batches of their ratio (framework / plain, side by side)."""
    k = args.iterations_per_batch
    warmup, batches = -(-args.warmup // k), args.iterations // k  # in Lightning's batches
    timer = Interleaved(*plain_loop(name, args), warmup=warmup, iterations_per_batch=k)
    model, data = tiny(name, args.data_dir, k, args.accelerator)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):  # the progress bar
        trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=args.precision, max_epochs=1,
                            limit_train_batches=warmup + batches,
                            limit_val_batches=0, logger=CSVLogger(tmp), log_every_n_steps=50,
                            enable_model_summary=False,
                            callbacks=[timer, GANProgressBar(refresh_rate=20), Preemption(),
                                       ModelCheckpoint(dirpath=tmp, every_n_epochs=10, save_last=True)],
                            default_root_dir=tmp)
        trainer.fit(model, data)
    plain, framework = timer.seconds()
    assert len(framework) == len(plain) == batches, (len(framework), len(plain))
    return (1000 * statistics.median(plain), 1000 * statistics.median(framework),
            statistics.median(f / p for f, p in zip(framework, plain, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(TINY), choices=list(TINY))
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--warmup", type=int, default=20, help="iterations before the timed ones")
    parser.add_argument("--iterations", type=int, default=300, help="timed iterations per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations_per_batch", type=int, default=1,
                        help="the framework's data.iterations_per_batch: iterations per Lightning batch")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--precision", default="32-true", help="Lightning's precision; bf16-mixed: autocast in both")
    parser.add_argument("--out", default="benchmarks/results/host_overhead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = {}
    for name in args.models:
        ms: dict[str, list[float]] = {"plain": [], "framework": []}
        ratios: list[float] = []
        for r in range(args.rounds):
            plain, framework, ratio = paired_round(name, args)
            ms["plain"].append(plain)
            ms["framework"].append(framework)
            ratios.append(ratio)
            print(f"{name:6s} round {r}: plain {plain:7.3f} ms, framework {framework:7.3f} ms an iteration, "
                  f"paired ratio {ratio:.3f}x", flush=True)
        results[name] = {"config": CONFIGS[name], "ms": ms, "ratios": ratios,
                         "median_ms": {v: statistics.median(s) for v, s in ms.items()},
                         "framework_vs_plain": statistics.median(ratios)}

    machine = f"{platform.processor() or platform.machine()}, {args.threads} thread{'s' if args.threads > 1 else ''}"
    if args.accelerator == "gpu":
        machine += f", {torch.cuda.get_device_name()}"
    command = "python benchmarks/host_overhead.py " + " ".join(
        f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items())
    report = {"command": command, "date": datetime.date.today().isoformat(), "commit": commit(), "machine": machine,
              "torch": torch.__version__, "lightning": L.__version__, "width": int(WIDTH),
              "iterations_per_batch": args.iterations_per_batch, "accelerator": args.accelerator,
              "precision": args.precision, "models": results}
    lines = [f"Command: {command}",
             f"Date {report['date']}, commit {report['commit']}, {machine}, torch {torch.__version__}, "
             f"lightning {L.__version__}; {args.accelerator}, precision {args.precision}; networks 16 units wide, "
             "fused Adam, resident data; framework with "
             f"data.iterations_per_batch {args.iterations_per_batch}; {args.iterations} iterations after {args.warmup} "
             f"per round, interleaved; median over {args.rounds} rounds of each round's median (ratio: over its "
             "batches).", "",
             "| model (config) | plain loop, ms/iteration | framework, ms/iteration | framework / plain (paired) |",
             "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} ({r['config']}) | {r['median_ms']['plain']:.3f} | {r['median_ms']['framework']:.3f} | "
                     f"{r['framework_vs_plain']:.3f}x |")
    write_report(args.out, report, lines)


if __name__ == "__main__":
    main()
