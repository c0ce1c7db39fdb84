"""The command line: ``python -m gan_lightning fit --config configs/bigan.yaml`` (also validate, test)."""
import os
import re
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

import gan_lightning.callbacks  # noqa: F401  (makes the callbacks' short names known to configs)
import gan_lightning.distributed  # noqa: F401  (registers the strategy name player_ddp)
import gan_lightning.models  # noqa: F401  (makes the models' short names known to configs)
from gan_lightning.__main__ import CHOICES, DESCRIPTION, LIGHTNING
from gan_lightning.callbacks.preemption import slurm_job_id
from gan_lightning.checkpoints import CheckpointError, read_checkpoint
from gan_lightning.cli_errors import misconfigured, shorten
from gan_lightning.data import DatasetCorruptError, DatasetNotFoundError, GANDataModule
from gan_lightning.data.loader import DataLoaderWorkerDied
from gan_lightning.distributed import RanksDivergedError
from gan_lightning.errors import ConfigError, Preempted
from gan_lightning.metrics.features import WeightsNotFoundError
from gan_lightning.metrics.image_scores import CacheFileError
from gan_lightning.models.registry import checked_model, model_class
from gan_lightning.run_folders import CHECKPOINT_CALLBACKS, checkpoint_file, moved
from gan_lightning.tracking import SaveAndLogConfig, WandbLogger, WandbSettings, quiet_wandb_init

LIGHTNING_CHOICES = "{" + ",".join(LIGHTNING) + "}"  # the commands LightningCLI's parser lists


class ShortErrorParser(LightningArgumentParser):
    """Reports a bad config in one line naming the key and the accepted values, not a page of usage; the commands it
    names are all of ``python -m gan_lightning``'s, not only LightningCLI's."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # jsonargparse is trying alternatives and expects an exception
            return super().error(message, ex)
        if re.match(r'expected "subcommand"|argument subcommand: invalid choice', message):
            message = f"name a command: {self.prog} {CHOICES} ... (--help says what each does)"
        sys.stderr.write(f"gan_lightning: config error: {shorten(message, list(self._option_string_actions))}\n")
        sys.exit(2)

    def format_usage(self) -> str:
        return super().format_usage().replace(LIGHTNING_CHOICES, CHOICES)

    def format_help(self) -> str:
        return super().format_help().replace(LIGHTNING_CHOICES, CHOICES)


class GANLightningCLI(LightningCLI):
    """LightningCLI with the data's shape linked into the model and one optimizer per player."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.data_shape", "model.init_args.data_shape", apply_on="instantiate")
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="Move this run's outputs: every path in the config under trainer.default_root_dir "
                                 "(checkpoints, logs, samples) is placed under RUN_DIR instead, e.g. one folder per "
                                 "seed of a SLURM array.")
        parser.add_argument("--quick_scores", type=bool, default=False,
                            help="Measure the headline scores on small sets, for smoke runs (the smoke overlay sets "
                                 "it): ImageMetrics on 1,000 samples against 1,000 real images (its protocol then "
                                 "says so: trainsplit10k[n_samples=1000,n_real=1000]), EncoderProbe on 1,000 examples "
                                 "without the linear probe. Seconds instead of minutes; not the papers' figures.")
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
        if config.get("quick_scores"):
            quick_scores(config)
        if self.subcommand and config.get("ckpt_path") in ("best", "last"):
            config.ckpt_path = checkpoint_of_run(config, config.ckpt_path, self.subcommand)
            if config.ckpt_path:
                self._parse_ckpt_path()  # the file it names is checked as one given by its path
                config = self.config[self.subcommand]
        if self.subcommand in ("validate", "test", "predict") and config.get("ckpt_path"):
            # A checkpoint's scores belong to its own run, never to the curves of the config's run (a checkpoint of
            # another seed's run would be logged as this one's): every output goes to <its run>/<command>/<its name>.
            ckpt_path = config.ckpt_path  # read from where it is, not moved with the outputs
            relocate(config, config.trainer.default_root_dir, str(outputs_of_checkpoint(ckpt_path, self.subcommand)))
            config.ckpt_path = ckpt_path
        if self.subcommand in ("validate", "test", "predict"):  # they write no checkpoint, so restore no such state
            config.trainer.callbacks = [cb for cb in config.trainer.get("callbacks") or []
                                        if _class_name(getattr(cb, "class_path", "")) not in CHECKPOINT_CALLBACKS]
            config.trainer.enable_checkpointing = False
            warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")
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

    def move(value):
        if isinstance(value, str):
            return moved(value, old_root, new_root)  # the one rule, shared with evaluate's --config/--run_dir
        if isinstance(value, Namespace):
            for key in value.keys():
                value[key] = move(value[key])
        elif isinstance(value, list):
            return [move(item) for item in value]
        return value

    move(config)
    config.trainer.default_root_dir = new_root


QUICK = {"ImageMetrics": {"n_samples": 1000, "n_real": 1000, "kid_subsets": 10, "kid_subset_size": 500},
         "EncoderProbe": {"n_train": 1000, "n_test": 1000, "linear": False}}


def quick_scores(config: Namespace) -> None:
    """``--quick_scores``: the measuring callbacks' sample counts capped (``QUICK``), in place."""
    for callback in config.trainer.get("callbacks") or []:
        small = QUICK.get(_class_name(getattr(callback, "class_path", ""))) if isinstance(callback, Namespace) else None
        if small is None:
            continue
        init_args = callback.get("init_args") or Namespace()
        for key, value in small.items():
            given = init_args.get(key)
            init_args[key] = value if given is None or isinstance(value, bool) else min(given, value)
        callback["init_args"] = init_args


def checkpoint_folders(config: Namespace) -> list[Path]:
    """The folders the config's ModelCheckpoint callbacks write to (``BestCheckpoint``'s included), in order."""
    folders = []
    for callback in config.trainer.get("callbacks") or []:
        name = _class_name(getattr(callback, "class_path", "")) if isinstance(callback, Namespace) else ""
        dirpath = (callback.get("init_args") or Namespace()).get("dirpath") if name else None
        if name in CHECKPOINT_CALLBACKS and dirpath and Path(dirpath) not in folders:
            folders.append(Path(dirpath))
    return folders


def checkpoint_of_run(config: Namespace, which: str, command: str) -> str | None:
    """``--ckpt_path best`` or ``last``: the file in the config's checkpoint folder (after ``--run_dir``)."""
    return checkpoint_file(checkpoint_folders(config), which, command)


def outputs_of_checkpoint(ckpt_path: str, command: str) -> Path:
    """Where ``validate``, ``test`` or ``predict`` of a checkpoint write: ``<its run>/<command>/<its name>``, its run
    being the folder above its ``checkpoints/`` folder (else the folder it lies in)."""
    path = Path(ckpt_path)
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run / command / path.stem


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


def main(args: list[str] | None = None) -> None:
    """Every command, as ``python -m gan_lightning ARGS`` runs it (``gan_lightning.__main__``): the gan-lightning
    script and in-process callers; ``args``: those ARGS (None: ``sys.argv[1:]``)."""
    from gan_lightning.__main__ import main as dispatch

    dispatch(args)


def _main(args: list[str] | None, check_only: bool = False) -> None:
    """fit, validate, test and predict: LightningCLI on ``args`` (None: ``sys.argv[1:]``), every error one line.
    ``check_only``: parse and check the command line as it would run, without building the trainer or reading
    data (``submit``, before it queues the job: ``submit.checking``)."""
    cli_class = GANLightningCLI
    if check_only:
        from gan_lightning.submit import checking

        cli_class = checking(GANLightningCLI)
    no_abbreviations = {"allow_abbrev": False}  # a misspelt prefix (--trainer.max_epoch) is refused, not completed
    try:
        cli_class(
            L.LightningModule,
            GANDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # each model builds one optimizer per player
            save_config_callback=SaveAndLogConfig,  # config.yaml beside the logs, and the whole config in W&B
            save_config_kwargs={"overwrite": True},  # resumes and requeues rerun in the same folder
            parser_class=ShortErrorParser,
            parser_kwargs={"prog": "python -m gan_lightning", "description": DESCRIPTION, **no_abbreviations,
                           **{name: dict(no_abbreviations) for name in GANLightningCLI.subcommands()}},
            args=args,
        )
    except (DatasetNotFoundError, DatasetCorruptError, WeightsNotFoundError, ConfigError, CheckpointError,
            FloatingPointError, DataLoaderWorkerDied, RanksDivergedError, CacheFileError,
            torch.OutOfMemoryError) as err:  # each says what to change: no traceback
        sys.exit(f"gan_lightning: error: {err}")
    except (MisconfigurationException, ValueError) as err:  # Lightning's: one line where a trainer setting is at fault
        line = misconfigured(err, L.Trainer)
        if line is None:  # raised by code, not by a setting: the traceback is what helps
            raise
        sys.exit(f"gan_lightning: error: {line}")
    except Preempted:  # saved, and requeued where asked; the callback has said so
        sys.exit(0)
