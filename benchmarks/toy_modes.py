"""Mode coverage of GAN, ALI and BiGAN (plain and with Su's losses) on PacGAN's ring and grid, over seeds.

Each run is ``python -m gan_lightning fit --config configs/toy/{model}_{data}[_su].yaml`` for a
number of iterations (1,000 per epoch of 100,000 points at batch 100), measured at the end with the
ModeCoverage callback (2,500 samples, PacGAN's protocol). Runs go in parallel, one thread each.
Writes the raw runs as JSON and a Markdown table (mean +- std over seeds) with the published anchors.

    python benchmarks/toy_modes.py                               # 3 seeds, 3 epochs, 2 parallel jobs
    python benchmarks/toy_modes.py --seeds 0 1 2 3 4 --epochs 10 # a longer study
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# PacGAN Table 1 (Lin et al. 2018) and VEEGAN (Srivastava et al. 2017): (modes, high-quality %)
ANCHORS = {
    "ring": {"GAN": (6.3, 98.2), "ALI": (6.6, 97.6), "VEEGAN": (8, 52.9)},
    "grid": {"GAN": (17.3, 94.8), "ALI": (24.1, 95.7), "PacGAN4": (24.8, 93.6), "VEEGAN": (24.6, 40.0)},
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


# variant -> (config suffix, overrides, name suffix in the table)
VARIANTS = {
    "plain": ("", [], ""),
    "su": ("_su", [], " + Su"),  # GAN: Su's regulariser; ALI/BiGAN: eq. 41's loss as well
    "su_full": ("_su", ["--model.init_args.loss", "su_full"], " + Su, eq. 40"),  # ALI/BiGAN only
    # The update order (ALI/BiGAN configs: simultaneous, as their released code; GAN's: alternating).
    "simultaneous": ("", ["--model.init_args.update", "simultaneous"], ", simultaneous"),
    "alternating": ("", ["--model.init_args.update", "alternating"], ", alternating"),
}


def run(config: Path, seed: int, epochs: int, workdir: Path, extra: list[str] = (), variant: str = "") -> dict:
    """Train one config with one seed; return the final validation's mode-coverage figures."""
    label = config.stem + (f"[{variant}]" if variant else "")
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
    return {"config": label, "seed": seed, "epochs": epochs, "loss": resolved["loss"],
            "update": resolved.get("update"), "modes": float(final["val/modes"]),
            "high_quality": float(final["val/high_quality"]), "reverse_kl": float(final["val/reverse_kl"])}


def stat(results: list[dict], key: str, scale: float = 1.0) -> str:
    """Mean +- standard deviation of ``key`` over the seeds' results, times ``scale``."""
    values = [r[key] * scale for r in results]
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values) if len(values) > 1 else 0:.2f}"


def summarise(results: list[dict]) -> str:
    lines = ["| model | data | modes | high-quality % | reverse KL | published (modes / HQ %) |",
             "|---|---|---|---|---|---|"]
    for config in sorted({r["config"] for r in results}, key=lambda c: (c.split("_")[1], c)):
        rs = [r for r in results if r["config"] == config]
        model, data = config.split("_")[0], config.split("_")[1].split("[")[0]
        variant = config.split("[")[1].rstrip("]") if "[" in config else ("su" if config.endswith("_su") else "plain")
        name = {"gan": "GAN", "ali": "ALI", "bigan": "BiGAN"}[model] + VARIANTS[variant][2]
        anchors = ", ".join(f"{k} {m} / {h}" for k, (m, h) in ANCHORS[data].items())
        lines.append(f"| {name} | {data} | {stat(rs, 'modes')} | {stat(rs, 'high_quality', 100)} "
                     f"| {stat(rs, 'reverse_kl')} | {anchors} |")
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
    args = parser.parse_args()

    revision = commit()
    runs = [(REPO / "configs" / "toy" / f"{m}_{d}{VARIANTS[v][0]}.yaml", v)
            for m in args.models for d in args.datasets for v in args.variants if not (m == "gan" and v == "su_full")]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        limit = ["--trainer.limit_train_batches", str(args.limit_train_batches)] if args.limit_train_batches else []
        futures = [pool.submit(run, c, s, args.epochs, Path(tmp),
                               recipe_args(args.recipe, args.epochs, c.stem.split("_")[0]) + limit + VARIANTS[v][1],
                               v if VARIANTS[v][1] else "")  # named when the config alone does not say it
                   for c, v in runs for s in args.seeds]
        results = []
        for f in futures:
            results.append(f.result())
            print(json.dumps(results[-1]), flush=True)

    header = (f"Command: python benchmarks/toy_modes.py {' '.join(sys.argv[1:])}\nDate {datetime.date.today()}, "
              f"commit {revision}, {os.cpu_count()} CPU cores, one thread per run; {args.epochs} epochs of "
              f"1,000 iterations (batch 100); seeds {args.seeds}; recipe {args.recipe}; "
              "2,500 samples per measurement.\n")
    table = summarise(results)
    Path(args.out + ".json").parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"args": vars(args), "commit": revision,
                                                    "results": results}, indent=2))
    Path(args.out + ".md").write_text(header + "\n" + table + "\n")
    print("\n" + header + "\n" + table)


if __name__ == "__main__":
    main()
