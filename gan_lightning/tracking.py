"""Weights & Biases, first-class and optional: one ``wandb:`` section in a config, beside the CSV log that is
always written.

    wandb:
      mode: auto          # online when logged in and W&B is reachable, else offline (`wandb sync` it later)
      project: gan_lightning
      group: null         # default: the SLURM array's id, so a sweep's runs sit side by side

A missing login (`wandb login` or WANDB_API_KEY) or an unreachable W&B host does not stop a run: it logs to
W&B offline, a local run in ``<save_dir>/wandb/offline-run-*`` to ``wandb sync`` later, and one warning on
rank 0 says why. W&B's own ``WANDB_MODE`` (``disabled``, ``offline``, ``online``) is followed when the config
says ``auto``; ``--wandb.mode off`` turns W&B off.

What the run gets: the full resolved config, every ``train/``, ``val/`` and ``test/`` metric against
``iteration`` (training iterations; ``images_seen`` is there too), the pictures the callbacks draw, the
output folders and ImageMetrics' evaluation protocol (in the summary), and an id that a requeued SLURM job
reuses (``resume: allow``). ``wandb.finish()`` runs on rank 0 when training ends.
"""
import netrc
import os
import socket
import threading
import time
from pathlib import Path
from typing import Literal, Optional
from urllib.parse import urlparse

from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

Mode = Literal["auto", "online", "offline", "off"]
X_AXES = ("iteration", "images_seen")
ENV_MODES = {"disabled": "off", "offline": "offline", "dryrun": "offline", "online": "online", "run": "online"}


def wandb_host() -> tuple[str, int]:
    """The W&B server's host and port: WANDB_BASE_URL's (default https://api.wandb.ai, port 443)."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


def wandb_logged_in() -> bool:
    """Whether W&B has an API key here: WANDB_API_KEY, or a netrc entry for the W&B host (``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(wandb_host()[0]) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the W&B host opens within ``timeout`` seconds, the name lookup included (no
    request is sent). The lookup runs in a daemon thread that is abandoned at the deadline: ``getaddrinfo`` has
    no timeout of its own, and a resolver that hangs (compute nodes without internet) would stall the start."""
    host, port = wandb_host()
    deadline = time.monotonic() + timeout
    found: list = []

    def resolve() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError:  # unknown host, no resolver
            pass

    lookup = threading.Thread(target=resolve, name="wandb-host-lookup", daemon=True)
    lookup.start()
    lookup.join(timeout)
    for family, kind, proto, _, address in list(found):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as connection:
                connection.settimeout(left)
                connection.connect(address)
            return True
        except OSError:  # refused, timed out, no route
            continue
    return False


def repository_root(start: Path | None = None) -> str | None:
    """The top folder of the git checkout this code runs from (the first folder up from ``start``, default this
    package's, that holds ``.git``), or None when it is not in one (installed from a wheel)."""
    start = (start or Path(__file__).parent).resolve()
    return next((str(folder) for folder in (start, *start.parents) if (folder / ".git").exists()), None)


def quiet_wandb_init(init: dict) -> dict:
    """``init`` (a WandbLogger's ``wandb.init`` arguments, changed in place) without the causes of two warnings a
    user cannot act on. Lightning passes ``anonymous=None``, which W&B (0.31 here) warns "has no effect and will
    be removed": an unset ``anonymous`` is dropped. W&B looks for the git repository from the run folder before it
    creates it ("git root runs/bigan does not exist"): it gets the checkout of this code as ``git_root`` (whose
    commit and remote it records), or, outside a checkout, the run folder is created first so that its own search
    starts from a folder that exists. And ``quiet``, unless the config sets it: W&B's closing "Run history" and
    "Run summary" (about 30 lines after every run) are in the run's files and dashboard; the link to the run
    (online) and the sync command (offline, in the warning at start-up) stay."""
    if "anonymous" in init and init["anonymous"] is None:
        del init["anonymous"]
    root, settings = repository_root(), init.get("settings")
    if root is None and init.get("dir"):
        os.makedirs(init["dir"], exist_ok=True)
    ours = {"quiet": True, **({"git_root": root} if root is not None else {})}
    if settings is None:
        init["settings"] = ours  # wandb.init takes a dict: no import of wandb here
    elif isinstance(settings, dict):
        init["settings"] = {**ours, **settings}
    else:
        for key, value in ours.items():
            if key == "git_root" and getattr(settings, "git_root", None) is None:
                settings.git_root = value
    return init


class WandbSettings:
    def __init__(self, mode: Mode = "auto", project: str = "gan_lightning", entity: str | None = None,
                 group: str | None = None, job_type: str = "train", tags: list[str] | None = None,
                 name: str | None = None, id: str | None = None):
        """Where and how a run is logged to Weights & Biases.

        Args:
            mode: ``auto``, ``online``, ``offline`` (a local run in ``<save_dir>/wandb/offline-run-*`` to
                ``wandb sync`` later) or ``off``. ``auto`` is ``online`` unless W&B's ``WANDB_MODE`` says
                ``disabled`` (off) or ``offline``; that variable does not override any other mode.
                Online (``auto`` or ``online``) falls back to offline, with one warning, when W&B is not
                logged in (``wandb login`` or WANDB_API_KEY) or its host (WANDB_BASE_URL's, default
                api.wandb.ai:443) does not answer within 3 seconds.
            project: the W&B project.
            entity: the W&B user or team (default: the logged-in user's).
            group: runs of one sweep share it (default: ``array-<SLURM_ARRAY_JOB_ID>`` in a SLURM array).
            job_type: e.g. ``train`` or ``eval``.
            tags: labels to filter runs by.
            name: the run's display name (default: the config file's name, and the run folder's with --run_dir).
            id: the run's id (default: the SLURM job's, so a requeued job continues its run).
        """
        if mode not in Mode.__args__:
            raise ValueError(f"wandb.mode must be one of {Mode.__args__}, got {mode!r}")
        self.mode, self.project, self.entity, self.group = mode, project, entity, group
        self.job_type, self.tags, self.name, self.id = job_type, list(tags or []), name, id

    def resolved_mode(self, save_dir: str = ".") -> str:
        """online, offline or off (see ``mode``); an online run that cannot be one is offline, and a warning
        on rank 0 says why and how to sync the run kept in ``save_dir``."""
        mode = ENV_MODES.get(os.environ.get("WANDB_MODE", "").lower(), "auto") if self.mode == "auto" else self.mode
        if mode in ("offline", "off"):
            return mode
        if not wandb_logged_in():
            reason = "W&B is not logged in (`wandb login` or WANDB_API_KEY)"
        elif not wandb_reachable():
            reason = "W&B's host {}:{} is unreachable".format(*wandb_host())
        else:
            return "online"
        run = os.path.join(save_dir, "wandb", "offline-run-*")
        rank_zero_warn(f"gan_lightning: {reason}, so this run logs to W&B offline: `wandb sync {run}` uploads it "
                       "later; --wandb.mode off turns W&B off")
        return "offline"

    def logger(self, save_dir: str, default_name: str) -> Optional["WandbLogger"]:
        """The run's WandbLogger, or None when W&B is off."""
        from gan_lightning.callbacks.preemption import slurm_job_id  # here: callbacks import this module

        mode = self.resolved_mode(save_dir)
        if mode == "off":
            return None
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        return WandbLogger(project=self.project, entity=self.entity, name=self.name or default_name,
                           group=self.group or (f"array-{array}" if array else None), job_type=self.job_type,
                           tags=self.tags, id=self.id or slurm_job_id(), resume="allow", offline=mode == "offline",
                           save_dir=save_dir, mode=mode)  # mode: wins over a WANDB_MODE the user set


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger with training iterations as the x-axis, images logged at their iteration, the
    output folders in the run summary, and ``wandb.finish()`` when training ends."""

    @property
    def experiment(self):
        fresh = self._experiment is None
        if fresh:
            quiet_wandb_init(self._wandb_init)
        run = super().experiment
        if fresh and hasattr(run, "define_metric"):
            for axis in X_AXES:
                run.define_metric(axis)
            for prefix in ("train", "val", "test"):  # the iteration, also where Lightning's step axis is absent
                run.define_metric(f"{prefix}/*", step_metric="iteration", step_sync=True)
        return run

    @rank_zero_only
    def log_image(self, key: str, images: list, step: int | None = None, **kwargs) -> None:
        import wandb

        images = [wandb.Image(str(image) if isinstance(image, Path) else image) for image in images]
        self.experiment.log({key: images[0] if len(images) == 1 else images,  # one picture: shown full size
                             **({"iteration": step} if step is not None else {})})

    @rank_zero_only
    def log_outputs(self, outputs: dict[str, str]) -> None:
        """Where the run's files are (checkpoints, samples, logs), in the run's summary."""
        self.log_summary({f"outputs/{k}": v for k, v in outputs.items()})

    @rank_zero_only
    def log_summary(self, values: dict) -> None:
        """Values that describe the whole run (its output folders, its evaluation protocol) in the run's summary."""
        self.experiment.summary.update(values)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._experiment is not None:
            self._experiment.finish()
            self._experiment = None  # a later stage (test) in this process continues the run (resume: allow)


class SaveAndLogConfig(SaveConfigCallback):
    """Writes config.yaml beside the logs (Lightning's behaviour) and puts the full resolved config in W&B."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        config = {k: v for k, v in self.config.as_dict().items() if k not in ("config", "wandb")}
        for logger in trainer.loggers:
            if isinstance(logger, LightningWandbLogger):
                logger.experiment.config.update(config, allow_val_change=True)
