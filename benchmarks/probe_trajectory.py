"""Encoder probes along a training run, from the encoder at initialisation on: do the learnt features gain on pixels?

Trains ``--config`` (BiGAN by default) for ``--epochs`` with validation every ``--every`` epochs, where the
``EncoderProbe`` callback scores 1-NN and linear probes of E(x) and of the encoder's penultimate layer against
raw pixels (the BiGAN paper's protocol: test images against ``--n_train`` training images, Euclidean
distance; logged as ``test/probe_*``, a measurement, not a figure to choose checkpoints by). Before that it
probes a freshly initialised model of the same config (seed ``--seed``): the control that says how much of a
probe's accuracy the training added.

Writes ``OUT.json`` (the raw probes per epoch, command, commit, machine and date) and ``OUT.md`` (the table). At
initialisation and at the end of a complete run, each feature set's 1-NN classifier is also paired with the pixels'
on the same test images (McNemar's exact test: ``probe_1nn*_vs_pixels_p``): a lead of a few tenths of a point is
within a 10,000-image test set's noise unless the test says otherwise.

    python benchmarks/probe_trajectory.py --epochs 20 --every 2                  # BiGAN on the CPU
    python benchmarks/probe_trajectory.py --epochs 400 --every 20 --accelerator gpu
    python benchmarks/probe_trajectory.py --epochs 200 --every 20 --accelerator gpu --schedule 100 100 \\
        --run_dir runs/traj

With ``--run_dir`` the run is resumable: SIGTERM (or SLURM's warning) saves ``last.ckpt`` at an iteration boundary
and the script writes the trajectory so far, marked incomplete; the same command again resumes from it.
"""
import argparse
import csv
import datetime
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit, machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["probe_1nn", "probe_1nn_penultimate", "probe_1nn_pixels", "probe_linear", "probe_linear_penultimate",
           "probe_linear_pixels", "reconstruction_mse"]


def checkpoint_probes(ckpt: Path, seed: int, n_train: int, linear: bool, at_initialisation: bool) -> tuple:
    """The probes of the run's end, from one load of ``ckpt``:

    - the control, when ``at_initialisation``: a model built from the checkpoint's hyperparameters with fresh
      weights (``torch.manual_seed(seed)``), every probe;
    - the trained model's 1-NN probes beside the pixels' on the same test images, with McNemar's exact test
      (``*_vs_pixels_p``, ``*_vs_pixels_discordant``): is a lead over pixels more than the test set's noise?
    """
    import torch

    from gan_lightning.callbacks.probes import model_probe_scores
    from gan_lightning.commands import load_model

    trained, dm = load_model(str(ckpt), "cuda" if torch.cuda.is_available() else "cpu")
    dm.prepare_data()
    dm.setup("fit")
    at_init = None
    if at_initialisation:
        torch.manual_seed(seed)
        fresh = type(trained)(**trained.hparams).to(trained.device).eval()
        at_init = {"epoch": 0, **model_probe_scores(fresh, dm, n_train, linear=linear)}
    final = model_probe_scores(trained.eval(), dm, n_train, linear=False)
    return at_init, {k: v for k, v in final.items() if k.startswith("probe_1nn")}


def paired_line(paired: dict, label: str) -> str:
    """One sentence per feature set: accuracy against pixels, the discordant images and the p-value."""
    parts = []
    for suffix, name in (("", "E(x)"), ("_penultimate", "penultimate")):
        if f"probe_1nn{suffix}_vs_pixels_p" in paired:
            parts.append(f"{name} {100 * paired[f'probe_1nn{suffix}']:.2f} % against pixels' "
                         f"{100 * paired['probe_1nn_pixels']:.2f} %, "
                         f"{paired[f'probe_1nn{suffix}_vs_pixels_discordant']:.0f} "
                         f"discordant test images, p = {paired[f'probe_1nn{suffix}_vs_pixels_p']:.3g}")
    return f"{label}, 1-NN paired with pixels on the same test images (McNemar's exact test): " + "; ".join(parts) + "."


def callbacks_overlay(n_train: int, linear: bool, checkpoints: Path) -> dict:
    """The run's callbacks: the probes at every validation, a last checkpoint in ``checkpoints`` after every
    epoch (where a resume finds it; Lightning would otherwise save only at the validations, ``--every`` epochs
    apart), saving on SIGTERM, and nothing that draws or samples."""
    return {"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(checkpoints), "save_last": True, "enable_version_counter": False,
                       "save_on_train_epoch_end": True}},
        {"class_path": "gan_lightning.callbacks.Preemption"},
        {"class_path": "gan_lightning.callbacks.EncoderProbe",   # the papers' protocol: scored on the test split
         "init_args": {"n_train": n_train, "every_n_epochs": 1, "linear": linear, "penultimate": True,
                       "split": "test"}},
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
    p.add_argument("--schedule", type=int, nargs=2, metavar=("CONSTANT", "DECAY"), default=None,
                   help="both players' ConstantThenDecay epochs (BiGAN's config: 200 200), for a shorter schedule")
    p.add_argument("--run_dir", default=None,
                   help="keep the run here and resume it if it has a last.ckpt (default: a temporary folder)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bigan_probe_trajectory"))
    args = p.parse_args()
    linear = not args.no_linear
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        run_dir, overlay = Path(args.run_dir or Path(tmp) / "run").resolve(), Path(tmp) / "callbacks.yaml"
        checkpoints = run_dir / "checkpoints"
        overlay.write_text(yaml.safe_dump(callbacks_overlay(args.n_train, linear, checkpoints)))
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
        if args.schedule:
            for player in ("d", "ge"):
                fit += [f"--model.init_args.scheduler_{player}.init_args.constant_epochs", str(args.schedule[0]),
                        f"--model.init_args.scheduler_{player}.init_args.decay_epochs", str(args.schedule[1])]
        resumed = (checkpoints / "last.ckpt").exists()
        if resumed:
            fit += ["--ckpt_path", str(checkpoints / "last.ckpt")]
        start = time.monotonic()
        proc = subprocess.Popen(fit, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for signum in (signal.SIGTERM, signal.SIGUSR1):  # to the fit, whose Preemption callback saves and stops
            signal.signal(signum, lambda received, frame: proc.send_signal(received))
        proc.stdout, proc.stderr = proc.communicate()
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(fit)} failed:\n{proc.stderr[-3000:]}")
        stopped = "received: saved" in proc.stdout + proc.stderr  # the Preemption callback's line
        rows = {}  # every log of the run (a resume starts a new CSV version), later epochs' rows last
        for log in sorted(run_dir.glob("**/metrics.csv"), key=lambda f: f.stat().st_mtime):
            for r in csv.DictReader(open(log)):
                if r.get("test/probe_1nn"):
                    rows[int(r["epoch"]) + 1] = r
        trajectory = [{"epoch": epoch, **{k: float(r[f"test/{k}"]) for k in COLUMNS if r.get(f"test/{k}")}}
                      for epoch, r in sorted(rows.items())]
        # The epoch-0 control: from an earlier part of this run if there is one; a stopped part skips it (a
        # preempted job has seconds left), and the part that completes the run computes it.
        written = out.with_suffix(".json")
        earlier = json.loads(written.read_text()) if resumed and written.exists() else {}
        if earlier.get("header", {}).get("run_dir") != str(run_dir):
            earlier = {}
        at_init = next((row for row in earlier.get("trajectory", []) if row["epoch"] == 0), None)
        final = None
        if not stopped:
            control, final = checkpoint_probes(checkpoints / "last.ckpt", args.seed, args.n_train, linear,
                                               at_initialisation=at_init is None)
            at_init = at_init or control
    trajectory = ([at_init] if at_init else []) + trajectory

    header = {"command": " ".join(["python", "benchmarks/probe_trajectory.py", *sys.argv[1:]]),
              "commit": commit(), "machine": machine(args.accelerator),
              "date": datetime.date.today().isoformat(), "config": args.config, "seed": args.seed,
              "n_train": args.n_train, "distance": "euclidean", "schedule": args.schedule,
              "complete": not stopped, "resumed": resumed, "run_dir": args.run_dir and str(run_dir),
              "fit_seconds": seconds + earlier.get("header", {}).get("fit_seconds", 0.0)}  # every part's time
    result = {"header": header, "trajectory": trajectory, "final_paired_with_pixels": final}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    pct = lambda row, key: f"{100 * row[key]:.1f} %" if key in row else "-"  # noqa: E731
    lines = [f"Command: `{header['command']}`, commit {header['commit']}, {header['machine']}, {header['date']}. "
             f"Probes of {args.n_train:,} training images against the test split; epoch 0 is the model at "
             "initialisation (fresh weights, same seed)."
             + (f" Schedule: {args.schedule[0]} constant + {args.schedule[1]} decaying epochs."
                if args.schedule else "")
             + f" Fit time {header['fit_seconds']:.0f} s."
             + ("" if header["complete"] else " INCOMPLETE: stopped by a signal; rerun the command to resume."), "",
             "| epoch | 1-NN E(x) | 1-NN penultimate | 1-NN pixels "
             "| linear E(x) | linear penultimate | linear pixels |",
             "|---|---|---|---|---|---|---|"]
    pixels = {k: v for k, v in (trajectory[0] if trajectory else {}).items() if k.endswith("_pixels")}
    for row in trajectory:
        row = {**pixels, **row}  # the callback scores pixels once, at its first probe
        lines.append(f"| {row['epoch']} | " + " | ".join(pct(row, k) for k in COLUMNS[:6]) + " |")
    if at_init and "probe_1nn_vs_pixels_p" in at_init:
        lines += ["", paired_line(at_init, "Epoch 0 (initialisation)")]
    if final:
        # final: only when all --epochs ran
        lines += ["", paired_line(final, f"Epoch {args.epochs} (the last checkpoint)")]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
