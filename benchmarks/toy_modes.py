"""Mode coverage of GAN, ALI and BiGAN (plain, with Su's losses, packed) on PacGAN's ring and grid, over seeds.

Each run is ``python -m gan_lightning fit --config configs/toy/{model}_{data}[_su].yaml`` (PacGAN's setup:
its networks, initialisation, batch norm, update order and optimiser; budget 400 epochs) for ``--epochs``
epochs of 1,000 iterations (100,000 points at batch 100), measured at the end with the ModeCoverage callback
(2,500 samples, PacGAN's protocol). Packed variants (PacGAN2/3/4) keep 100 packed inputs of D per iteration:
batch 100 m and m times the epochs, so every row has the same iterations. Runs go in parallel, one thread
each. Writes the raw runs as JSON and a Markdown table (mean +- std over seeds, with each row's budget)
beside PacGAN's Table 1 (mean +- standard error over 10 trials, 400,000 iterations).

    python benchmarks/toy_modes.py --epochs 40                   # 3 seeds, 40,000 iterations, 2 parallel jobs
    python benchmarks/toy_modes.py --epochs 400 --jobs 18        # the paper's budget (a GPU node's CPUs)
"""
import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# PacGAN Table 1 (Lin et al. 2018; mean over 10 trials of 400 epochs): (modes, high-quality %, reverse KL)
ANCHORS = {
    "ring": {"GAN": (6.3, 98.2, 0.45), "ALI": (6.6, 97.6, 0.36), "PacGAN2": (7.9, 95.6, 0.07),
             "PacGAN3": (7.8, 97.7, 0.10), "PacGAN4": (7.8, 95.9, 0.07)},
    "grid": {"GAN": (17.3, 94.8, 0.70), "ALI": (24.1, 95.7, 0.14), "PacGAN2": (23.8, 91.3, 0.13),
             "PacGAN3": (24.6, 94.2, 0.06), "PacGAN4": (24.8, 93.6, 0.04)},
}


def recipe_args(recipe: str, epochs: int, model: str) -> list[str]:
    """Command-line overrides of a named training recipe; ``paper`` is the configs as they are."""
    if recipe == "paper":
        return []
    if recipe == "fast":  # lr 1e-3 decayed to 0 by a cosine over the run, and an EMA of G (and E)
        cosine, args = "torch.optim.lr_scheduler.CosineAnnealingLR", ["--model.init_args.ema_decay", "0.999"]
        for player in ("d", "g" if model == "gan" else "ge"):
            args += [f"--model.init_args.optimizer_{player}.init_args.lr", "0.001",
                     f"--model.init_args.scheduler_{player}.class_path", cosine,
                     f"--model.init_args.scheduler_{player}.init_args.T_max", str(epochs)]
        return args
    raise ValueError(f"unknown recipe {recipe!r}")


def packed(m: int) -> list[str]:
    """PacGAN-m: D scores m samples at a time, 100 packed inputs per iteration (``num_packing`` in its config)."""
    return ["--model.init_args.pack", str(m), "--data.init_args.batch_size", str(100 * m)]


# variant -> (config suffix, overrides, name suffix in the table, epochs per 1,000-iteration epoch)
VARIANTS = {
    "plain": ("", [], "", 1),
    "su": ("_su", [], " + Su", 1),  # GAN: Su's regulariser; ALI/BiGAN: eq. 41's loss as well
    # ALI/BiGAN only; eq. 40's encoder term needs a density, so ALI's encoder is Gaussian there
    "su_full": ("_su", ["--model.init_args.loss", "su_full"], " + Su, eq. 40", 1),
    # The update order (every toy config: simultaneous, as PacGAN's ali_algorithm).
    "simultaneous": ("", ["--model.init_args.update", "simultaneous"], ", simultaneous", 1),
    "alternating": ("", ["--model.init_args.update", "alternating"], ", alternating", 1),
    "pack2": ("", packed(2), " (PacGAN2)", 2),
    "pack3": ("", packed(3), " (PacGAN3)", 3),
    "pack4": ("", packed(4), " (PacGAN4)", 4),
}


def run(config: Path, seed: int, epochs: int, workdir: Path, extra: list[str] = (), variant: str = "") -> dict:
    """Train one config with one seed for ``epochs`` epochs of its data; return the final mode-coverage figures."""
    label = config.stem + (f"[{variant}]" if variant else "")
    if variant == "su_full" and config.stem.startswith("ali"):
        extra = [*extra, "--model.init_args.encoder", "gaussian"]
    root = workdir / f"{label}_seed{seed}"
    cmd = [sys.executable, "-m", "gan_lightning", "fit", "--config", str(config),
           "--seed_everything", str(seed), "--model.init_args.seed", str(seed), "--data.init_args.seed", str(seed),
           "--trainer.max_epochs", str(epochs), "--trainer.check_val_every_n_epoch", str(epochs),
           "--trainer.num_sanity_val_steps", "0", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    root.mkdir(parents=True)  # the config's relative output folders land in here
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{config.name} seed {seed} failed:\n{proc.stderr[-2000:]}")
    logs = next(root.glob("runs/toy/*/logs/version_*"))
    rows = list(csv.DictReader(open(logs / "metrics.csv")))
    final = [r for r in rows if r.get("val/modes")][-1]
    resolved = yaml.safe_load((logs / "config.yaml").read_text())["model"]["init_args"]  # as the run resolved it
    return {"config": label, "seed": seed, "epochs": epochs, "iterations": int(float(final["iteration"])),
            "loss": resolved["loss"], "update": resolved.get("update"), "pack": resolved.get("pack", 1),
            "encoder": resolved.get("encoder"), "init_std": resolved.get("init_std"),
            "modes": float(final["val/modes"]),
            "high_quality": float(final["val/high_quality"]), "reverse_kl": float(final["val/reverse_kl"])}


def stat(results: list[dict], key: str, scale: float = 1.0) -> str:
    """Mean +- standard deviation of ``key`` over the seeds' results, times ``scale``."""
    values = [r[key] * scale for r in results]
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values) if len(values) > 1 else 0:.2f}"


def summarise(results: list[dict]) -> str:
    lines = ["| model | data | iterations | seeds | modes | high-quality % | reverse KL "
             "| PacGAN Table 1 (modes / HQ % / reverse KL, 400,000 iterations) |", "|---|---|---|---|---|---|---|---|"]
    for config in sorted({r["config"] for r in results}, key=lambda c: (c.split("_")[1], c)):
        rs = [r for r in results if r["config"] == config]
        model, data = config.split("_")[0], config.split("_")[1].split("[")[0]
        variant = config.split("[")[1].rstrip("]") if "[" in config else ("su" if config.endswith("_su") else "plain")
        name = {"gan": "GAN", "ali": "ALI", "bigan": "BiGAN"}[model] + VARIANTS[variant][2]
        anchors = ", ".join(f"{k} {m} / {h} / {kl}" for k, (m, h, kl) in ANCHORS[data].items())
        iterations = "/".join(str(i) for i in sorted({r.get("iterations", r["epochs"] * 1000) for r in rs}))
        lines.append(f"| {name} | {data} | {iterations} | {len(rs)} | {stat(rs, 'modes')} "
                     f"| {stat(rs, 'high_quality', 100)} | {stat(rs, 'reverse_kl')} | {anchors} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gan", "ali", "bigan"])
    parser.add_argument("--datasets", nargs="+", default=["ring", "grid"])
    parser.add_argument("--variants", nargs="+", default=["plain", "su"], choices=list(VARIANTS),
                        help="su_full (Su's eq. 40 with the encoder's term) applies to ALI and BiGAN only")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit_train_batches", type=int, default=None, help="iterations per epoch (tests)")
    parser.add_argument("--recipe", default="paper", choices=["paper", "fast"],
                        help="paper: the configs' settings (Adam 1e-4); fast: lr 1e-3 with a cosine decay and an EMA")
    parser.add_argument("--out", default="benchmarks/results/toy_modes")
    parser.add_argument("--from_log", default=None,
                        help="write the table of the runs a stopped benchmark printed to this log (its JSON lines)")
    args = parser.parse_args()

    revision = commit()
    if args.from_log:
        lines = Path(args.from_log).read_text().splitlines()
        results = sorted((json.loads(line) for line in lines if line.startswith("{")),
                         key=lambda r: (r["config"], r["seed"]))
        args.seeds = sorted({r["seed"] for r in results})
        return write(args, revision, results, f"the runs printed to {args.from_log} ({len(results)} finished)")
    runs = [(REPO / "configs" / "toy" / f"{m}_{d}{VARIANTS[v][0]}.yaml", v)
            for m in args.models for d in args.datasets for v in args.variants if not (m == "gan" and v == "su_full")]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        limit = ["--trainer.limit_train_batches", str(args.limit_train_batches)] if args.limit_train_batches else []
        # seed by seed, so that a stopped benchmark leaves whole seeds in its log
        futures = {pool.submit(run, c, s, args.epochs * VARIANTS[v][3], Path(tmp),
                               recipe_args(args.recipe, args.epochs, c.stem.split("_")[0]) + limit + VARIANTS[v][1],
                               v if VARIANTS[v][1] else ""): (i, s)  # named when the config alone does not say it
                   for s in args.seeds for i, (c, v) in enumerate(runs)}
        for f in as_completed(futures):
            print(json.dumps(f.result()), flush=True)
        results = [f.result() for f in sorted(futures, key=futures.get)]
    write(args, revision, results, "every run finished")


def write(args: argparse.Namespace, revision: str, results: list[dict], runs: str) -> None:
    """The raw runs as JSON and the Markdown table, both under ``args.out``."""
    header = (f"Command: python benchmarks/toy_modes.py {' '.join(sys.argv[1:])} ({runs})\n"
              f"Date {datetime.date.today()}, "
              f"commit {revision}, {os.cpu_count()} CPU cores, one thread per run; {args.epochs} epochs of "
              f"1,000 iterations (100 inputs of D each; the configs' budget is 400); seeds {args.seeds}; "
              f"recipe {args.recipe}; PacGAN's protocol: 2,500 samples per measurement, high quality within 3 std, "
              "reverse KL over the high-quality samples.\n")
    table = summarise(results)
    Path(args.out + ".json").parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"args": vars(args), "commit": revision,
                                                    "results": results}, indent=2))
    Path(args.out + ".md").write_text(header + "\n" + table + "\n")
    print("\n" + header + "\n" + table)


if __name__ == "__main__":
    main()
