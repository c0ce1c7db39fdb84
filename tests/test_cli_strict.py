"""The command line refuses what it does not understand, in one line, and starts fast; `submit` checks a config as
`fit` would before anything is queued (issue 34, items 6 and 7).

Most tests call ``main`` in-process, as ``python -m gan_lightning`` runs it; the start-up tests run it as a
subprocess and look at what it imported (``python -X importtime``), not at how long it took.
"""
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException

from gan_lightning.cli import main
from tests.conftest import BIGAN_RING, SMOKE
from tests.helpers import refused

REPO = Path(__file__).resolve().parents[1]
BIGAN = str(REPO / "configs" / "bigan.yaml")
ALL_COMMANDS = ("fit", "validate", "test", "predict", "evaluate", "sample", "export", "compare", "submit")


def stopped(capsys, *args: str) -> tuple[int, str, str]:
    """``main(args)`` that exits: (status, stdout, stderr)."""
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    out, err = capsys.readouterr()
    code = stop.value.code
    return (code if isinstance(code, int) else 1), out, err + (code if isinstance(code, str) else "")


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gan_lightning: "), err
    assert "Traceback" not in err and "usage:" not in err, err
    return lines[0]


# --- abbreviations ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option,value,meant", [
    ("--trainer.max_epoch", "7", "--trainer.max_epochs"),
    ("--wandb.mod", "off", "--wandb.mode"),
    ("--run", "runs/x", "--run_dir"),
])
def test_a_prefix_of_an_option_is_refused_naming_the_option_it_was_taken_for(option, value, meant, capsys):
    code, out, err = stopped(capsys, "fit", "--config", BIGAN, option, value, "--print_config")
    assert code == 2 and not out  # --print_config printed nothing: the line did not parse
    assert one_line(err) == f"gan_lightning: config error: unknown option '{option}'; did you mean '{meant}'?"


def test_the_commands_of_the_package_take_no_prefix_of_their_options_either(capsys):
    # sample's --ckpt would be --ckpt_path, compare's --metric --metrics, submit's --gpus --gpus-per-node
    code, _, err = stopped(capsys, "sample", "--ckpt", "missing.ckpt")
    assert code == 2 and "the following arguments are required: --ckpt_path" in err
    code, _, err = stopped(capsys, "compare", "--metric", "val/x", "runs")
    assert code == 2 and "unrecognized arguments: --metric" in err
    code, _, err = stopped(capsys, "submit", "--config", BIGAN, "--gpus", "2", "--dry-run")
    assert code == 2
    assert "unknown option '--gpus'; did you mean '--gpus-per-node'?" in one_line(err)


# --- Lightning's refusals of trainer settings ------------------------------------------------------------------------

def test_a_trainer_setting_lightning_refuses_is_one_line_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's run folder, if anything were written
    line = refused("fit", "--config", BIGAN, "--trainer.max_epochs", "-3")
    assert line.startswith("gan_lightning: error: trainer.max_epochs: ") and "You passed in -3" in line, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_asked_for_on_a_machine_without_one_is_one_line_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = refused("fit", "--config", BIGAN, "--trainer.accelerator", "gpu")
    assert line.startswith("gan_lightning: error: trainer.accelerator: "), line
    assert "cpu" in line.split("trainer.accelerator: ", 1)[1], line


def toy(run: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(BIGAN_RING), "--config", str(SMOKE), "--model.init_args.width", "16",
            "--run_dir", str(run), "--wandb.mode", "off", "--trainer.enable_progress_bar", "false", *extra]


def test_a_trainer_setting_refused_at_fit_start_is_one_line_naming_the_key(tmp_path):
    line = refused(*toy(tmp_path / "run", "--trainer.val_check_interval", "50"))  # 4 batches an epoch
    assert line.startswith("gan_lightning: error: trainer.val_check_interval: "), line


class RaisesMisconfiguration(L.Callback):
    """Raises Lightning's MisconfigurationException at the first batch, as a bug in code would: no setting at fault
    (``--trainer.callbacks+=tests.test_cli_strict.RaisesMisconfiguration``)."""

    def on_train_batch_start(self, *args, **kwargs):
        raise MisconfigurationException("the callback's own `state` is wrong")


def test_a_misconfiguration_raised_by_code_during_training_keeps_its_traceback(tmp_path):
    with pytest.raises(MisconfigurationException, match="callback's own"):
        main(toy(tmp_path / "run", "--trainer.callbacks+=tests.test_cli_strict.RaisesMisconfiguration"))


def test_only_misconfigurations_of_settings_are_shortened():
    from gan_lightning.cli_errors import misconfigured

    def raised(err):
        try:
            raise err
        except Exception as caught:  # noqa: BLE001  (its traceback is what is read)
            return caught

    assert misconfigured(raised(MisconfigurationException("`max_epochs` must be >= -1")), L.Trainer).startswith(
        "trainer.max_epochs: ")
    assert misconfigured(raised(MisconfigurationException("`training_step` returned None")), L.Trainer) is None
    assert misconfigured(raised(ValueError("`val_check_interval` must be small")), L.Trainer) is None  # not Lightning's


# --- an optimizer's misspelt argument -----------------------------------------------------------------------------

def test_a_misspelt_optimizer_argument_is_one_line_with_the_accepted_ones(capsys):
    code, _, err = stopped(capsys, "fit", "--config", BIGAN, "--model.init_args.optimizer_d.init_args.lrr", "0.1",
                           "--print_config")
    line = one_line(err)
    assert code == 2
    assert line.startswith("gan_lightning: config error: model.init_args.optimizer_d.init_args: Adam has no option "
                           "'lrr'; did you mean 'lr'? accepted: lr, betas, eps, weight_decay"), line
    assert "params" not in line and "typing" not in line and "Namespace" not in line, line


# --- every command named, at the top ------------------------------------------------------------------------------

def test_the_top_level_help_and_errors_name_every_command(capsys):
    main(["--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "{" + ",".join(ALL_COMMANDS) + "}" in " ".join(usage.split()), usage
    for args in ([], ["-c", BIGAN]):  # no command; LightningCLI's own top-level option, no command
        code, _, err = stopped(capsys, *args)
        assert code == 2 and all(name in one_line(err) for name in ALL_COMMANDS), err
    code, _, err = stopped(capsys, "fitt", "--config", BIGAN)
    assert code == 2 and "unknown command 'fitt'; did you mean 'fit'?" in one_line(err)
    code, _, err = stopped(capsys, "--trainer.max_epochs", "3")
    assert code == 2 and "name the command first" in one_line(err)


# --- start-up: what each command imports ---------------------------------------------------------------------------

def imported(*args: str) -> set[str]:
    """The modules ``python -m gan_lightning ARGS`` imported (python -X importtime lists each on stderr)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gan_lightning", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args,heavy", [
    (["--help"], {"torch", "lightning", "jsonargparse"}),
    (["compare", "--help"], {"torch", "lightning", "jsonargparse"}),
    (["submit", "--help"], {"torch", "lightning", "jsonargparse"}),
    (["sample", "--help"], {"lightning", "jsonargparse"}),
    (["evaluate", "--help"], {"lightning", "jsonargparse"}),
])
def test_help_and_the_light_commands_do_not_import_lightning(args, heavy):
    assert not heavy & imported(*args)


# --- submit -------------------------------------------------------------------------------------------------------

@pytest.fixture
def repo(monkeypatch):
    monkeypatch.chdir(REPO)  # submit runs from the repository's root (slurm/)


def test_submit_without_sbatch_says_so_in_one_line(repo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    code, _, err = stopped(capsys, "submit", "--config", "configs/bigan.yaml")
    line = one_line(err)
    assert code == 1 and "sbatch is not on PATH" in line and "SLURM" in line and "--dry-run" in line, line


def test_submit_checks_the_config_and_fits_options_before_queueing(repo, tmp_path, capsys):
    code, out, err = stopped(capsys, "submit", "--config", "configs/bigan.yaml", "--dry-run", "--",
                             "--model.init_args.latnt_dim", "3")
    assert code == 2 and "sbatch" not in out
    assert "BiGAN has no option 'latnt_dim'; did you mean 'latent_dim'?" in one_line(err)
    code, out, err = stopped(capsys, "submit", "--config", "configs/bigan.yaml", "--dry-run", "--",
                             "--trainer.max_epoch", "3")
    assert code == 2 and "did you mean '--trainer.max_epochs'?" in one_line(err) and "sbatch" not in out
    code, out, err = stopped(capsys, "submit", "--config", "configs/bigan.yaml", "--dry-run", "--",
                             "--model.init_args.n_critic", "0")  # refused by the model's constructor, as in fit
    assert code == 2 and "model.n_critic must be >= 1, got 0" in one_line(err) and "sbatch" not in out


def test_submit_checks_run_dir_and_the_checkpoint_as_fit_does(repo, tmp_path, capsys):
    spec = yaml.safe_load(BIGAN_RING.read_text())
    del spec["trainer"]["default_root_dir"]
    config = tmp_path / "no_root.yaml"
    config.write_text(yaml.safe_dump(spec))
    code, out, err = stopped(capsys, "submit", "--config", str(config), "--dry-run", "--", "--run_dir", "runs/x")
    assert code == 1 and "--run_dir needs trainer.default_root_dir" in one_line(err) and not out
    code, out, err = stopped(capsys, "submit", "--config", str(config), "--seeds", "0", "1", "--dry-run")
    assert code == 1 and "--run_dir needs trainer.default_root_dir" in one_line(err)  # array.sbatch adds one
    garbage = tmp_path / "last.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    code, out, err = stopped(capsys, "submit", "--config", "configs/bigan.yaml", "--dry-run", "--", "--ckpt_path",
                             str(garbage))
    assert code == 1 and f"checkpoint {garbage} cannot be read" in one_line(err) and not out


def test_submit_checks_without_reading_data_or_writing_a_run(tmp_path, monkeypatch, capsys):
    for name in ("configs", "slurm"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "no_data"
    empty.mkdir()
    code, out, err = stopped(capsys, "submit", "--config", "configs/bigan.yaml", "--dry-run", "--",
                             "--data.init_args.data_dir", str(empty), "--data.init_args.batch_size", "-1")
    assert code == 2 and "data.batch_size must be >= 1, got -1" in one_line(err)  # the data module was checked
    main(["submit", "--config", "configs/bigan.yaml", "--dry-run", "--", "--data.init_args.data_dir", str(empty),
          "--run_dir", "runs/b"])
    out = capsys.readouterr().out
    assert out.startswith("sbatch ") and out.rstrip().endswith("--run_dir runs/b")
    assert not list(empty.iterdir())  # no download
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "no_data", "slurm"]  # no run folder


def test_fit_options_given_to_submit_without_the_separator_get_the_line_to_type(repo, capsys):
    code, out, err = stopped(capsys, "submit", "--config", "configs/bigan.yaml", "--trainer.max_epochs", "3",
                             "--dry-run")
    line = one_line(err)
    assert code == 2 and not out
    assert "fit's options go after '--'" in line, line
    assert "submit --config configs/bigan.yaml --dry-run -- --trainer.max_epochs 3" in line, line


def test_submit_help_says_where_fits_options_go(capsys):
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "[-- FIT_OPTIONS ...]" in out and "fit's options go after --" in out, out
