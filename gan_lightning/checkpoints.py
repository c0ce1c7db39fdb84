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
"""
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


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


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic local writes and weights-only reads (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote file systems: Lightning's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_atomically(checkpoint, path)

    def load_checkpoint(self, path, map_location: Optional[Callable] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return read_checkpoint(path, map_location, weights_only=weights_only is not False)
