"""Encoder probes along a training run, from the encoder at initialisation on: do the learnt features gain on pixels?

Trains ``--config`` (BiGAN by default) for ``--epochs`` with validation every ``--every`` epochs, where the
``EncoderProbe`` callback scores 1-NN and linear probes of E(x) and of the encoder's penultimate layer against
raw pixels (the BiGAN paper's protocol: test images against ``--n_train`` training images, Euclidean
distance). Before that it probes a freshly initialised model of the same config (seed ``--seed``): the
control that says how much of a probe's accuracy the training added.

Writes ``OUT.json`` (the raw probes per epoch, command, commit, machine and date) and ``OUT.md`` (the table).

    python benchmarks/probe_trajectory.py --epochs 20 --every 2                  # BiGAN on the CPU
    python benchmarks/probe_trajectory.py --epochs 400 --every 20 --accelerator gpu
"""
import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_table import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["probe_1nn", "probe_1nn_penultimate", "probe_1nn_pixels", "probe_linear", "probe_linear_penultimate",
           "probe_linear_pixels", "reconstruction_mse"]


def probes_at_initialisation(ckpt: Path, seed: int, n_train: int, linear: bool) -> dict:
    """The probes of a model built from ``ckpt``'s hyperparameters with fresh weights (``torch.manual_seed(seed)``)."""
    import torch

    from gan_lightning.callbacks.probes import model_probe_scores
    from gan_lightning.commands import load_model

    trained, dm = load_model(str(ckpt), "cpu")
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(seed)
    return model_probe_scores(type(trained)(**trained.hparams).eval(), dm, n_train, linear=linear)


def callbacks_overlay(n_train: int, linear: bool) -> dict:
    """The run's callbacks: the probes at every validation, a last checkpoint, and nothing that draws or samples."""
    return {"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
        {"class_path": "gan_lightning.callbacks.EncoderProbe",
         "init_args": {"n_train": n_train, "every_n_epochs": 1, "linear": linear, "penultimate": True}},
    ]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/bigan.yaml")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--every", type=int, default=2, help="probe every this many epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_train", type=int, default=10_000)
    p.add_argument("--no_linear", action="store_true", help="1-NN only (the linear probes take most of the time)")
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--limit_train_batches", type=int, default=None, help="cap iterations per epoch (tests)")
    p.add_argument("--data_dir", default=str(REPO / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bigan_probe_trajectory"))
    args = p.parse_args()
    linear = not args.no_linear
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        run_dir, overlay = Path(tmp) / "run", Path(tmp) / "callbacks.yaml"
        overlay.write_text(yaml.safe_dump(callbacks_overlay(args.n_train, linear)))
        seed = str(args.seed)
        fit = [sys.executable, "-m", "gan_lightning", "fit", "--config", args.config, "--config", str(overlay),
               "--run_dir", str(run_dir), "--seed_everything", seed, "--model.init_args.seed", seed,
               "--data.init_args.seed", seed, "--data.init_args.data_dir", args.data_dir,
               "--trainer.max_epochs", str(args.epochs), "--trainer.check_val_every_n_epoch", str(args.every),
               "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
               "--trainer.accelerator", args.accelerator, "--trainer.precision", args.precision,
               "--trainer.enable_progress_bar", "false", "--wandb.mode", "off"]
        if args.limit_train_batches:
            fit += ["--trainer.limit_train_batches", str(args.limit_train_batches)]
        proc = subprocess.run(fit, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(fit)} failed:\n{proc.stderr[-3000:]}")
        rows = [r for r in csv.DictReader(open(next(run_dir.glob("**/metrics.csv")))) if r.get("val/probe_1nn")]
        trajectory = [{"epoch": int(r["epoch"]) + 1, **{k: float(r[f"val/{k}"]) for k in COLUMNS if r.get(f"val/{k}")}} for r in rows]
        at_init = probes_at_initialisation(next(run_dir.glob("**/last.ckpt")), args.seed, args.n_train, linear)
    trajectory.insert(0, {"epoch": 0, **at_init})

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    header = {"command": " ".join(["python", "benchmarks/probe_trajectory.py", *sys.argv[1:]]),
              "commit": os.environ.get("GIT_COMMIT") or commit.strip(), "machine": machine(args.accelerator),
              "date": datetime.date.today().isoformat(), "config": args.config, "seed": args.seed,
              "n_train": args.n_train, "distance": "euclidean"}
    out.with_suffix(".json").write_text(json.dumps({"header": header, "trajectory": trajectory}, indent=2) + "\n")
    pct = lambda row, key: f"{100 * row[key]:.1f} %" if key in row else "-"  # noqa: E731
    lines = [f"Command: `{header['command']}`, commit {header['commit']}, {header['machine']}, {header['date']}. "
             f"Probes of {args.n_train:,} training images against the test split; epoch 0 is the model at "
             "initialisation (fresh weights, same seed).", "",
             "| epoch | 1-NN E(x) | 1-NN penultimate | 1-NN pixels | linear E(x) | linear penultimate | linear pixels |",
             "|---|---|---|---|---|---|---|"]
    pixels = {k: v for k, v in trajectory[0].items() if k.endswith("_pixels")}
    for row in trajectory:
        row = {**pixels, **row}  # the callback scores pixels once, at its first probe
        lines.append(f"| {row['epoch']} | " + " | ".join(pct(row, k) for k in COLUMNS[:6]) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
