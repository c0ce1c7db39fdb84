"""A checkpoint from elsewhere cannot choose what is deleted, overwritten or loaded (docs/failures.md).

Lightning restores a ``ModelCheckpoint``'s state from the file it resumes (``best_model_path`` always; the last,
k-th best and top-k paths when the saved ``dirpath`` equals the callback's), later removes the "previous" last and
k-th best checkpoint, and ``--ckpt_path best`` loads the best one. Its guard (``dirpath in
Path(previous).absolute().parents``) does not resolve ``..``. Two guards here: the paths of a restored state that do
not resolve inside the callback's folder are dropped with a warning (``confine_checkpoint_state``), and
``SafeCheckpointIO`` removes only checkpoint files directly in the run's checkpoint folders, never a folder.
"""
from pathlib import Path

import pytest
import torch

from gan_lightning.cli import main
from tests.conftest import toy_fit_args


def fit(run: Path, *extra: str) -> None:
    main(toy_fit_args(run, *extra))


def victims(root: Path) -> dict[Path, bytes]:
    """Files and a folder outside the run, each a target a forged state may name; their contents."""
    folder = root / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_bytes(b"years of work")
    (root / "results.ckpt").write_bytes(b"another run's checkpoint")
    return {folder / "thesis.tex": b"years of work", root / "results.ckpt": b"another run's checkpoint"}


def forge_paths(checkpoint: dict, checkpoints: Path, outside: Path) -> list[str]:
    """Point every path field of the ModelCheckpoint state at ``outside``, by ``..`` and by a symlink inside
    ``checkpoints``; returns the forged paths."""
    (checkpoints / "link.ckpt").symlink_to(outside / "results.ckpt")
    dotdot = str(checkpoints / ".." / ".." / ".." / "precious")  # a folder outside, reached through ..
    paths = [dotdot, str(checkpoints / "link.ckpt"), str(outside / "results.ckpt")]
    for key, state in checkpoint["callbacks"].items():
        if key.startswith("ModelCheckpoint"):
            state.update(last_model_path=dotdot, kth_best_model_path=paths[1], best_model_path=paths[2],
                         best_k_models={path: torch.tensor(0.0) for path in paths}, dirpath=str(checkpoints))
    return paths


@pytest.mark.slow
def test_a_forged_checkpoint_state_deletes_and_loads_nothing_outside_the_run(toy_run, tmp_path):
    """The issue's reproduction: resuming a checkpoint whose ModelCheckpoint state names a folder outside the
    run (through ``..``), a symlink to a file outside, and a file outside. All survive, unchanged, and each
    path is named in a warning; the run goes on and writes its own last.ckpt."""
    outside = tmp_path / "outside"
    outside.mkdir()
    files = victims(outside)
    run = outside / "a" / "run"  # the run's checkpoints/../../.. is `outside`
    checkpoints = run / "checkpoints"
    checkpoints.mkdir(parents=True)
    checkpoint = torch.load(toy_run / "checkpoints" / "last.ckpt", weights_only=True)
    forged = forge_paths(checkpoint, checkpoints, outside)
    torch.save(checkpoint, checkpoints / "last.ckpt")

    with pytest.warns(UserWarning) as caught:
        fit(run, "--trainer.max_epochs", "2", "--ckpt_path", str(checkpoints / "last.ckpt"))
    for file, content in files.items():
        assert file.read_bytes() == content, f"{file} was changed or removed"
    assert (checkpoints / "link.ckpt").is_symlink()
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["gan_lightning"]["iteration"] == 8
    said = " ".join(str(warning.message) for warning in caught)
    for path in forged:
        assert f"names {path}" in said or f"names {path!r}" in said, f"no warning names {path}"


def test_a_clean_state_is_kept_and_a_forged_one_starts_the_ranking_afresh(tmp_path):
    """Paths inside the folder and numeric scores (inf is the starting k-th value) are kept as they are; one path
    outside or one NaN score and the state is what a new callback holds (paths and scores go together: Lightning
    reads best_k_models[kth_best_model_path]), keeping only a last_model_path inside the folder."""
    from gan_lightning.checkpoints import confine_checkpoint_state

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "loop.ckpt").symlink_to(folder / "loop.ckpt")  # a symlink loop: never followed for ever
    inside, last = str(folder / "epoch=1.ckpt"), str(folder / "last.ckpt")
    clean = {"dirpath": str(folder), "best_model_path": inside, "best_model_score": torch.tensor(0.5),
             "kth_best_model_path": inside, "kth_value": torch.tensor(float("inf")), "last_model_path": last,
             "best_k_models": {inside: torch.tensor(0.5)}}
    assert confine_checkpoint_state(clean, folder) == (clean, [])
    fresh = {"dirpath": str(folder), "best_model_path": "", "best_model_score": None, "last_model_path": last}
    for forged, culprit in [({"last_model_path": str(folder / ".." / "x.ckpt")}, "x.ckpt"),
                            ({"kth_best_model_path": "s3://bucket/run/x.ckpt"}, "s3://"),
                            ({"best_k_models": {inside: 1.0, str(folder / "loop.ckpt"): 2.0}}, "loop.ckpt"),
                            ({"best_k_models": {inside: 1.0, "/etc/passwd": 3.0}}, "/etc/passwd"),
                            ({"best_model_score": torch.tensor(float("nan"))}, "scores")]:
        kept, dropped = confine_checkpoint_state({**clean, **forged}, folder)
        expected = fresh if "last_model_path" not in forged else {k: v for k, v in fresh.items()
                                                                     if k != "last_model_path"}
        assert kept == expected and len(dropped) == 1 and culprit in dropped[0], (forged, kept, dropped)
    kept, dropped = confine_checkpoint_state(["not", "a", "dict"], folder)
    assert kept == {"best_model_path": "", "best_model_score": None} and dropped


def test_safe_checkpoint_io_removes_only_checkpoint_files_of_its_folders(tmp_path):
    from gan_lightning.checkpoints import SafeCheckpointIO

    folder, elsewhere = tmp_path / "checkpoints", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (elsewhere / "keep.ckpt").write_text("x")
    (folder / "a_folder.ckpt").mkdir()
    (folder / "a_folder.ckpt" / "inside").write_text("x")
    (folder / "notes.txt").write_text("x")
    (folder / "link.ckpt").symlink_to(elsewhere / "keep.ckpt")
    (folder / "old.ckpt").write_text("x")
    io = SafeCheckpointIO(folders=[folder])
    for path in (elsewhere / "keep.ckpt", folder / "a_folder.ckpt", folder / "notes.txt",
                 folder / ".." / "elsewhere" / "keep.ckpt", "memory://x/old.ckpt"):
        with pytest.warns(UserWarning, match="was not removed"):
            io.remove_checkpoint(path)
    assert (elsewhere / "keep.ckpt").exists() and (folder / "a_folder.ckpt" / "inside").exists()
    assert (folder / "notes.txt").exists()
    io.remove_checkpoint(folder / "link.ckpt")  # the link goes, not what it points at
    io.remove_checkpoint(folder / "old.ckpt")
    assert not (folder / "link.ckpt").is_symlink() and (elsewhere / "keep.ckpt").exists()
    assert not (folder / "old.ckpt").exists()


def test_on_a_remote_folder_only_its_own_checkpoint_files_are_removed():
    """A ModelCheckpoint on s3:// or gs:// (fsspec): Lightning's rotation still removes its old checkpoints, and a
    path elsewhere on the same store, or climbing out with .., is kept."""
    import fsspec

    from gan_lightning.checkpoints import SafeCheckpointIO

    memory = fsspec.filesystem("memory")
    for path in ("run/checkpoints/old.ckpt", "other/keep.ckpt", "run/keep.ckpt"):
        memory.pipe(f"memory://{path}", b"x")
    io = SafeCheckpointIO(folders=["memory://run/checkpoints"])
    for path in ("memory://other/keep.ckpt", "memory://run/checkpoints/../keep.ckpt"):
        with pytest.warns(UserWarning, match="was not removed"):
            io.remove_checkpoint(path)
    io.remove_checkpoint("memory://run/checkpoints/old.ckpt")
    assert not memory.exists("memory://run/checkpoints/old.ckpt")
    assert memory.exists("memory://other/keep.ckpt") and memory.exists("memory://run/keep.ckpt")
