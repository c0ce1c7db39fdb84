"""``python -m gan_lightning submit``: check a config as fit would, then sbatch one of the scripts in slurm/ with the
resources on the command line.

    python -m gan_lightning submit --config configs/bigan.yaml --nodes 2 --gpus-per-node 4 --time 4:00:00
    python -m gan_lightning submit --config configs/bigan.yaml --seeds 0 1 2          # an array over seeds
    python -m gan_lightning submit --config configs/bigan.yaml --dry-run -- --run_dir runs/bigan-b64 \\
        --data.init_args.batch_size 64                                              # options after -- go to fit

Before anything is queued, the config and fit's options are parsed and checked here as the job's `fit` will
(``checking``): a misspelt key fails now, in one line, not after the job has waited in the queue. A thin layer
otherwise: it picks train.sbatch, multinode.sbatch or array.sbatch and passes sbatch's own options, which override
the scripts' #SBATCH lines; everything else is in the scripts.
"""
import argparse
import difflib
import os
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

EPILOG = ("fit's options go after --, e.g. `python -m gan_lightning submit --config configs/bigan.yaml -- "
          "--trainer.max_epochs 3 --run_dir runs/bigan-3`: the config and those options are checked here as fit "
          "checks them (the same parser and errors; --run_dir, and --ckpt_path's file when one is given), without "
          "building the trainer or reading data, before anything is queued.")


class _Parser(argparse.ArgumentParser):
    argv: list[str] = []  # what parse_args was given: fit's options given without -- are named from it

    def parse_args(self, args=None, namespace=None):
        self.argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def error(self, message: str):  # one line, as the other commands' errors
        if message.startswith("unrecognized arguments:"):
            unknown = self.parse_known_args(self.argv)[1]
            message = _not_submits(self.argv, unknown, list(self._option_string_actions))
        sys.stderr.write(f"gan_lightning: error: submit: {message} (python -m gan_lightning submit --help)\n")
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m gan_lightning submit", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                allow_abbrev=False)  # --gpus is not --gpus-per-node: a misspelt option is refused, not completed
    p.add_argument("--config", required=True, help="the experiment's YAML")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=1, help="one task per GPU; 0 runs one task on CPUs")
    p.add_argument("--cpus-per-task", type=int, default=None)
    p.add_argument("--time", default="04:00:00", help="the job's limit; it requeues itself 90 s before")
    p.add_argument("--seeds", type=int, nargs="+", help="an array job, one member per seed")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--job-name")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch command instead of running it")
    p.usage = p.format_usage().removeprefix("usage: ").rstrip() + " [-- FIT_OPTIONS ...]"
    return p


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


def fit_command(args: argparse.Namespace, fit_options: list[str]) -> list[str]:
    """The fit command line the job runs, as far as the config's checks go: an array member's also has the options
    slurm/array.sbatch adds (its seed's, and its own --run_dir, which needs trainer.default_root_dir)."""
    member = []
    if args.seeds:
        seed = str(args.seeds[0])
        member = ["--seed_everything", seed, "--model.init_args.seed", seed, "--data.init_args.seed", seed,
                  "--run_dir", f"runs/sweep/{Path(args.config).stem}-seed{seed}"]
    return ["fit", "--config", args.config, *member, *fit_options]


def checking(cli_class: type) -> type:
    """``cli_class`` (GANLightningCLI) stopped before it builds anything but the data module and the model: the
    command line parsed by the same parser, with the same one-line errors and the same checks of --run_dir and of
    --ckpt_path's file, then the data module's and the model's constructors run on their settings (the model on the
    meta device: no memory, no weights). No trainer, callbacks or loggers (they would touch the devices and folders
    of this machine, not the job's), no data read, no run folder written, nothing run."""
    import torch

    class Checking(cli_class):
        def instantiate_classes(self) -> None:
            full, self.config = self.config, self.config.clone()
            trainer = (self.config[self.subcommand] if self.subcommand else self.config).get("trainer")
            for key, value in vars(trainer).items() if trainer is not None else ():
                if isinstance(value, list) and any(_a_class(each) for each in value):
                    trainer[key] = []  # callbacks
                elif _a_class(value):
                    trainer[key] = None  # a logger, a strategy, a profiler, a plugin
            try:
                with torch.device("meta"):
                    super().instantiate_classes()  # the constructors' refusals: one line, as fit's
            finally:
                self.config = full

        def _set_seed(self) -> None:  # the job's to set (and to log)
            return None

        def instantiate_trainer(self, **kwargs):
            return None

        def _run_subcommand(self, subcommand: str) -> None:
            return None

    return Checking


def _a_class(value) -> bool:
    return hasattr(value, "get") and value.get("class_path") is not None


def _not_submits(argv: list[str], unknown: list[str], options: list[str]) -> str:
    """The line for options submit does not have: a near miss of one of its own ('--node'), or fit's given
    without ``--`` in front of them."""
    flags = [u for u in unknown if u.startswith("-")]
    for flag in flags:
        name = flag.split("=")[0]
        guess = [o for o in options if o.startswith(name)] or difflib.get_close_matches(name, options, n=1)
        if guess:
            return f"unknown option '{name}'; did you mean '{guess[0]}'?"
    if not flags:
        return f"unrecognized arguments: {' '.join(unknown)}"
    rest, own = list(unknown), []
    for word in argv:  # submit's own words, in order: unknown is argv less them
        if rest and word == rest[0]:
            rest.pop(0)
        else:
            own.append(word)
    example = shlex.join(["python", "-m", "gan_lightning", "submit", *own, "--", *unknown])
    return f"{flags[0].split('=')[0]} is not an option of submit: fit's options go after '--', as in: {example}"


def main(argv: list[str]) -> None:
    fit_options = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = parser()
    args = p.parse_args(argv)
    if not Path("slurm/train.sbatch").is_file():
        p.error("run it from the repository's root (where slurm/ is): the jobs run there")
    if not Path(args.config).is_file():
        p.error(f"--config {args.config}: no such file")
    if args.nodes < 1 or args.gpus_per_node < 0:
        p.error("--nodes must be >= 1 and --gpus-per-node >= 0")
    if not args.dry_run and shutil.which("sbatch") is None:
        sys.exit("gan_lightning: error: submit: sbatch is not on PATH: SLURM's client is missing here; run submit on "
                 "the cluster's login node, or add --dry-run to print the sbatch command")
    from gan_lightning.cli import _main  # fit's parser and errors: only now, the imports take seconds

    with warnings.catch_warnings():  # LightningCLI warns when given args while sys.argv has others: submit's
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
        _main(fit_command(args, fit_options), check_only=True)  # exits, in one line, where the job's fit would fail
    command, env = sbatch_command(args, fit_options)
    shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + (" " if env else "") + shlex.join(command)
    if args.dry_run:
        print(shown)
        return
    print(f"gan_lightning: {shown}", file=sys.stderr)
    try:
        result = subprocess.run(command, env={**os.environ, **env})
    except OSError as err:
        sys.exit(f"gan_lightning: error: submit: cannot run sbatch ({err.strerror or err}); add --dry-run to print "
                 "the command")
    sys.exit(result.returncode)
