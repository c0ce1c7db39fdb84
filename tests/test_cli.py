"""The command line, run as users run it: every shipped config fits end to end; bad configs fail short."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gan_lightning.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "overlays" not in p.parts)
OFFLINE = {"fashion_mnist", "digits", "toy_ring", "toy_grid"}  # the datasets these machines have
SMOKE = REPO / "configs" / "overlays" / "smoke.yaml"


def cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "gan_lightning", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def fake_image_folder(root: Path, side: int) -> Path:
    """Random RGB images in two class folders, standing in for a dataset these machines cannot download."""
    from PIL import Image

    for i in range(24):
        (root / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(torch.randint(0, 256, (side, side, 3), dtype=torch.uint8).numpy()).save(root / f"class{i % 2}"
                                                                                                    / f"{i}.png")
    return root


def smoke_callbacks(spec: dict, swapped: bool, out: Path) -> Path:
    """The config with its measuring callbacks shrunk to seconds and run at the smoke run's one validation.

    Inception's weights cannot be had on these machines, so Inception metrics are dropped (the
    missing-weights error has its own test), as are encoder probes on generated stand-in data (no labels).
    """
    callbacks = []
    for cb in spec["trainer"].get("callbacks", []):
        name, args = cb["class_path"].rsplit(".", 1)[-1], cb.get("init_args", {})
        if name == "ImageMetrics":
            if args.get("feature_extractor", "inception") == "inception":
                continue
            args.update(n_samples=100, n_real=500, every_n_epochs=1, kid_subset_size=50, kid_subsets=10, is_splits=2)
        if name == "EncoderProbe":
            if swapped:
                continue
            args.update(n_train=500, n_test=500, every_n_epochs=1)
        if name in ("LatentScatter", "StyleGrid"):
            args.update(every_n_epochs=1, **({"n_points": 500} if name == "LatentScatter" else {}))
        callbacks.append(cb)
    spec["trainer"]["callbacks"] = callbacks
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_fits_end_to_end_on_cpu(config, tmp_path, data_dir, monkeypatch):
    spec = yaml.safe_load(config.read_text())
    data = spec["data"]["init_args"]
    overrides = ["--data.init_args.data_dir", str(data_dir)]
    if data["dataset"] not in OFFLINE:  # same image shape from a generated folder; on_device off for it
        side = data.get("image_size", 32)
        overrides = ["--data.init_args.dataset", "image_folder", "--data.init_args.image_size", str(side),
                     "--data.init_args.data_dir", str(fake_image_folder(tmp_path / "images", side)),
                     "--data.init_args.on_device", "false", "--data.init_args.num_workers", "0",
                     "--data.init_args.batch_size", "4"]
    monkeypatch.chdir(tmp_path)  # the config's relative output folders land here
    config = smoke_callbacks(spec, swapped=data["dataset"] not in OFFLINE, out=tmp_path / config.name)
    main(["fit", "--config", str(config), "--config", str(SMOKE), *overrides])  # in-process: no import per config
    root = tmp_path / spec["trainer"]["default_root_dir"]
    assert (root / "checkpoints" / "last.ckpt").exists()
    pictures = "toy_it*.png" if data["dataset"].startswith("toy_") else "samples_it*.png"
    assert list((root / "samples").glob(pictures)), f"no {pictures} written"
    kept = {cb["class_path"].rsplit(".", 1)[-1] for cb in yaml.safe_load(config.read_text())["trainer"]["callbacks"]}
    logged = next((root / "logs").rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    expected = {"ImageMetrics": "val/fd_fashion_classifier", "EncoderProbe": "val/probe_1nn",
                "ModeCoverage": "val/modes"}
    for callback, key in expected.items():
        assert (callback in kept) == (key in logged), f"{callback} kept: {callback in kept}, {key} logged: {logged}"
    assert not any("_vs_pixels_" in k for k in logged)  # EncoderProbe scores pixels once: no paired test to log
    for callback, picture in [("Interpolations", "interpolations"), ("LatentScatter", "latent"),
                              ("StyleGrid", "styles")]:
        assert (callback in kept) == bool(list((root / "samples").glob(f"{picture}_it*.png"))), f"{callback}: {picture}"
    model = spec["model"]["class_path"].rsplit(".", 1)[-1]
    if model in ("SemiSupervisedAAE", "ClusteringAAE"):  # held-out classification error / cluster error
        assert ("val/error" if model == "SemiSupervisedAAE" else "val/cluster_error") in logged


@pytest.mark.slow
def test_an_inception_config_without_the_weights_stops_before_training_with_the_fix(tmp_path):
    images = fake_image_folder(tmp_path / "images", 32)
    env = dict(os.environ, TORCH_HOME=str(tmp_path / "torch"), GAN_LIGHTNING_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "gan_lightning", "fit",
                           "--config", str(REPO / "configs/ali_cifar10.yaml"), "--config", str(SMOKE),
                           "--data.init_args.dataset", "image_folder",
                           "--data.init_args.data_dir", str(images), "--data.init_args.on_device", "false",
                           "--data.init_args.num_workers", "0"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "weights-inception-2015-12-05-6726825d.pth" in proc.stderr and "inception_weights" in proc.stderr
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained, nothing saved


@pytest.mark.slow
def test_a_second_run_and_a_resume_in_the_same_directory(tmp_path, data_dir):
    args = ["--config", str(REPO / "configs" / "bigan.yaml"), "--config", str(SMOKE),
            "--data.init_args.data_dir", str(data_dir)]
    proc = cli("fit", *args, cwd=tmp_path)
    assert "checkpoints ->" in proc.stderr + proc.stdout  # the run says where its outputs went
    cli("fit", *args, cwd=tmp_path)  # the saved config.yaml must not block a second run
    last = tmp_path / "runs" / "bigan" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["gan_lightning"]["iteration"] == 4
    cli("fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", str(last), cwd=tmp_path)
    resumed = torch.load(last, weights_only=False)
    assert resumed["gan_lightning"]["iteration"] == 8  # continued from 4, not restarted
    proc = cli("validate", *args, "--ckpt_path", str(last), cwd=tmp_path)
    assert "val/recon_mse" in proc.stdout


@pytest.mark.parametrize("override,expected", [
    (["--model.init_args.latnt_dim", "3"], "BiGAN has no option 'latnt_dim'; did you mean 'latent_dim'?"),
    (["--model.init_args.latent_dim", "abc"], "model.init_args.latent_dim: Expected a <class 'int'>"),
    (["--data.init_args.dataset", "fashion"], "'fashion_mnist', 'mnist'"),
    (["--model.class_path", "gan_lightning.models.BiGANN"], "unknown class 'gan_lightning.models.BiGANN'; available:"),
    (["--trainer.max_epocs", "3"], "did you mean '--trainer.max_epochs'?"),
    (["--model.init_args.n_critic", "0"], "model.n_critic must be >= 1, got 0"),
])
def test_a_bad_config_gives_one_short_line(override, expected, tmp_path):
    proc = cli("fit", "--config", str(REPO / "configs" / "bigan.yaml"), *override, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3


def test_a_missing_dataset_fails_before_training_naming_the_folder(tmp_path):
    proc = cli("fit", "--config", str(REPO / "configs" / "bigan.yaml"), "--data.init_args.dataset", "cifar10",
               "--data.init_args.download", "false", "--data.init_args.data_dir", str(tmp_path / "none"),
               cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"Put cifar-10-python.tar.gz extracted in {tmp_path / 'none'}" in proc.stderr
    assert not (tmp_path / "runs" / "bigan" / "checkpoints").exists()


def test_print_config_is_a_complete_config_that_parses_again(tmp_path):
    printed = cli("fit", "--config", str(REPO / "configs" / "bigan.yaml"), "--print_config", cwd=tmp_path).stdout
    (tmp_path / "full.yaml").write_text(printed)
    again = cli("fit", "--config", str(tmp_path / "full.yaml"), "--print_config", cwd=tmp_path).stdout
    assert yaml.safe_load(again) == yaml.safe_load(printed)
    assert yaml.safe_load(printed)["model"]["init_args"]["latent_dim"] == 50


def test_the_classes_named_in_errors_exist_and_are_every_model():
    import lightning as L

    import gan_lightning.models as models
    from gan_lightning.cli_errors import _CHOICES, _import

    assert all(issubclass(_import(p), L.LightningModule) for p in _CHOICES["model"])
    assert all(issubclass(_import(p), L.LightningDataModule) for p in _CHOICES["data"])
    concrete = {n for n in models.__all__ if n != "AdversarialModule"}
    assert {p.rsplit(".", 1)[1] for p in _CHOICES["model"]} == concrete


def _cli(args, monkeypatch, **env):
    import lightning as L

    from gan_lightning.cli import GANLightningCLI

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return GANLightningCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True,
                           subclass_mode_data=True, auto_configure_optimizers=False, run=False,
                           save_config_callback=None, args=args)


def test_a_requeued_slurm_job_continues_its_wandb_run(monkeypatch, tmp_path):
    wandb = ["--config", "configs/toy/bigan_ring.yaml", "--trainer.logger", "lightning.pytorch.loggers.WandbLogger",
             "--trainer.logger.init_args.offline", "true", "--trainer.logger.init_args.save_dir", str(tmp_path)]
    member = _cli(wandb, monkeypatch, SLURM_JOB_ID="902", SLURM_ARRAY_JOB_ID="900", SLURM_ARRAY_TASK_ID="2",
                  WANDB_MODE="offline")
    assert member.trainer.logger._wandb_init["id"] == "900_2"  # the array member's requeue id, stable over requeues
    assert member.trainer.logger._wandb_init["resume"] == "allow"
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key)
    chosen = _cli([*wandb, "--trainer.logger.init_args.id", "mine"], monkeypatch, SLURM_JOB_ID="902")
    assert chosen.trainer.logger._wandb_init["id"] == "mine"  # a user's id wins


def test_run_dir_moves_every_output_of_the_config(monkeypatch, tmp_path):
    cli = _cli(["--config", "configs/bigan.yaml", "--run_dir", str(tmp_path / "seed3")], monkeypatch)
    checkpoint = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "ModelCheckpoint")
    assert checkpoint.dirpath == str(tmp_path / "seed3" / "checkpoints")
    assert cli.trainer.default_root_dir == str(tmp_path / "seed3")
    assert cli.trainer.logger.save_dir == str(tmp_path / "seed3")


def test_disabling_the_progress_bar_drops_the_configs_bar_instead_of_failing(monkeypatch):
    """Lightning refuses enable_progress_bar=False beside a progress-bar callback; the switch should just work."""
    bars = lambda cli: [cb for cb in cli.trainer.callbacks if "ProgressBar" in type(cb).__name__]  # noqa: E731
    assert bars(_cli(["--config", "configs/bigan.yaml"], monkeypatch))
    cli = _cli(["--config", "configs/bigan.yaml", "--trainer.enable_progress_bar", "false"], monkeypatch)
    assert not bars(cli) and cli.trainer.progress_bar_callback is None
    assert any(type(cb).__name__ == "RunSummary" for cb in cli.trainer.callbacks)  # the others stay


def test_submit_builds_the_sbatch_command_of_the_matching_script(capsys):
    from gan_lightning.cli import main

    main(["submit", "--config", "configs/bigan.yaml", "--nodes", "2", "--gpus-per-node", "4", "--time", "1:00:00",
          "--dry-run", "--", "--run_dir", "runs/b"])
    assert capsys.readouterr().out.split() == ["sbatch", "--nodes=2", "--ntasks-per-node=4", "--gres=gpu:4",
                                               "--time=1:00:00", "slurm/multinode.sbatch", "configs/bigan.yaml",
                                               "--run_dir", "runs/b"]
    main(["submit", "--config", "configs/bigan.yaml", "--seeds", "3", "4", "--gpus-per-node", "0", "--dry-run"])
    out = capsys.readouterr().out
    assert out.startswith("SEEDS='3 4' sbatch --array=0-1 ") and "--gres=none" in out and "slurm/array.sbatch" in out
    with pytest.raises(SystemExit):
        main(["submit", "--config", "configs/missing.yaml", "--dry-run"])
    assert "configs/missing.yaml: no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_an_inception_weights_file_of_another_digest_stops_fit_in_one_line_naming_the_file_and_the_fix(tmp_path):
    images = fake_image_folder(tmp_path / "images", 32)
    bogus = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    bogus.write_bytes(b"an HTML error page saved under the weights' name")
    spec = yaml.safe_load((REPO / "configs" / "ali_cifar10.yaml").read_text())
    (metrics,) = [cb for cb in spec["trainer"]["callbacks"] if cb["class_path"].endswith("ImageMetrics")]
    metrics["init_args"]["inception_weights"] = str(bogus)
    config = tmp_path / "ali_cifar10.yaml"
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = dict(os.environ, TORCH_HOME=str(tmp_path / "torch"), GAN_LIGHTNING_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "gan_lightning", "fit", "--config", str(config),
                           "--config", str(SMOKE), "--data.init_args.dataset", "image_folder",
                           "--data.init_args.data_dir", str(images),
                           "--data.init_args.on_device", "false", "--data.init_args.num_workers", "0"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("gan_lightning: error:")]
    assert f"Inception weights file {bogus} has SHA-256" in line and "not the published 6726825d" in line, line
    assert "https://github.com/toshas/torch-fidelity/releases/download" in line and "inception_weights" in line, line
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained, nothing saved
