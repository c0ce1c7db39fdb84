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
(``subprocess.run`` with ``shell: True``). ``gan_lightning.models.registry`` turns a checkpoint's hyperparameters
into a model class and its arguments without importing or calling anything the file names.

Before anything is built from a file, it is checked here: its zip entries inflate to no more than the file
(``inflation_bounded``), its layout is a checkpoint's (``check_layout``), its settings have the types the model's
signature declares (``check_settings``) and build, on the ``meta`` device, the weights the file holds
(``check_weights``); paths in its callbacks' states stay in the run (``confine_checkpoint_state``). This module
knows files and schemas only: it imports no model.
"""
import contextlib
import math
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from gan_lightning.errors import first_line


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, of another model or shape, or cannot be written."""


def read_checkpoint(path: str | Path, map_location: Any = "cpu", weights_only: bool = True) -> dict:
    """``torch.load`` of a checkpoint file, every failure turned into one line naming the file and the fix."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} not found; checkpoints are in <default_root_dir>/checkpoints/")
    if not zipfile.is_zipfile(file):  # torch.save writes a zip archive; a cut one loses its directory at the end
        raise _unreadable(file, ValueError("not a whole zip archive"))
    inflation_bounded(file)
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=weights_only)
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
    check_layout(checkpoint, file)
    return checkpoint


def inflation_bounded(file: Path, what: str = "checkpoint") -> None:
    """``torch.save`` stores a file's entries uncompressed, so together they are no larger than the file: a file
    whose entries would inflate past its own size (a zip bomb) is refused before anything is read."""
    try:
        with zipfile.ZipFile(file) as archive:
            inflated = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise _unreadable(file, err) from None
    size = file.stat().st_size
    if inflated > size:
        raise CheckpointError(f"{what} {file} is a zip archive whose entries inflate to {inflated:,} bytes from "
                              f"{size:,}: torch.save stores them uncompressed, so it was not written by torch.save "
                              "and is not read; use a file written by gan_lightning")


# The layout of a checkpoint as Lightning and AdversarialModule write it: the type of each top-level entry.
LAYOUT = {"epoch": int, "global_step": int, "state_dict": dict, "loops": dict, "callbacks": dict,
          "optimizer_states": list, "lr_schedulers": list, "hyper_parameters": dict,
          "datamodule_hyper_parameters": dict, "gan_lightning": dict}
# gan_lightning's own entry (``CheckpointState.on_save_checkpoint``): each counter's type and least value.
COUNTERS = {"iteration": 0, "images_seen": 0, "scheduler_epochs": -1}


def check_layout(checkpoint: object, file: str | Path) -> None:
    """The checkpoint's layout, checked before anything is built from it: a dict whose known entries have the
    types Lightning writes, a ``state_dict`` of named tensors and gan_lightning's counters as whole numbers. Any
    other layout: one ``CheckpointError`` line naming the file, the entry and what belongs there."""
    if not isinstance(checkpoint, dict):
        raise _misfit(file, "the file", checkpoint, "a dict of a checkpoint's entries")
    for key, kind in LAYOUT.items():
        if key in checkpoint and not (isinstance(checkpoint[key], kind) and not isinstance(checkpoint[key], bool)):
            raise _misfit(file, f"entry {key!r}", checkpoint[key], f"a {kind.__name__}")
    for key in ("epoch", "global_step"):
        if checkpoint.get(key, 0) < 0:
            raise _misfit(file, f"entry {key!r}", checkpoint[key], "a count >= 0")
    for name, tensor in checkpoint.get("state_dict", {}).items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise _misfit(file, f"state_dict entry {_short(name, 80)}", tensor, "a tensor under a parameter's name")
    for key in ("optimizer_states", "lr_schedulers"):
        for i, state in enumerate(checkpoint.get(key, [])):
            if not isinstance(state, dict):
                raise _misfit(file, f"{key}[{i}]", state, "a dict (an optimizer's or scheduler's state_dict)")
    ours = checkpoint.get("gan_lightning", {})
    for key, least in COUNTERS.items():
        value = ours.get(key, least)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise _misfit(file, f"gan_lightning[{key!r}]", value, f"a whole number >= {least}")
    if not isinstance(ours.get("model", ""), str):
        raise _misfit(file, "gan_lightning['model']", ours["model"], "a model's class name")
    skipped = ours.get("skipped", {})
    if not (isinstance(skipped, dict) and all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                              and v >= 0 for k, v in skipped.items())):
        raise _misfit(file, "gan_lightning['skipped']", skipped, "a count of skipped updates per player")


def _misfit(file: str | Path, where: str, value: object, belongs: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {file}: {where} holds {_short(value, 100)}, where {belongs} belongs: it was "
                           "not written by `python -m gan_lightning fit`, or was damaged; use another checkpoint")


def same_kind(template: object, value: object) -> bool:
    """Whether ``value`` may stand where ``template`` (a value this code writes) stands: a bool for a bool, a
    finite number for a number, a sequence of as many such items for a sequence, a tensor of the same shape for
    a tensor, anything plain (None, a bool, a number) for None, else a value of the same type."""
    if isinstance(template, bool):
        return isinstance(value, bool)
    if isinstance(template, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(template, (list, tuple)):
        return (isinstance(value, (list, tuple)) and (not template or len(value) == len(template))
                and all(same_kind(t, v) for t, v in zip(template, value, strict=False)))
    if isinstance(template, torch.Tensor):
        return isinstance(value, torch.Tensor) and value.shape == template.shape
    if template is None:
        return value is None or isinstance(value, (bool, int, float))
    return isinstance(value, type(template))


def structure_mismatch(template: object, value: object, where: str) -> str | None:
    """Where ``value`` differs in layout from ``template`` (a state this code or Lightning writes): a value of
    another kind (``same_kind``) under a key both have; None when it fits. Keys may be missing (an older torch or
    Lightning wrote fewer, and their loaders fill in defaults) or extra (a newer one wrote more)."""
    if isinstance(template, dict):
        if not isinstance(value, dict):
            return f"{where} is {_short(value, 60)}, not a dict"
        for key, item in template.items():
            if key not in value:
                continue
            found = structure_mismatch(item, value[key], f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(template, list) and template and isinstance(value, list) and len(value) == len(template):
        return next((found for i, (t, v) in enumerate(zip(template, value, strict=True))
                     if (found := structure_mismatch(t, v, f"{where}[{i}]"))), None)
    return None if same_kind(template, value) else f"{where} is {_short(value, 60)}"


def optimizer_state_mismatch(optimizer: torch.optim.Optimizer, saved: dict, where: str) -> str | None:
    """Where a saved optimizer state does not fit ``optimizer`` (freshly built over the same parameters): other
    parameter groups, a setting of another kind (torch would raise at the first step), per-parameter state
    naming no parameter, with other keys than the rest, or of another shape than its parameter."""
    fresh = optimizer.state_dict()
    groups, state = saved.get("param_groups"), saved.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict):
        return f"{where} lacks its state or param_groups"
    if len(groups) != len(fresh["param_groups"]):
        return f"{where} has {len(groups)} parameter groups, not {len(fresh['param_groups'])}"
    for i, theirs in enumerate(groups):
        if not isinstance(theirs, dict) or theirs.get("params") != fresh["param_groups"][i]["params"]:
            return f"{where}.param_groups[{i}] holds other parameters"
    try:  # as torch will: into this throwaway optimizer, which fills the settings an older torch did not write
        optimizer.load_state_dict(saved)
    except Exception as err:
        return f"{where} does not load ({type(err).__name__}: {first_line(err)})"
    for i, (ours, theirs) in enumerate(zip(fresh["param_groups"], optimizer.state_dict()["param_groups"],
                                           strict=True)):
        settings = {k: v for k, v in ours.items() if k != "params"}
        missing = [key for key in settings if key not in theirs]
        found = (f"{where}.param_groups[{i}] lacks {', '.join(missing)}" if missing else
                 structure_mismatch(settings, theirs, f"{where}.param_groups[{i}]"))
        if found:
            return found
    params = [p for group in optimizer.param_groups for p in group["params"]]
    keys = None
    for index, entry in state.items():
        if not (isinstance(index, int) and 0 <= index < len(params)) or not isinstance(entry, dict):
            return f"{where}.state[{_short(index, 40)}] names no parameter"
        keys = set(entry) if keys is None else keys
        if set(entry) != keys:
            return f"{where}.state[{index}] holds {sorted(map(str, entry))}, the others {sorted(map(str, keys))}"
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                if value.dim() and value.shape != params[index].shape:
                    return f"{where}.state[{index}][{name!r}] is {tuple(value.shape)}, its parameter " \
                           f"{tuple(params[index].shape)}"
            elif not (isinstance(value, (int, float)) and not isinstance(value, bool)):
                return f"{where}.state[{index}][{name!r}] is {_short(value, 60)}"
    return None


def scheduler_state_mismatch(scheduler: object, saved: dict, where: str) -> str | None:
    """Where a saved scheduler state does not fit ``scheduler`` (freshly built): loaded into it as Lightning will,
    then compared with its fresh state (an older torch wrote fewer keys; the fresh ones stand in for them)."""
    template = scheduler.state_dict()
    try:
        scheduler.load_state_dict(saved)
    except Exception as err:
        return f"{where} does not load ({type(err).__name__}: {first_line(err)})"
    return structure_mismatch(template, scheduler.state_dict(), where)


def check_settings(cls: type, settings: dict, file: str | Path, group: str = "model") -> None:
    """The type and range of each of ``settings`` as ``cls.__init__``'s signature declares them (jsonargparse,
    as for a config): a setting of the wrong type or outside its choices is one line naming it."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, group, fail_untyped=False, sub_configs=False)
    known = {key.split(".", 1)[1] for key in parser.get_defaults().keys() if key.startswith(f"{group}.")}
    typed = {key: value for key, value in settings.items() if key in known}
    try:
        parser.parse_object({group: typed}, defaults=False)
    except Exception as err:  # jsonargparse's ArgumentError: "Parser key "model.width": Expected ..."
        said = " ".join(" ".join(str(err).split()).split("Given value type")[0].split())
        raise CheckpointError(f"{source_name(file)}: its {group} settings do not fit {cls.__name__} "
                              f"({_short(said, 240)}): it was not written by this version of gan_lightning, or was "
                              "edited") from None


@contextlib.contextmanager
def modules_bounded(limit: int, source: str) -> Iterator[None]:
    """Inside, building more than ``limit`` modules raises ``CheckpointError``: a meta-device build allocates no
    tensor memory, but each module is a real Python object, and a forged depth (``steps_per_level: 10**7``) would
    exhaust memory and hours before any weight is compared. ``limit``: a few modules per tensor the file holds."""
    count = 0

    def counted(module, name, submodule):
        nonlocal count
        count += 1
        if count > limit:
            raise CheckpointError(f"{source}: its settings build more than {limit:,} modules, several times what the "
                                  "weights it holds need: they were edited; use a file written by gan_lightning")

    handle = torch.nn.modules.module.register_module_module_registration_hook(counted)
    try:
        yield
    finally:
        handle.remove()


def module_limit(tensors: int) -> int:
    """The modules a model whose file holds ``tensors`` tensors may build (``modules_bounded``): the shipped
    models build fewer than 2 per tensor, containers and activations included."""
    return 8 * tensors + 1000


def build_on_meta(cls: type, settings: dict, tensors: int, source: str, fix: str = "use another checkpoint"):
    """``cls(**settings)`` on the ``meta`` device: no tensor memory, and at most ``module_limit(tensors)`` modules for
    a file that holds ``tensors`` tensors (``modules_bounded``). A failure is one line naming ``source``."""
    try:
        with torch.device("meta"), modules_bounded(module_limit(tensors), source):
            return cls(**settings)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{source}: its settings do not build a {cls.__name__} ({type(err).__name__}: "
                              f"{first_line(err)}): it was not written by this version of gan_lightning, or was "
                              f"edited; {fix}") from None


def check_weights(cls: type, settings: dict, state_dict: dict, file: str | Path) -> None:
    """Build ``cls(**settings)`` on the ``meta`` device (``build_on_meta``) and compare its weights' names, shapes
    and kinds with the checkpoint's before anything is allocated: a setting that would build other or larger
    networks than the file holds (``width: 10**7``, ``steps_per_level: 10**7``) is refused in one line, and nothing
    is built for real."""
    model = build_on_meta(cls, settings, len(state_dict), f"checkpoint {file}")
    refuse_other_weights(model.state_dict(), state_dict, f"checkpoint {file}", cls.__name__)


def refuse_other_weights(ours: dict, theirs: dict, source: str, name: str, fix: str = "") -> None:
    """One line when ``theirs`` (a checkpoint's state_dict) has other names, shapes or kinds than ``ours``."""
    missing, unexpected = [k for k in ours if k not in theirs], [k for k in theirs if k not in ours]
    misfits = [f"{key} is {tuple(theirs[key].shape)} there, {tuple(value.shape)} here" for key, value in ours.items()
               if key in theirs and tuple(theirs[key].shape) != tuple(value.shape)]
    misfits += [f"{key} holds {theirs[key].dtype} there, {value.dtype} here" for key, value in ours.items()
                if key in theirs and theirs[key].is_floating_point() != value.is_floating_point()]
    problems = ([f"{len(missing)} weights missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"]
                if missing else [])
    problems += ([f"{len(unexpected)} unknown weights ({', '.join(_short(k, 60) for k in unexpected[:3])}"
                  f"{', ...' if len(unexpected) > 3 else ''})"] if unexpected else [])
    problems += misfits[:1] + ([f"{len(misfits) - 1} more misfits"] if len(misfits) > 1 else [])
    if problems:
        raise CheckpointError(f"{source} does not hold the weights of this {name} ({'; '.join(problems)}): "
                              f"{fix or 'it was trained with other settings or edited; use its own settings'}")


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


def source_name(file: str | Path) -> str:
    """How an error names a file of settings: ``checkpoint PATH``, or ``model folder PATH`` for an exported folder
    (``pretrained.py``: the folder, or its config.json)."""
    path = Path(file)
    return f"model folder {path.parent}" if path.name == "config.json" else \
        f"model folder {path}" if path.is_dir() else f"checkpoint {path}"


def _short(value: object, limit: int) -> str:
    """``repr(value)``, cut to ``limit`` characters: a forged file's text stays one short line."""
    text = " ".join(repr(value).split())  # one line, whatever the value prints as
    return text if len(text) <= limit else text[:limit] + "..."


def _unreadable(file: Path, err: BaseException) -> CheckpointError:
    return CheckpointError(f"checkpoint {file} cannot be read ({type(err).__name__}: {first_line(err)}); it is "
                           "truncated, corrupted or not a checkpoint: use another one (last.ckpt is rewritten at every "
                           "save; the epoch checkpoints beside it are older copies)")


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
    """A ``ModelCheckpoint``'s state from a checkpoint, with what a file from elsewhere could misuse taken out;
    returns it and what was dropped.

    Lightning restores ``best_model_path`` always and the other paths when the saved ``dirpath`` equals the
    callback's; it later removes the "previous" last and k-th best checkpoint, ``--ckpt_path best`` loads the
    best one, and with a ``monitor`` it compares the saved scores. Every path must resolve (``..`` and symlinks
    followed) inside ``folder``, the callback's own folder in this run, and every score must be a number (±inf is
    the starting k-th value; NaN is not a score);
    otherwise the state is reduced to what a new callback holds (its ranking starts afresh), keeping only a
    ``last_model_path`` inside the folder."""
    if not isinstance(state, dict):
        return {"best_model_path": "", "best_model_score": None}, [f"the whole state ({_short(state, 80)})"]
    dropped = []
    for key in CHECKPOINT_PATH_FIELDS:
        value = state.get(key)
        if value not in (None, "") and not (isinstance(value, str) and "://" not in value and inside(value, folder)):
            dropped.append(_short(value, 200))
    best = state.get("best_k_models", {})
    if not isinstance(best, dict):
        dropped.append(f"best_k_models ({_short(best, 80)})")
        best = {}
    dropped += [_short(path, 200) for path in best
                if not (isinstance(path, str) and "://" not in path and inside(path, folder))]
    scores = [state.get("best_model_score"), state.get("kth_value"), *best.values()]
    if not all(score is None or _score(score) for score in scores):
        dropped.append(f"scores {_short([s for s in scores if s is not None and not _score(s)], 80)}")
    if not dropped:
        return state, []
    last = state.get("last_model_path")
    kept = {"dirpath": state.get("dirpath"), "best_model_path": "", "best_model_score": None}
    if isinstance(last, str) and last and "://" not in last and inside(last, folder):
        kept["last_model_path"] = last
    return kept, dropped


def _score(score: object) -> bool:
    """A monitored value as ModelCheckpoint keeps it: one number, not NaN."""
    if isinstance(score, torch.Tensor):
        return score.numel() == 1 and score.is_floating_point() and not bool(score.isnan().any())
    return isinstance(score, (int, float)) and not isinstance(score, bool) and not math.isnan(score)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic local writes and weights-only reads (see the module docstring), which
    removes only checkpoint files of its ``folders`` (the run's ModelCheckpoint folders): never a folder, never a
    file elsewhere, whatever path a restored callback state names."""

    def __init__(self, folders: list[str | Path] = ()) -> None:
        super().__init__()
        self.folders = list(folders)

    def remove_checkpoint(self, path) -> None:
        if "://" in str(path):  # a remote folder (s3://...): a checkpoint file directly in one of ours, by name
            name, parent = str(path).rsplit("/", 1)[-1], str(path).rsplit("/", 1)[0]
            if name.endswith(".ckpt") and ".." not in str(path).split("/") and \
                    any(parent == str(folder).rstrip("/") for folder in self.folders):
                return super().remove_checkpoint(path)
            removable = False
        else:
            file = Path(path)
            removable = (file.suffix == ".ckpt" and (file.is_symlink() or file.is_file())
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
        checkpoint = read_checkpoint(path, map_location, weights_only=weights_only is not False)
        check_lightning_layout(checkpoint, path)
        return checkpoint


def check_lightning_layout(checkpoint: dict, file: str | Path) -> None:
    """What Lightning reads from every checkpoint it restores, before any of our hooks see it: its version (Lightning
    migrates older layouts by it), the epoch and the global step."""
    from packaging.version import InvalidVersion, Version

    for key, kind in (("pytorch-lightning_version", str), ("epoch", int), ("global_step", int), ("state_dict", dict)):
        if not isinstance(checkpoint.get(key), kind):
            raise _misfit(file, f"entry {key!r}", checkpoint.get(key, "nothing"), f"a {kind.__name__}")
    try:
        version = Version(checkpoint["pytorch-lightning_version"])
    except InvalidVersion:
        version = None
    if version is None or version < Version("2.0"):
        raise _misfit(file, "entry 'pytorch-lightning_version'", checkpoint["pytorch-lightning_version"],
                      "the version of Lightning 2 that wrote it (gan_lightning has never written another)")
