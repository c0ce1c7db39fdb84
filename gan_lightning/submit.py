"""``python -m gan_lightning submit``: sbatch one of the scripts in slurm/ with the resources on the command line.

    python -m gan_lightning submit --config configs/bigan.yaml --nodes 2 --gpus-per-node 4 --time 4:00:00
    python -m gan_lightning submit --config configs/bigan.yaml --seeds 0 1 2          # an array over seeds
    python -m gan_lightning submit --config configs/bigan.yaml --dry-run -- --run_dir runs/bigan-b64 \\
        --data.init_args.batch_size 64                                              # options after -- go to fit

A thin layer: it picks train.sbatch, multinode.sbatch or array.sbatch and passes sbatch's own options,
which override the scripts' #SBATCH lines; everything else is in the scripts.
"""
import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path


def sbatch_command(args: argparse.Namespace, fit_options: list[str]) -> tuple[list[str], dict[str, str]]:
    """The sbatch command line and the extra environment for these arguments."""
    env = {}
    if args.seeds:
        script = "array.sbatch"
        env["SEEDS"] = " ".join(str(s) for s in args.seeds)
        options = [f"--array=0-{len(args.seeds) - 1}"]
    else:
        script = "multinode.sbatch" if args.nodes > 1 else "train.sbatch"
        options = []
    options += [f"--nodes={args.nodes}", f"--ntasks-per-node={max(args.gpus_per_node, 1)}",
                f"--gres=gpu:{args.gpus_per_node}" if args.gpus_per_node else "--gres=none", f"--time={args.time}"]
    if args.cpus_per_task:
        options.append(f"--cpus-per-task={args.cpus_per_task}")
    options += [f"--{name}={value}" for name, value in (("partition", args.partition), ("account", args.account),
                                                         ("job-name", args.job_name)) if value]
    return ["sbatch", *options, f"slurm/{script}", args.config, *fit_options], env


def main(argv: list[str]) -> None:
    fit_options = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m gan_lightning submit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the experiment's YAML")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=1, help="one task per GPU; 0 runs one task on CPUs")
    parser.add_argument("--cpus-per-task", type=int, default=None)
    parser.add_argument("--time", default="04:00:00", help="the job's limit; it requeues itself 90 s before")
    parser.add_argument("--seeds", type=int, nargs="+", help="an array job, one member per seed")
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--job-name")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch command instead of running it")
    args = parser.parse_args(argv)
    if not Path("slurm/train.sbatch").is_file():
        parser.error("run it from the repository's root (where slurm/ is): the jobs run there")
    if not Path(args.config).is_file():
        parser.error(f"--config {args.config}: no such file")
    if args.nodes < 1 or args.gpus_per_node < 0:
        parser.error("--nodes must be >= 1 and --gpus-per-node >= 0")
    command, env = sbatch_command(args, fit_options)
    shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + (" " if env else "") + shlex.join(command)
    if args.dry_run:
        print(shown)
        return
    print(f"gan_lightning: {shown}", file=sys.stderr)
    result = subprocess.run(command, env={**os.environ, **env})
    sys.exit(result.returncode)
