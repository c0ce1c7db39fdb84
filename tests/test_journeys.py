"""Journeys: the documented commands, run end to end as a researcher runs them, in order, through the real command
line (a new process each, as from a shell) on the smoke overlay.

Each step asserts what a user sees: the command succeeds, prints no traceback and no warning they cannot act on,
the files it says it wrote exist, and every path it prints under the run folder is real. Nothing is written outside
the run folder (the repository's tree is compared before and after). `tests/test_docs.py` parses every documented
command; this tier runs the journeys. Budget: about 5 minutes on 2 CPU cores (marked slow).
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = "configs/overlays/smoke.yaml"
pytestmark = pytest.mark.slow

# Lines that are fine: Lightning's start-up facts, and progress bars. A Python warning is printed as
# "<file>:<line>: <Category>Warning: ..." or, through Lightning's rank_zero_warn, "<file>:<line>: <message>".
WARNING = re.compile(r"(^|\s)\S+\.py:\d+: ")


def run(*args: str, cwd: Path = REPO, ok: bool = True, timeout: int = 900) -> str:
    """``python -m gan_lightning ARGS``: its output and errors as a terminal shows them, checked."""
    env = {**os.environ, "WANDB_MODE": "disabled"}  # warnings as a user sees them (Python's default filters)
    done = subprocess.run([sys.executable, "-m", "gan_lightning", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if ok:
        check(done.stdout, done.returncode, args)
    return done.stdout


def check(out: str, returncode: int, args) -> None:
    assert returncode == 0, f"{' '.join(args)} exited {returncode}:\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    warnings = [line for line in re.split(r"[\r\n]", out) if WARNING.search(line)]
    assert not warnings, f"{' '.join(args)} printed warnings a user cannot act on: {warnings}"


def printed_paths(out: str, root: Path) -> list[Path]:
    """Every path under ``root`` the output names (folders and files)."""
    found = re.findall(re.escape(str(root)) + r"[^\s'\"(),:]*", out)
    return [Path(p.rstrip(".")) for p in found]


def assert_printed_paths_exist(out: str, root: Path) -> None:
    paths = printed_paths(out, root)
    missing = [p for p in paths if not p.exists()]
    assert not missing, f"printed but not there: {missing}"


def repository_files() -> set[str]:
    """The repository's files a run could write, less the data folder (a dataset may be staged there) and caches."""
    skip = ("data", ".venv", ".git", ".pytest_cache", ".hypothesis", ".ruff_cache")
    return {str(p.relative_to(REPO)) for p in REPO.rglob("*")
            if p.is_file() and p.relative_to(REPO).parts[0] not in skip and "__pycache__" not in p.parts}


@pytest.fixture()
def untouched_repository():
    before = repository_files()
    yield
    assert repository_files() - before == set(), "files were written outside the run folder"


def test_the_toy_journey_fit_stop_resume_validate_test_predict_evaluate_sample_compare_submit(tmp_path,
                                                                                            untouched_repository):
    run_dir = tmp_path / "ring"
    config = ["--config", "configs/toy/bigan_ring.yaml", "--run_dir", str(run_dir), "--wandb.mode", "off"]

    # 1. fit, as the SLURM scripts run it: `--ckpt_path last` on a first run starts one, in one line
    out = run("fit", *config, "--config", SMOKE, "--ckpt_path", "last")
    assert f"no last.ckpt in {run_dir / 'checkpoints'} yet: a new run starts at iteration 0" in out
    for name in ("last.ckpt", "best.ckpt", "epoch=0-iteration=4.ckpt"):
        assert (run_dir / "checkpoints" / name).is_file(), name
    assert re.search(r"scores +: modes \S+ +high_quality \S+ +reverse_kl \S+ \(iteration 4, ModeCoverage\)", out)
    assert_printed_paths_exist(out, run_dir)

    # 2. stop it (SIGTERM, as scancel does) inside an epoch, and resume where it stopped
    longer = [*config, "--trainer.limit_val_batches", "0", "--trainer.max_epochs", "2"]
    process = subprocess.Popen([sys.executable, "-m", "gan_lightning", "fit", *longer, "--ckpt_path", "last"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "WANDB_MODE": "disabled"})
    seen = ""
    while "resuming at iteration 4" not in seen:
        seen += process.stdout.read(1)
        assert process.poll() is None, seen[-2000:]
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=300)
    out = seen + rest
    check(out, process.returncode, ["fit (stopped)"])
    stopped_at = int(re.search(r"saved .*iteration (\d+)", out)[1])
    assert stopped_at > 4, out[-2000:]
    assert "--ckpt_path last" in out          # it says how to resume
    out = run("fit", *longer, "--trainer.max_steps", str(stopped_at + 1), "--ckpt_path", "last")
    assert f"resuming at iteration {stopped_at}, epoch 1" in out      # where the resumed run started
    assert "finished at iteration " + str(stopped_at + 1) in out

    # 3. validate and test the best and the last checkpoints: into the checkpoint's run, said where
    out = run("validate", *config, "--config", SMOKE, "--ckpt_path", "best")
    assert f"(the checkpoint {run_dir / 'checkpoints' / 'best.ckpt'})" in out
    assert list((run_dir / "validate" / "best" / "logs").rglob("metrics.csv"))
    assert_printed_paths_exist(out, run_dir)
    out = run("test", *config, "--config", SMOKE, "--ckpt_path", "last")
    assert list((run_dir / "test" / "last" / "logs").rglob("metrics.csv"))
    assert_printed_paths_exist(out, run_dir)

    # 4. predict: samples, codes and reconstructions in sample's layout
    out = run("predict", *config, "--config", SMOKE, "--ckpt_path", "last")
    assert_printed_paths_exist(out, run_dir)
    [npz] = [p for p in printed_paths(out, run_dir) if p.suffix == ".npz"]
    with np.load(npz) as predicted:
        assert predicted["x"].ndim == 2 and predicted["x"].shape[1] == 2 and "z" in predicted

    # 5. evaluate (the toy scores, PacGAN's protocol) and sample
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = run("evaluate", "--ckpt_path", str(ckpt), "--out", str(run_dir / "eval.json"))
    assert "modes" in out and "high_quality" in out and (run_dir / "eval.json").is_file()
    out = run("sample", "--ckpt_path", str(ckpt), "--n", "500", "--out", str(run_dir / "samples.npz"))
    assert_printed_paths_exist(out, run_dir)
    with np.load(run_dir / "samples.npz") as sampled:
        assert sampled["x"].shape == (500, 2)
    out = run("sample", "--ckpt_path", "best", "--config", "configs/toy/bigan_ring.yaml", "--run_dir", str(run_dir),
              "--n", "100", "--out", str(run_dir / "best.npz"))
    assert (run_dir / "best.npz").is_file()

    # 6. compare: the run's curves; a GAN's loss is shown, not ranked
    out = run("compare", str(run_dir), "--out", str(run_dir / "compare.png"))
    assert "val/modes  (higher is better)" in out and (run_dir / "compare.png").is_file()
    assert "val/d_loss  (no better direction" in out

    # 7. submit checks the config locally and prints the sbatch line
    out = run("submit", "--config", "configs/toy/bigan_ring.yaml", "--dry-run", "--", "--run_dir", str(run_dir))
    assert out.strip().startswith("sbatch ") and "configs/toy/bigan_ring.yaml" in out
    typo = subprocess.run([sys.executable, "-m", "gan_lightning", "submit", "--config", "configs/toy/bigan_ring.yaml",
                           "--dry-run", "--", "--model.init_args.latnt_dim", "3"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert typo.returncode != 0 and "latent_dim" in typo.stderr and "Traceback" not in typo.stderr
    assert "sbatch" not in typo.stdout


def test_the_image_journey_fit_predict_evaluate_sample_on_fashion_mnist(tmp_path, data_dir,
                                                                                untouched_repository):
    run_dir = tmp_path / "bigan"
    config = ["--config", "configs/bigan.yaml", "--config", SMOKE, "--model.init_args.width", "64",
              "--run_dir", str(run_dir), "--wandb.mode", "off"]
    out = run("fit", *config)
    assert re.search(r"scores +: fd_fashion_classifier \S+", out) and re.search(r"scores +: probe_1nn \S+", out)
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert_printed_paths_exist(out, run_dir)
    out = run("predict", *config, "--ckpt_path", "last", "--trainer.limit_predict_batches", "2")
    assert_printed_paths_exist(out, run_dir)
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    out = run("evaluate", "--ckpt_path", "best", "--config", "configs/bigan.yaml", "--run_dir", str(run_dir),
              "--protocol", "trainsplit10k", "--n_samples", "2000", "--metrics", "fid", "kid",
              "--out", str(run_dir / "eval.json"))
    assert "fd_fashion_classifier" in out and (run_dir / "eval.json").is_file()
    out = run("sample", "--ckpt_path", ckpt, "--n", "64", "--out", str(run_dir / "s.npz"))
    assert_printed_paths_exist(out, run_dir)
    with np.load(run_dir / "s.npz") as sampled:
        assert sampled["x"].shape == (64, 28, 28, 1) and sampled["x"].dtype == np.uint8
    # export (its card holds evaluate's scores beside the checkpoint), then the folder where a checkpoint goes
    out = run("evaluate", "--ckpt_path", ckpt, "--protocol", "trainsplit10k", "--n_samples", "500", "--metrics",
              "fid")
    folder = run_dir / "exported"
    out = run("export", "--ckpt_path", ckpt, "--out", str(folder))
    assert f"gan_lightning.load_pretrained('{folder}')" in out
    assert "| fd_fashion_classifier |" in (folder / "README.md").read_text()  # evaluate's, with its protocol
    out = run("sample", "--ckpt_path", str(folder), "--n", "64", "--out", str(run_dir / "from_folder.npz"))
    with np.load(run_dir / "s.npz") as sampled, np.load(run_dir / "from_folder.npz") as again:
        assert np.array_equal(sampled["x"], again["x"])  # the same samples as the checkpoint's
    loaded = subprocess.run([sys.executable, "-c", f"import gan_lightning; m = gan_lightning.load_pretrained("
                             f"{str(folder)!r}); x = m.sample(4); print(tuple(m.reconstruct(x).shape))"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert loaded.stdout.strip() == "(4, 1, 28, 28)", loaded.stderr[-2000:]


def test_the_infogan_example_journey_as_docs_extending_gives_it(tmp_path, data_dir, untouched_repository):
    run_dir = tmp_path / "infogan"
    out = run("fit", "--config", "configs/examples/infogan.yaml", "--config", SMOKE, "--run_dir", str(run_dir),
              "--wandb.mode", "off")
    assert_printed_paths_exist(out, run_dir)
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    out = run("sample", "--ckpt_path", ckpt, "--model_class", "examples.infogan.InfoGAN", "--n", "64",
              "--out", str(run_dir / "infogan.npz"))
    assert_printed_paths_exist(out, run_dir)
    assert (run_dir / "infogan.npz").is_file() and (run_dir / "infogan.png").is_file()
