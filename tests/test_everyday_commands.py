"""The everyday commands as a researcher runs them (issue 34): where validate/test write, the best checkpoint and
``--ckpt_path best``/``last``, scores at the end of short runs, what compare ranks, and a quieter, truer console."""
import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gan_lightning.cli import main
from gan_lightning.compare import direction
from gan_lightning.compare import main as compare_main
from gan_lightning.tracking import quiet_wandb_init
from tests.conftest import SMOKE, toy_fit_args
from tests.helpers import refused

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "configs" / "toy").glob("*.yaml")) + \
    [REPO / "configs" / "examples" / "infogan.yaml"]


def rows(run: Path) -> list[dict]:
    """Every row of every metrics.csv under ``run``."""
    out = []
    for file in sorted(run.rglob("metrics.csv")):
        with open(file, newline="") as handle:
            out += list(csv.DictReader(handle))
    return out


def said(capsys, caplog) -> str:
    """Everything the command printed or logged since the last call."""
    out = capsys.readouterr()
    text = out.out + out.err + caplog.text
    caplog.clear()
    return text


def logged(run: Path, key: str) -> list[tuple[int, float]]:
    return [(int(float(r["iteration"])), float(r[key])) for r in rows(run) if r.get(key)]


# --- the configs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_keeps_the_best_checkpoint_by_its_headline_figure_and_names_checkpoints_by_iteration(config):
    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    named = {cb["class_path"].rsplit(".", 1)[-1]: cb.get("init_args", {}) for cb in callbacks}
    best, periodic = named["BestCheckpoint"], named["ModelCheckpoint"]
    assert best["dirpath"] == periodic["dirpath"]            # `--ckpt_path best` looks where last.ckpt is
    assert best["mode"] == {"higher": "max", "lower": "min"}[direction(best["monitor"])]  # compare agrees
    measured_by = {"val/modes": "ModeCoverage", "val/probe_1nn": "EncoderProbe"}
    if best["monitor"].startswith(("val/fd_", "val/fid_")):
        assert "ImageMetrics" in named
    elif best["monitor"] in measured_by:
        assert measured_by[best["monitor"]] in named
    assert "{iteration" in periodic["filename"]              # not Lightning's optimizer steps


# --- validate / test of a checkpoint write into that checkpoint's run --------------------------------------------

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two runs of the same toy config (seeds of one sweep): a and b."""
    root = tmp_path_factory.mktemp("runs")
    for name in ("a", "b"):
        main(toy_fit_args(root / name))
    return root / "a", root / "b"


def test_validate_and_test_of_another_runs_checkpoint_log_into_that_run_and_say_where(two_runs, capsys, caplog):
    a, b = two_runs
    before = rows(a)
    for command in ("validate", "test"):
        main([command, *toy_fit_args(a)[1:], "--ckpt_path", str(b / "checkpoints" / "last.ckpt")])
        folder = b / command / "last"
        assert f"logs        -> {folder / 'logs'}" in said(capsys, caplog)   # the summary says where they went
        assert any(r.get(f"{command[:4] if command == 'test' else 'val'}/d_loss") for r in rows(folder))
    assert rows(a) == before                                  # run a's curves hold none of b's scores
    assert not (a / "validate").exists() and not (a / "test").exists()


def test_validate_of_a_checkpoint_restores_no_checkpoint_callback_state_and_warns_nothing(two_runs, recwarn):
    a, b = two_runs
    main(["validate", *toy_fit_args(a)[1:], "--ckpt_path", str(b / "checkpoints" / "last.ckpt")])
    said = [str(w.message) for w in recwarn]
    assert not [m for m in said if "dirpath has changed" in m or "callbacks used to create" in m
                or "outside" in m], said


# --- --ckpt_path best and last ---------------------------------------------------------------------------------

def test_ckpt_path_best_and_last_resolve_in_the_configs_checkpoint_folder(two_runs, capsys, caplog):
    a, _ = two_runs
    assert (a / "checkpoints" / "best.ckpt").is_file()
    for command in ("validate", "test"):
        main([command, *toy_fit_args(a)[1:], "--ckpt_path", "best"])
        assert f"(the checkpoint {a / 'checkpoints' / 'best.ckpt'})" in said(capsys, caplog)
        assert any(r.get(f"{'test' if command == 'test' else 'val'}/d_loss") for r in rows(a / command / "best"))
    # fit from the best checkpoint resumes at its iteration
    best_iteration = torch.load(a / "checkpoints" / "best.ckpt", weights_only=True)["gan_lightning"]["iteration"]
    said(capsys, caplog)
    main(toy_fit_args(a, "--ckpt_path", "best", "--trainer.max_epochs", "2"))
    assert f"resuming at iteration {best_iteration}, epoch 0 (its end)" in said(capsys, caplog)


def test_a_first_fit_with_ckpt_path_last_starts_fresh_in_one_line_without_lightnings_hint(tmp_path, capsys, recwarn):
    main(toy_fit_args(tmp_path / "run", "--ckpt_path", "last"))
    err = capsys.readouterr().err
    assert f"no last.ckpt in {tmp_path / 'run' / 'checkpoints'} yet: a new run starts at iteration 0" in err
    assert not [w for w in recwarn if "HINT" in str(w.message) or "last checkpoint" in str(w.message)]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_ckpt_path_best_or_last_without_the_file_is_refused_in_one_line_naming_the_folder(tmp_path):
    folder = tmp_path / "none" / "checkpoints"
    for command in ("validate", "test", "predict"):
        line = refused(command, *toy_fit_args(tmp_path / "none")[1:], "--ckpt_path", "best")
        assert f"--ckpt_path best: no best.ckpt in {folder}" in line and "--ckpt_path last" in line
        line = refused(command, *toy_fit_args(tmp_path / "none")[1:], "--ckpt_path", "last")
        assert f"--ckpt_path last: no last.ckpt in {folder}" in line
    assert "no best.ckpt" in refused(*toy_fit_args(tmp_path / "none", "--ckpt_path", "best"))
    assert not (tmp_path / "none" / "checkpoints").exists()  # nothing started


def test_best_checkpoint_holds_the_best_score_and_skips_validations_that_did_not_measure_it(tmp_path):
    # the toy ring for 3 epochs; the monitor is ModeCoverage's high-quality fraction
    run = tmp_path / "run"
    main(toy_fit_args(run, "--trainer.max_epochs", "3"))
    scores = logged(run, "val/modes")
    assert [it for it, _ in scores] == [4, 8, 12]
    state = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    best_value = max(v for _, v in scores)
    first_best = next(it for it, v in scores if v == best_value)
    assert state["gan_lightning"]["iteration"] == first_best   # the first iteration that reached the best
    [saved] = [s for key, s in state["callbacks"].items() if key.startswith("BestCheckpoint")]
    assert float(saved["best_model_score"]) == best_value
    # a monitor measured at no validation: the run goes on and no best.ckpt is claimed (ModelCheckpoint would stop)
    other = tmp_path / "other"
    config = yaml.safe_load((REPO / "configs/toy/bigan_ring.yaml").read_text())
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"].endswith("BestCheckpoint"):
            cb["init_args"]["monitor"] = "val/fd_fashion_classifier"
            cb["init_args"]["mode"] = "min"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    args = toy_fit_args(other)
    args[2] = str(tmp_path / "c.yaml")
    main(args)
    assert (other / "checkpoints" / "last.ckpt").is_file() and not (other / "checkpoints" / "best.ckpt").exists()


# --- short runs end with their scores ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_bigan_config(tmp_path_factory) -> Path:
    """configs/bigan.yaml with its measuring callbacks at their config's cadence (every 5 epochs) but small."""
    spec = yaml.safe_load((REPO / "configs" / "bigan.yaml").read_text())
    for cb in spec["trainer"]["callbacks"]:
        args = cb.setdefault("init_args", {})
        if cb["class_path"].endswith("ImageMetrics"):
            assert args["every_n_epochs"] == 5
            args.update(n_samples=100, n_real=500, kid_subset_size=50, kid_subsets=10, is_splits=2, report_floor=False)
        if cb["class_path"].endswith("EncoderProbe"):
            assert args["every_n_epochs"] == 5
            args.update(n_train=500, n_test=200, linear=False, penultimate=False)
    path = tmp_path_factory.mktemp("config") / "bigan.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def bigan_args(config: Path, run: Path, data_dir: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(config), "--config", str(SMOKE), "--model.init_args.width", "32",
            "--data.init_args.data_dir", str(data_dir), "--run_dir", str(run), "--wandb.mode", "off",
            "--trainer.enable_progress_bar", "false", *extra]


@pytest.mark.slow
def test_a_one_epoch_run_logs_its_headline_scores_and_keeps_its_best_checkpoint(small_bigan_config, data_dir,
                                                                                 tmp_path, capsys, caplog):
    run = tmp_path / "run"
    main(bigan_args(small_bigan_config, run, data_dir))    # max_epochs 1, measurements every 5 epochs
    assert [it for it, _ in logged(run, "val/fd_fashion_classifier")] == [4]
    assert [it for it, _ in logged(run, "val/probe_1nn")] == [4]
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert re.search(r"scores +: fd_fashion_classifier [\d.]+ .*\(iteration 4, ImageMetrics\)", said(capsys, caplog))
    # validate scores any checkpoint, whatever its epoch
    main(["validate", *bigan_args(small_bigan_config, run, data_dir)[1:], "--ckpt_path", "last"])
    assert [it for it, _ in logged(run / "validate" / "last", "val/fd_fashion_classifier")] == [4]
    assert [it for it, _ in logged(run / "validate" / "last", "val/probe_1nn")] == [4]


@pytest.mark.slow
def test_a_run_stopped_by_max_steps_inside_an_epoch_is_scored_at_its_last_iteration(small_bigan_config, data_dir,
                                                                                    tmp_path):
    run = tmp_path / "run"
    main(bigan_args(small_bigan_config, run, data_dir, "--trainer.max_steps", "2"))   # 2 iterations, no validation
    assert [it for it, _ in logged(run, "val/fd_fashion_classifier")] == [2]
    assert [it for it, _ in logged(run, "val/probe_1nn")] == [2]


def test_a_toy_run_without_validation_is_scored_at_its_end(tmp_path):
    run = tmp_path / "run"
    main(toy_fit_args(run, "--trainer.limit_val_batches", "0"))
    assert [it for it, _ in logged(run, "val/modes")] == [4]


# --- compare ranks only figures with a better direction -----------------------------------------------------------

def test_compare_does_not_rank_adversarial_losses_and_says_each_direction(two_runs, capsys):
    a, b = two_runs
    compare_main([str(a), str(b), "--metrics", "val/d_loss", "val/modes", "val/reverse_kl",
                  "--out", str(a.parent / "c.png")])
    out = capsys.readouterr().out
    assert "val/d_loss  (no better direction: last values, not ranked)" in out
    block = out.split("val/d_loss")[1].split("val/modes")[0]
    assert "best" not in block and "last" in block
    assert "val/modes  (higher is better)" in out and "val/reverse_kl  (lower is better)" in out
    for name in ("val/d_loss", "train/g_loss", "train/ge_loss", "val/fd_fashion_classifier_floor",
                 "val/probe_1nn_pixels", "val/kid_fashion_classifier_std", "val/kl"):
        assert direction(name) is None, name
    for name, better in [("val/fd_fashion_classifier", "lower"), ("val/fid_inception", "lower"),
                         ("val/error", "lower"), ("val/bits_per_dim", "lower"), ("val/probe_1nn", "higher"),
                         ("val/modes", "higher"), ("val/is_inception", "higher"), ("val/loss", "lower")]:
        assert direction(name) == better, name


# --- a quieter, truer console ----------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The command, its output and errors interleaved in ``stdout`` as a terminal shows them."""
    return subprocess.run([sys.executable, "-m", "gan_lightning", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=REPO, timeout=600)


@pytest.mark.slow
def test_a_max_steps_stop_shows_the_bar_at_its_batches_and_the_resume_line_stands_alone(tmp_path):
    args = ["fit", "--config", str(REPO / "configs/toy/bigan_ring.yaml"), "--model.init_args.width", "16",
            "--run_dir", str(tmp_path / "run"), "--wandb.mode", "off", "--trainer.limit_val_batches", "0"]
    first = run_cli(*args, "--trainer.max_steps", "5")        # 5 iterations; the bar refreshes every 50
    assert first.returncode == 0, first.stdout[-2000:]
    bars = [part for part in re.split(r"[\r\n]", first.stdout) if "/1000 [" in part]
    assert bars and " 5/1000 [" in bars[-1], bars[-3:]
    second = run_cli(*args, "--trainer.max_steps", "10", "--ckpt_path", "last")
    assert second.returncode == 0, second.stdout[-2000:]
    lines = re.split(r"[\r\n]", second.stdout)
    [resumed] = [line for line in lines if "resuming at iteration" in line]
    assert resumed.startswith("gan_lightning: resuming at iteration 5"), resumed   # not glued to the bar


def test_wandb_runs_end_quietly_unless_the_config_asks_otherwise():
    assert quiet_wandb_init({})["settings"]["quiet"] is True
    assert quiet_wandb_init({"settings": {"quiet": False}})["settings"]["quiet"] is False
