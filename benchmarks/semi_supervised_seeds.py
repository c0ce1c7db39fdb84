"""A semi-supervised config over training seeds: the spread that any change to it has to stand out from.

Fits ``--config`` (``configs/aae_semi_100.yaml`` by default) once per seed in ``--seeds`` (``seed_everything`` and
``model.seed``; the labelled images stay the config's, ``data.seed``), for ``--epochs`` epochs, with
``--overrides`` (CLI arguments, the same for every seed) applied to all of them. Then it tests each run's
``last.ckpt`` on the official test split. The model's own ``val/error`` is read from every epoch's validation
(6,000 held-out training images), ``test/error`` from the test. Errors are the model's q(y|x): no feature
extractor.

Each run lives in ``RUN_ROOT/<name>_seed<k>`` and is resumed from its ``last.ckpt`` when the command runs again
(SIGTERM saves one at an iteration boundary), so a long sweep can run in parts. Runs go ``--jobs`` at a time, one
CPU thread each on the CPU.

Writes ``OUT.json`` (every epoch's validation error and the test error per seed, command, commit, machine, date)
and ``OUT.md`` (the table, with the mean and sample standard deviation over seeds).

    python benchmarks/semi_supervised_seeds.py --seeds 1 2 --epochs 30                      # the config, 2 seeds
    python benchmarks/semi_supervised_seeds.py --name noise03 --overrides \\
        --model.init_args.input_noise 0.3 --model.init_args.optimizer_c.init_args.lr 0.0001   # a variant
"""
import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit, machine  # noqa: E402
from semi_supervised_baselines import mean_sd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def logged(run_dir: Path, key: str) -> dict[int, float]:
    """``key`` by epoch over every CSV log in ``run_dir`` (a resume starts a new version, and `test` of a checkpoint
    logs into ``test/<its name>/logs``; later wins)."""
    values = {}
    logs = [*run_dir.glob("logs/*/metrics.csv"), *run_dir.glob("test/*/logs/*/metrics.csv")]
    for log in sorted(logs, key=lambda f: f.stat().st_mtime):
        for row in csv.DictReader(open(log)):
            if row.get(key):
                values[int(row["epoch"])] = float(row[key])
    return values


def run_seed(args: argparse.Namespace, seed: int) -> dict:
    """Fit (or resume) one seed's run, test its last checkpoint, and read its errors back from the logs."""
    run_dir = Path(args.run_root).resolve() / f"{args.name}_seed{seed}"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    common = ["--config", args.config, "--run_dir", str(run_dir), "--data.init_args.data_dir", args.data_dir,
              "--trainer.accelerator", args.accelerator, "--trainer.enable_progress_bar", "false",
              "--wandb.mode", "off", "--seed_everything", str(seed), "--model.init_args.seed", str(seed),
              *args.overrides]
    fit = [sys.executable, "-m", "gan_lightning", "fit", *common, "--trainer.max_epochs", str(args.epochs)]
    if args.limit_train_batches:
        fit += ["--trainer.limit_train_batches", str(args.limit_train_batches)]
    if ckpt.exists():
        fit += ["--ckpt_path", str(ckpt)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.accelerator == "cpu" and args.jobs > 1 else None
    start = time.monotonic()
    proc = subprocess.run(fit, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(fit)} failed:\n{proc.stderr[-3000:]}")
    stopped = "received: saved" in proc.stdout + proc.stderr  # the Preemption callback's line
    test = [sys.executable, "-m", "gan_lightning", "test", *common, "--ckpt_path", str(ckpt)]
    if args.limit_test_batches:
        test += ["--trainer.limit_test_batches", str(args.limit_test_batches)]
    proc = subprocess.run(test, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(test)} failed:\n{proc.stderr[-3000:]}")
    val, tested = logged(run_dir, "val/error"), logged(run_dir, "test/error")
    epochs = max(val) + 1 if val else 0
    print(f"seed {seed}: {epochs} epochs, test error {100 * tested[max(tested)]:.2f} %", flush=True)
    return {"seed": seed, "run_dir": str(run_dir), "epochs_completed": epochs, "complete": not stopped,
            "val_error_by_epoch": {e: val[e] for e in sorted(val)}, "best_val_error": min(val.values(), default=None),
            "test_error": tested[max(tested)], "fit_seconds_this_part": round(seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/aae_semi_100.yaml")
    p.add_argument("--name", default="config", help="the runs' name (RUN_ROOT/<name>_seed<k>); e.g. the variant's")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--jobs", type=int, default=2, help="runs at once (one CPU thread each on the CPU)")
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--limit_train_batches", type=int, default=None, help="iterations per epoch (tests)")
    p.add_argument("--limit_test_batches", type=int, default=None, help="test batches (tests)")
    p.add_argument("--data_dir", default=str(REPO / "data"))
    p.add_argument("--run_root", default=str(REPO / "runs" / "semi_supervised_seeds"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "aae_semi_100_seeds"))
    p.add_argument("--overrides", nargs=argparse.REMAINDER, default=[],
                   help="CLI arguments for every seed's fit and test (last on the command line)")
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda seed: run_seed(args, seed), args.seeds))

    header = {"command": " ".join(["python", "benchmarks/semi_supervised_seeds.py", *sys.argv[1:]]),
              "commit": commit(), "machine": machine(args.accelerator), "date": datetime.date.today().isoformat(),
              "config": args.config, "overrides": args.overrides, "epochs": args.epochs,
              "errors": "fractions; val: the data module's held-out training images, every epoch; test: the test "
                        "split, on last.ckpt"}
    tests = [r["test_error"] for r in runs]
    out.with_suffix(".json").write_text(json.dumps({"header": header, "runs": runs}, indent=2) + "\n")
    pct = lambda v: "-" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    lines = [f"Command: `{header['command']}`, commit {header['commit']}, {header['machine']}, {header['date']}. "
             f"`{args.config}`" + (f" with `{' '.join(args.overrides)}`" if args.overrides else "")
             + "; errors of the model's own q(y|x).", "",
             "| seed | epochs | best val error | last val error | test error |", "|---|---|---|---|---|"]
    for r in runs:
        last = r["val_error_by_epoch"][max(r["val_error_by_epoch"])] if r["val_error_by_epoch"] else None
        lines.append(f"| {r['seed']} | {r['epochs_completed']}{'' if r['complete'] else ' (stopped)'} | "
                     f"{pct(r['best_val_error'])} | {pct(last)} | {pct(r['test_error'])} |")
    lines.append(f"| mean +- sd | | {mean_sd([r['best_val_error'] for r in runs if r['best_val_error'] is not None])}"
                 f" | | **{mean_sd(tests)}** |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
