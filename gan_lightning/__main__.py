"""``python -m gan_lightning COMMAND [options]``: every command of the package, each importing what it needs when it
runs. ``--help``, ``compare`` and the other commands' ``--help`` start without Lightning's trainer stack (seconds
of imports); fit, validate, test and predict load LightningCLI (``gan_lightning.cli``). ``gan_lightning.cli.main``
(the ``gan-lightning`` script, in-process callers) is this same ``main``.
"""
import logging
import os
import signal
import sys
import threading
import warnings

from gan_lightning.early_signals import catch_signals_early

LIGHTNING = {  # LightningCLI's subcommands (gan_lightning.cli)
    "fit": "train a config's model (--config CONFIG; `fit --help` lists every option of the config)",
    "validate": "one validation epoch of a config's model, from --ckpt_path CKPT",
    "test": "one test epoch of a config's model, from --ckpt_path CKPT",
    "predict": "run a config's model on the data's predict split, from --ckpt_path CKPT",
}
OWN = {
    "evaluate": "score a checkpoint: FID, IS, KID, precision and recall, encoder probes (--ckpt_path CKPT)",
    "sample": "write a checkpoint's samples: an .npz and a PNG grid (--ckpt_path CKPT)",
    "export": "write a checkpoint as a Hugging Face model folder: safetensors, config.json, model card (--out DIR)",
    "compare": "table and plot the metrics of runs (RUN_DIR ...)",
    "submit": "check a config as fit would, then send it to SLURM (--config CONFIG [-- fit options])",
}
COMMANDS = {**LIGHTNING, **OWN}
CHOICES = "{" + ",".join(COMMANDS) + "}"
DESCRIPTION = ("gan_lightning: GANs, ALI/BiGAN, AAEs, VAEs and flows on Lightning. fit, validate, test and predict "
               "run Lightning's loops on a config; evaluate and sample use a checkpoint or an exported folder; export "
               "shares one; compare reads runs; submit sends a config to SLURM.")
# LightningCLI's own options before a command: a config whose keys are the commands (-c), --print_config.
LIGHTNING_FIRST = ("-c", "--config", "--print_config")


def front_parser():
    """The help of ``python -m gan_lightning``: the commands, each with its own ``--help``. Printing only: the
    commands parse their own arguments."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gan_lightning", description=DESCRIPTION, allow_abbrev=False,
                                     epilog="Each command's options: python -m gan_lightning COMMAND --help")
    commands = parser.add_subparsers(title="commands", metavar=CHOICES)
    for name, text in COMMANDS.items():
        commands.add_parser(name, help=text, add_help=False)
    return parser


def usage_error(message: str) -> None:
    """One line naming what is wrong and the commands there are, exit status 2 (argparse's for usage errors)."""
    sys.stderr.write(f"gan_lightning: error: {message}\n")
    sys.exit(2)


def silence_noise() -> None:
    """Drop messages the stack prints on every run that a user can do nothing about."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # torch 2.14 vs lightning 2.6
    # Checkpoints go to a fixed folder so that resumes and requeues find them: it is meant to exist.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Our checkpoints hold the state after an iteration's updates, with counters to match (models/base.py).
    warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps")
    if "SLURM_JOB_ID" not in os.environ:  # outside an allocation, running without srun is what the user meant
        warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
    # Lightning loads our own checkpoints on resume; torch's weights_only default is not the user's concern.
    warnings.filterwarnings("ignore", message=r"`weights_only` was not set")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())


def main(args: list[str] | None = None) -> None:
    """``python -m gan_lightning ARGS``; ``args``: those ARGS in-process (None: ``sys.argv[1:]``)."""
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        catch_signals_early("SIGUSR1")  # SLURM's warning may come while we start; its default action kills
    try:
        _dispatch(args)
    finally:
        if main_thread:  # a warning that comes while Python shuts down (handlers reset) must not kill a finished run
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _dispatch(args: list[str] | None) -> None:
    silence_noise()
    argv = sys.argv[1:] if args is None else list(args)
    command = argv[0] if argv else None
    if command in ("-h", "--help"):
        front_parser().print_help()
        return
    if command is None:
        usage_error(f"name a command: python -m gan_lightning {CHOICES} ... (--help says what each does)")
    if command == "submit":
        from gan_lightning import submit

        return submit.main(argv[1:])
    if command == "compare":
        from gan_lightning import compare

        try:
            return compare.main(argv[1:])
        except (OSError, ValueError) as err:
            sys.exit(f"gan_lightning: error: {err}")
    if command in ("evaluate", "sample", "export"):
        from gan_lightning.commands import run

        try:
            run(command, argv[1:])
        except Exception as err:  # the errors that say what to change, imported once one came (they are heavy)
            from gan_lightning.checkpoints import CheckpointError
            from gan_lightning.data import DatasetNotFoundError
            from gan_lightning.metrics.features import WeightsNotFoundError

            if isinstance(err, (CheckpointError, DatasetNotFoundError, WeightsNotFoundError, ValueError)):
                sys.exit(f"gan_lightning: error: {err}")
            raise
        return
    if command in LIGHTNING or command.split("=")[0] in LIGHTNING_FIRST:
        from gan_lightning.cli import _main

        return _main(args)  # None stays None: LightningCLI reads sys.argv itself
    if command.startswith("-"):
        usage_error(f"{command} is an option of a command: name the command first, python -m gan_lightning "
                    f"{CHOICES} [options] (--help says what each does)")
    import difflib

    guess = difflib.get_close_matches(command, COMMANDS, n=1)
    usage_error(f"unknown command '{command}'; " + (f"did you mean '{guess[0]}'? " if guess else "")
                + f"commands: {', '.join(COMMANDS)}")


if __name__ == "__main__":
    main()
