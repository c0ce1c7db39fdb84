"""Checkpoint files written atomically and read safely.

Lightning's ``TorchCheckpointIO`` serialises into memory, writes a temporary file in the system's temp folder
and moves it into place: when that folder is on another file system than the checkpoints (a node's /tmp and a
cluster's shared disk), the move is a copy into the destination, and a kill or a full disk during the copy
leaves a truncated checkpoint where the good one was. ``SafeCheckpointIO`` writes ``<name>.partial`` beside
the destination, flushes it to disk and renames it over the destination (``os.replace``: atomic on POSIX), so
the destination is always either the previous checkpoint, whole, or the new one, whole.

Reading uses torch's weights-only unpickler unless the caller asks otherwise (``fit --weights_only false``):
a checkpoint from elsewhere cannot run code when it is loaded. A truncated or corrupted file, or one holding
objects the weights-only unpickler refuses, gives one ``CheckpointError`` line naming the file and the fix.
``AdversarialModule.setup`` installs it in place of Lightning's default.

A weights-only load holds plain values, but some of them are names: a checkpoint's ``_class_path`` (and
Lightning's ``_instantiator``) name code, and importing a module runs it, calling a callable runs anything
(``subprocess.run`` with ``shell: True``). ``model_class`` and ``model_settings`` turn a checkpoint's
hyperparameters into a model class and its arguments without importing or calling anything the file names.
"""
import importlib
import inspect
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, of another model or shape, or cannot be written."""


def read_checkpoint(path: str | Path, map_location: Any = "cpu", weights_only: bool = True) -> dict:
    """``torch.load`` of a checkpoint file, every failure turned into one line naming the file and the fix."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} not found; checkpoints are in <default_root_dir>/checkpoints/")
    if not zipfile.is_zipfile(file):  # torch.save writes a zip archive; a cut one loses its directory at the end
        raise _unreadable(file, ValueError("not a whole zip archive"))
    try:
        return torch.load(file, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as err:
        if weights_only and "weights only" in str(err).lower():
            unsupported = next((line.strip() for line in str(err).splitlines() if "Unsupported" in line),
                               str(err).splitlines()[0])
            raise CheckpointError(
                f"checkpoint {file} holds Python objects besides tensors and plain values ({unsupported}), and is "
                "not loaded: the weights-only loader refuses them because unpickling them can run code. If you "
                "trust the file, `fit --weights_only false` resumes it") from None
        raise _unreadable(file, err) from None
    except Exception as err:  # truncated zip archive, pickle errors, a file that is not a checkpoint at all
        raise _unreadable(file, err) from None


def model_class(class_path: object, file: str | Path, chosen: str | None = None) -> type:
    """The model class a checkpoint's ``_class_path`` names, looked up by name among ``gan_lightning.models``'
    models (``allowed_models``), never imported: a module named by a file from elsewhere is not ours to run.
    ``chosen``: a class path the user named (``--model_class``, the config's ``model.class_path``); it is imported,
    because the user chose it, and must still be a model. Anything else: one ``CheckpointError`` line naming it."""
    from gan_lightning.models import AdversarialModule

    if chosen is not None:
        module, _, name = chosen.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as err:
            first_line = (str(err).splitlines() or [""])[0]
            raise CheckpointError(f"model class {chosen!r} cannot be imported ({type(err).__name__}: {first_line}): "
                                  "name it as package.module.Class") from None
        if not (isinstance(cls, type) and issubclass(cls, AdversarialModule)):
            raise CheckpointError(f"model class {chosen!r} is not a subclass of "
                                  "gan_lightning.models.AdversarialModule: name a model class")
        return cls
    models = allowed_models()
    # gan_lightning.models.Class, or gan_lightning.models.<module>.Class with any module: a class that has moved
    # between the package's modules (SemiSupervisedAAE and ClusteringAAE left models.aae) still loads by its name.
    ours = isinstance(class_path, str) and re.fullmatch(r"gan_lightning\.models(?:\.\w+)?\.(\w+)", class_path)
    for cls in models.values():
        if ours and ours[1] == cls.__name__:
            return cls
    named = isinstance(class_path, str) and re.fullmatch(r"[\w.]{1,200}", class_path)
    raise CheckpointError(
        f"checkpoint {file} names the model class {_short(class_path, 200)}, which is not one of "
        f"gan_lightning.models ({', '.join(models)}): it is neither imported nor called, since a checkpoint from "
        "elsewhere can name any code. If it is a model class of your own and you trust it, name it yourself: "
        f"--model_class {class_path if named else 'pkg.module.Class'} (evaluate, sample) or model.class_path in the "
        "config (fit)")


def allowed_models() -> dict[str, type]:
    """The classes a checkpoint may name: the models ``gan_lightning.models`` exports (not their base)."""
    import gan_lightning.models as models

    base = models.AdversarialModule
    exported = {name: getattr(models, name) for name in models.__all__}
    return {name: obj for name, obj in exported.items()
            if isinstance(obj, type) and issubclass(obj, base) and obj is not base}


def model_settings(cls: type, hparams: dict, file: str | Path) -> dict:
    """The checkpoint's saved settings that ``cls.__init__`` accepts (its own and those its ``**kwargs`` pass to
    the model classes above it). ``save_hyperparameters`` records plain values only; a dict with a
    ``class_path`` (an optimizer, say) is instantiated by whoever reads it, so a checkpoint holding one, or any
    other object, was not written by fit and is refused naming the setting."""
    from gan_lightning.models import AdversarialModule

    accepted = {name for klass in cls.__mro__ if issubclass(klass, AdversarialModule) and "__init__" in vars(klass)
                for name in inspect.signature(klass.__init__).parameters if name not in ("self", "args", "kwargs")}
    settings = {key: value for key, value in hparams.items() if key in accepted}
    for key, value in settings.items():
        if not plain(value):
            raise CheckpointError(f"checkpoint {file}: model setting {key!r} holds {_short(value, 120)}, where a "
                                  "plain value (a number, a string, a list of them) belongs; it was not written by "
                                  "`python -m gan_lightning fit` and is not loaded")
    return settings


def plain(value: object) -> bool:
    """A number, a string, None, or lists and string-keyed dicts of them, none of them naming a class to build."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(plain(item) for item in value)
    if isinstance(value, dict):
        builds = {"class_path", "_class_path", "_instantiator"} & set(value)
        return not builds and all(isinstance(key, str) and plain(item) for key, item in value.items())
    return False


def _short(value: object, limit: int) -> str:
    """``repr(value)``, cut to ``limit`` characters: a forged file's text stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _unreadable(file: Path, err: BaseException) -> CheckpointError:
    first_line = (str(err).splitlines() or [""])[0]
    return CheckpointError(f"checkpoint {file} cannot be read ({type(err).__name__}: {first_line}); it is truncated, "
                           "corrupted or not a checkpoint: use another one (last.ckpt is rewritten at every save; "
                           "the epoch checkpoints beside it are older copies)")


def write_atomically(checkpoint: dict, path: str | Path) -> None:
    """``torch.save`` to ``<path>.partial``, fsync, rename over ``path``: a failure leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException as err:
        partial.unlink(missing_ok=True)
        if isinstance(err, OSError):
            kept = f"{path} is unchanged" if path.exists() else f"no {path.name} was written"
            raise CheckpointError(f"could not write checkpoint {path} ({err.strerror or err}): {kept}, and the "
                                  f"other checkpoints in {path.parent} are whole; free space there (or move "
                                  "trainer.default_root_dir), then resume with --ckpt_path last") from err
        raise


CHECKPOINT_PATH_FIELDS = ("best_model_path", "kth_best_model_path", "last_model_path")


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path``, resolved (``..`` and symlinks followed), lies in ``folder``, resolved."""
    try:
        return Path(path).expanduser().resolve().is_relative_to(Path(folder).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return False


def _same_folder(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def confine_checkpoint_state(state: object, folder: str | Path) -> tuple[dict, list[str]]:
    """A ``ModelCheckpoint``'s state from a checkpoint with every path that does not resolve inside
    ``folder`` (the callback's own folder in this run) dropped; returns it and the dropped paths.

    Lightning restores ``best_model_path`` always and the other paths when the saved ``dirpath`` equals the
    callback's; it later removes the "previous" last and k-th best checkpoint, and ``--ckpt_path best`` loads the
    best one. A path that a file from elsewhere chose must do neither."""
    if not isinstance(state, dict):
        return {}, [f"the whole state ({_short(state, 80)})"]
    state, dropped = dict(state), []
    for key in CHECKPOINT_PATH_FIELDS:
        value = state.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or "://" in value or not inside(value, folder):
            dropped.append(_short(value, 200))
            state[key] = ""
    best = state.get("best_k_models")
    if best is not None:
        if not isinstance(best, dict):
            dropped.append(f"best_k_models ({_short(best, 80)})")
            state.pop("best_k_models")
        else:
            kept = {path: score for path, score in best.items()
                    if isinstance(path, str) and "://" not in path and inside(path, folder)}
            dropped += [_short(path, 200) for path in best if path not in kept]
            state["best_k_models"] = kept
    if "best_model_path" not in state:  # Lightning reads it unconditionally
        state["best_model_path"] = ""
    state.setdefault("best_model_score", None)
    return state, dropped


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic local writes and weights-only reads (see the module docstring), which
    removes only checkpoint files of its ``folders`` (the run's ModelCheckpoint folders): never a folder, never a
    file elsewhere, whatever path a restored callback state names."""

    def __init__(self, folders: list[str | Path] = ()) -> None:
        super().__init__()
        self.folders = list(folders)

    def remove_checkpoint(self, path) -> None:
        file = Path(path)
        removable = ("://" not in str(path) and file.suffix == ".ckpt" and (file.is_symlink() or file.is_file())
                     and any(_same_folder(file.parent, folder) for folder in self.folders))
        if not removable:
            rank_zero_warn(f"gan_lightning: {_short(str(path), 200)} was not removed: only checkpoint files directly "
                           f"in this run's checkpoint folder ({', '.join(map(str, self.folders)) or 'none known'}) "
                           "are removed")
            return
        file.unlink(missing_ok=True)  # a symlink itself, never what it points at

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote file systems: Lightning's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_atomically(checkpoint, path)

    def load_checkpoint(self, path, map_location: Callable | None = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return read_checkpoint(path, map_location, weights_only=weights_only is not False)
