"""The command line: ``python -m gan_lightning fit --config configs/bigan.yaml`` (also validate, test)."""
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

import gan_lightning.callbacks  # noqa: F401  (makes the callbacks' short names known to configs)
import gan_lightning.distributed  # noqa: F401  (registers the strategy name player_ddp)
import gan_lightning.models  # noqa: F401  (makes the models' short names known to configs)
from gan_lightning.callbacks.preemption import slurm_job_id
from gan_lightning.checkpoints import CheckpointError, read_checkpoint
from gan_lightning.cli_errors import shorten
from gan_lightning.data import DatasetCorruptError, DatasetNotFoundError, GANDataModule
from gan_lightning.data.loader import DataLoaderWorkerDied
from gan_lightning.distributed import RanksDivergedError
from gan_lightning.early_signals import catch_signals_early
from gan_lightning.errors import ConfigError, Preempted
from gan_lightning.metrics.features import WeightsNotFoundError
from gan_lightning.metrics.image_scores import CacheFileError
from gan_lightning.models.registry import checked_model, model_class
from gan_lightning.tracking import SaveAndLogConfig, WandbLogger, WandbSettings, quiet_wandb_init


class ShortErrorParser(LightningArgumentParser):
    """Reports a bad config in one line naming the key and the accepted values, not a page of usage."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # jsonargparse is trying alternatives and expects an exception
            return super().error(message, ex)
        sys.stderr.write(f"gan_lightning: config error: {shorten(message, list(self._option_string_actions))}\n")
        sys.exit(2)


class GANLightningCLI(LightningCLI):
    """LightningCLI with the data's shape linked into the model and one optimizer per player."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.data_shape", "model.init_args.data_shape", apply_on="instantiate")
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="Move this run's outputs: every path in the config under trainer.default_root_dir "
                                 "(checkpoints, logs, samples) is placed under RUN_DIR instead, e.g. one folder per "
                                 "seed of a SLURM array.")
        parser.add_class_arguments(WandbSettings, "wandb",
                                   help="Weights & Biases (optional; CSV logs are always written)")

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path FILE``: read it with the weights-only loader (one line when it is truncated or unsafe),
        and refuse a checkpoint of another model or other settings, naming both, where Lightning would silently
        replace the config's model with the checkpoint's.

        Lightning hands the checkpoint's ``_class_path`` to jsonargparse, which imports it: a file from elsewhere
        would choose a module to run. Here the model class is the config's (the user's choice) when the names
        agree, else one of ``gan_lightning.models`` looked up by name (``models.registry.model_class``); the
        checkpoint's text never reaches an import, and its settings reach jsonargparse only as plain values."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():  # none, or a keyword such as "last"
            return
        weights_only = self.config[subcommand].get("weights_only") is not False
        checkpoint = read_checkpoint(ckpt_path, weights_only=weights_only)
        hparams = dict(checkpoint.get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)  # Lightning's load_from_checkpoint imports it; nothing here does
        model = self.config[subcommand].get("model")
        chosen = str(model.class_path) if model is not None and model.get("class_path") else None
        saved_class = hparams.pop("_class_path", None)
        if saved_class is not None and (chosen is None or _class_name(saved_class) != _class_name(chosen)):
            model_class(saved_class, ckpt_path)  # refuses, naming it, what is not one of our models
        saved_name = _class_name(saved_class) if saved_class else checkpoint.get("gan_lightning", {}).get("model")
        if chosen and saved_name:
            if saved_name != _class_name(chosen):
                raise CheckpointError(f"checkpoint {ckpt_path} holds a {saved_name} model, but "
                                      f"the config builds a {_class_name(chosen)}: pass the "
                                      "checkpoint of a run of this config, or use that run's config")
            init_args = model.get("init_args") or Namespace()
            differ = [f"model.{key}: {saved!r} in the checkpoint, {init_args[key]!r} in the config"
                      for key, saved in hparams.items()
                      if key in init_args and key != "data_shape" and not _same(saved, init_args[key])]
            if differ:
                raise CheckpointError(f"checkpoint {ckpt_path} was trained with other settings ({'; '.join(differ)}): "
                                      "resume with the settings it has (drop those overrides), or start a new run "
                                      "without --ckpt_path")
        if hparams and saved_class:  # Lightning's behaviour: the checkpoint's settings fill the config's model
            # The model these settings and the config's build, checked on the meta device: its weights must be the
            # file's before the real one is built (a forged width would allocate terabytes).
            init_args = model.get("init_args") or Namespace() if model is not None else Namespace()
            configured = {key: init_args[key] for key in hparams if key in init_args and key != "data_shape"}
            cls, settings = checked_model({**hparams, "_class_path": saved_class}, checkpoint.get("state_dict", {}),
                                          ckpt_path, chosen, configured)
            class_path = chosen or f"gan_lightning.models.{cls.__name__}"
            self.config = self.parser.parse_object(
                {subcommand: {"model": {"class_path": class_path, "dict_kwargs": settings}}}, self.config)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("run_dir"):
            relocate(config, config.trainer.default_root_dir, config.run_dir)
        stable_wandb_runs(config)
        if config.trainer.get("enable_progress_bar") is False:  # the switch wins over the config's bar
            callbacks = config.trainer.get("callbacks") or []
            config.trainer.callbacks = [cb for cb in callbacks
                                        if not str(getattr(cb, "class_path", "")).endswith("ProgressBar")]

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:  # a value the constructors refuse: say which, no traceback
            self.parser.error(str(err))

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """The config's trainer, plus a W&B logger beside its CSV log when ``wandb.mode`` asks for one."""
        trainer = super().instantiate_trainer(**kwargs)
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        raw = self.config[self.subcommand] if self.subcommand else self.config
        settings = config.get("wandb")
        logger = settings.logger(trainer.default_root_dir, run_name(raw)) if settings is not None else None
        if logger is not None:
            trainer.loggers = [*trainer.loggers, logger]
        for each in trainer.loggers:  # a WandbLogger of Lightning's the config names itself (ours do this themselves)
            if isinstance(each, LightningWandbLogger) and not isinstance(each, WandbLogger):
                quiet_wandb_init(each._wandb_init)
        return trainer


def _class_name(class_path: object) -> str:
    """``pkg.module.Class`` -> ``Class``."""
    return str(class_path).rsplit(".", 1)[-1]


def _same(a, b) -> bool:
    """Equal as config values (a checkpoint's tuples are the config's lists)."""
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return norm(a) == norm(b)


def run_name(config: Namespace) -> str:
    """A run's default name: its config file's (``aae_semi_100``), and its run folder's with --run_dir."""
    files = [str(path) for path in config.get("config") or []]
    name = os.path.splitext(os.path.basename(files[0]))[0] if files else "run"
    return f"{name}/{os.path.basename(os.path.normpath(config.run_dir))}" if config.get("run_dir") else name


def relocate(config: Namespace, old_root: str | None, new_root: str) -> None:
    """Replace the prefix ``old_root`` of every path-like string in ``config`` with ``new_root``, in place."""
    if not old_root:
        raise ConfigError("--run_dir needs trainer.default_root_dir in the config: the folder whose outputs it moves")
    old = os.path.normpath(old_root)

    def move(value):
        if isinstance(value, str) and (os.path.normpath(value) == old or value.startswith(old.rstrip("/") + "/")):
            return os.path.join(new_root, os.path.relpath(os.path.normpath(value), old)).rstrip("/.") or new_root
        if isinstance(value, Namespace):
            for key in value.keys():
                value[key] = move(value[key])
        elif isinstance(value, list):
            return [move(item) for item in value]
        return value

    move(config)
    config.trainer.default_root_dir = new_root


def stable_wandb_runs(config: Namespace) -> None:
    """A requeued SLURM job continues its W&B run: a WandbLogger without an ``id`` gets the job's
    (``ARRAYJOB_TASK`` for array members), and ``resume: allow`` unless the config says otherwise
    (LightningCLI drops WandbLogger's default)."""
    loggers = config.trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, Namespace) or not str(logger.get("class_path", "")).endswith("WandbLogger"):
            continue
        job = slurm_job_id()
        if job is not None and not logger.init_args.get("id"):
            logger.init_args.id = job
        kwargs = logger.get("dict_kwargs") or {}
        logger["dict_kwargs"] = {"resume": "allow", **kwargs}


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
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        catch_signals_early("SIGUSR1")  # SLURM's warning may come while we start; its default action kills
    try:
        _main(args)
    finally:
        if main_thread:  # a warning that comes while Python shuts down (handlers reset) must not kill a finished run
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _main(args: list[str] | None) -> None:
    silence_noise()
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] == "submit":
        from gan_lightning import submit

        return submit.main(argv[1:])
    if argv and argv[0] == "compare":
        from gan_lightning import compare

        try:
            return compare.main(argv[1:])
        except (OSError, ValueError) as err:
            sys.exit(f"gan_lightning: error: {err}")
    if argv and argv[0] in ("evaluate", "sample"):
        from gan_lightning.commands import run

        try:
            run(argv[0], argv[1:])
        except (CheckpointError, DatasetNotFoundError, WeightsNotFoundError, ValueError) as err:
            sys.exit(f"gan_lightning: error: {err}")
        return
    try:
        GANLightningCLI(
            L.LightningModule,
            GANDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # each model builds one optimizer per player
            save_config_callback=SaveAndLogConfig,  # config.yaml beside the logs, and the whole config in W&B
            save_config_kwargs={"overwrite": True},  # resumes and requeues rerun in the same folder
            parser_class=ShortErrorParser,
            parser_kwargs={"description": "gan_lightning: fit, validate, test and predict run Lightning's loops on a "
                           "config; `evaluate --ckpt_path CKPT` scores a checkpoint, `sample --ckpt_path CKPT` "
                           "writes its samples, `submit --config CONFIG` sends a config to SLURM, "
                           "`compare RUN_DIR ...` tables and plots runs (see "
                           "`python -m gan_lightning submit --help`)."},
            args=args,
        )
    except (DatasetNotFoundError, DatasetCorruptError, WeightsNotFoundError, ConfigError, CheckpointError,
            FloatingPointError, DataLoaderWorkerDied, RanksDivergedError, CacheFileError,
            torch.OutOfMemoryError) as err:  # each says what to change: no traceback
        sys.exit(f"gan_lightning: error: {err}")
    except Preempted:  # saved, and requeued where asked; the callback has said so
        sys.exit(0)
