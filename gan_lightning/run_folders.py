"""Where a run's checkpoints are: ``--ckpt_path best`` and ``--ckpt_path last`` found in a config's checkpoint folder.

``fit``, ``validate``, ``test`` and ``predict`` read the folder from their parsed config; ``evaluate`` and ``sample``,
which take no config of their own, from the YAML files given with ``--config`` (and ``--run_dir``). Imports nothing
heavy: ``evaluate --help`` stays quick."""
import os
import sys
from pathlib import Path

from gan_lightning.errors import ConfigError

BEST = "best"  # BestCheckpoint's file name
CHECKPOINT_CALLBACKS = ("ModelCheckpoint", "BestCheckpoint")


def moved(value: str, old_root: str | None, new_root: str | None) -> str:
    """``value`` with its prefix ``old_root`` replaced by ``new_root`` (``--run_dir``), else unchanged."""
    if not (old_root and new_root):
        return value
    old = os.path.normpath(old_root)
    if os.path.normpath(value) == old or value.startswith(old.rstrip("/") + "/"):
        return os.path.join(new_root, os.path.relpath(os.path.normpath(value), old)).rstrip("/.") or new_root
    return value


def checkpoint_file(folders: list[Path], which: str, command: str) -> str | None:
    """``best.ckpt``, or the newest ``last*.ckpt`` (Lightning's choice), in ``folders``. ``fit`` starts a new run
    when there is no ``last.ckpt`` yet (the first of a SLURM job's requeues): None, said in one line. The other
    commands need the file, and say which folder lacks it."""
    if not folders:
        raise ConfigError(f"--ckpt_path {which}: the config names no ModelCheckpoint dirpath to find {which}.ckpt in; "
                          "pass the checkpoint's path instead")
    for folder in folders:
        if which == "last":
            last = [path for path in folder.glob("last*.ckpt") if path.is_file()]
            if last:
                return str(max(last, key=lambda path: path.stat().st_mtime))
        elif (folder / f"{BEST}.ckpt").is_file():
            return str(folder / f"{BEST}.ckpt")
    where = " or ".join(str(folder) for folder in folders)
    if command == "fit" and which == "last":
        print(f"gan_lightning: no last.ckpt in {where} yet: a new run starts at iteration 0", file=sys.stderr)
        return None
    if which == "best":
        raise ConfigError(f"--ckpt_path best: no {BEST}.ckpt in {where}: it is written at the first validation that "
                          "measures the config's headline figure (BestCheckpoint's monitor); pass --ckpt_path last or "
                          "a checkpoint's path")
    raise ConfigError(f"--ckpt_path last: no last.ckpt in {where}: train first (`fit`), or pass a checkpoint's path")


def folders_of_configs(configs: list[str], run_dir: str | None) -> list[Path]:
    """The checkpoint folders of the config ``configs`` stack into (later files override earlier ones, as in
    ``fit``), moved by ``run_dir``. Reads the YAML as data (``yaml.safe_load``): nothing in it is imported."""
    import yaml

    root, callbacks = None, []
    for path in configs:
        try:
            spec = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise ConfigError(f"--config {path}: cannot read it as YAML ({type(err).__name__}); pass a config file") \
                from None
        trainer = spec.get("trainer") if isinstance(spec, dict) else None
        if isinstance(trainer, dict):
            root = trainer.get("default_root_dir", root)
            callbacks = trainer.get("callbacks", callbacks)
    folders = []
    for callback in callbacks if isinstance(callbacks, list) else []:
        if not isinstance(callback, dict):
            continue
        name = str(callback.get("class_path", "")).rsplit(".", 1)[-1]
        dirpath = (callback.get("init_args") or {}).get("dirpath")
        if name in CHECKPOINT_CALLBACKS and isinstance(dirpath, str):
            folder = Path(moved(dirpath, root if isinstance(root, str) else None, run_dir))
            if folder not in folders:
                folders.append(folder)
    return folders
