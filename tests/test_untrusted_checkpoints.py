"""Checkpoints from elsewhere: loading one never imports or calls what its text names (docs/failures.md, section 4).

A checkpoint read with the weights-only unpickler holds plain values only, but some of them are names: the model's
``_class_path``, Lightning's ``_instantiator``, the data module's ``_class_path``. Each forged checkpoint here loads
with ``weights_only=True``; what it names writes a marker file when it is imported or called, and every test checks
that the marker is absent after ``evaluate``, ``sample`` and ``fit --ckpt_path``.
"""
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from gan_lightning.cli import main
from tests.helpers import refused

REPO = Path(__file__).resolve().parents[1]
BIGAN_RING = REPO / "configs" / "toy" / "bigan_ring.yaml"
SMOKE = REPO / "configs" / "overlays" / "smoke.yaml"
TOY_DATA = {"_class_path": "gan_lightning.data.GANDataModule", "dataset": "toy_ring", "batch_size": 100,
            "on_device": True, "seed": 0}


def forged(path: Path, class_path: str, data: dict = TOY_DATA, state_dict: dict | None = None, **hparams) -> Path:
    """A checkpoint of plain values naming ``class_path``, which the weights-only loader reads without complaint."""
    torch.save({"state_dict": state_dict or {}, "hyper_parameters": {"_class_path": class_path, **hparams},
                "datamodule_hyper_parameters": dict(data), "gan_lightning": {"model": "BiGAN", "iteration": 1}}, path)
    torch.load(path, weights_only=True)
    return path


def side_effect_module(folder: Path, marker: Path, monkeypatch) -> str:
    """A module in ``folder`` (put on sys.path) that writes ``marker`` when imported; its unique name."""
    name = f"untrusted_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n"
                                       "class BiGAN:\n    pass\n\n\ndef instantiate(cls, *args, **kwargs):\n"
                                       "    return cls(*args, **kwargs)\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def command(name: str, ckpt: Path, tmp_path: Path, *extra: str) -> list[str]:
    out = ["--out", str(tmp_path / ("samples.npz" if name == "sample" else "eval.json"))]
    limits = ["--n", "10"] if name == "sample" else ["--metrics", "probes", "--n_train", "200", "--no_linear"]
    return [name, "--ckpt_path", str(ckpt), *limits, *out, *extra]


def fit(ckpt: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(BIGAN_RING), "--config", str(SMOKE), "--model.init_args.width", "16",
            "--run_dir", str(tmp_path / "run"), *extra, "--ckpt_path", str(ckpt)]


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint: a small BiGAN on the ring, trained for a few iterations through the CLI."""
    root = tmp_path_factory.mktemp("toy")
    main(["fit", "--config", str(BIGAN_RING), "--config", str(SMOKE), "--model.init_args.width", "16",
          "--run_dir", str(root)])
    return root / "checkpoints" / "last.ckpt"


# --- evaluate and sample ------------------------------------------------------------------------

@pytest.mark.slow
def test_evaluate_and_sample_refuse_a_checkpoint_naming_subprocess_run_and_run_nothing(tmp_path):
    """The issue's reproduction, end to end: ``python -m gan_lightning evaluate`` on a checkpoint whose class is
    ``subprocess.run`` with ``shell: True`` and a command among its settings."""
    marker = tmp_path / "pwned"
    ckpt = forged(tmp_path / "evil.ckpt", "subprocess.run", args=f"touch {marker}", shell=True)
    for name in ("evaluate", "sample"):
        run = subprocess.run([sys.executable, "-m", "gan_lightning", *command(name, ckpt, tmp_path)],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert not marker.exists(), f"{name} ran the checkpoint's shell command"
        lines = run.stderr.strip().splitlines()
        assert run.returncode != 0 and lines and lines[-1].startswith("gan_lightning: error: "), run.stderr[-2000:]
        assert "'subprocess.run'" in lines[-1] and "--model_class" in lines[-1], lines[-1]


@pytest.mark.parametrize("name", ["evaluate", "sample"])
def test_evaluate_and_sample_refuse_a_checkpoint_naming_os_system_in_one_line(name, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = forged(tmp_path / "evil.ckpt", "os.system", command=f"touch {marker}")
    message = refused(*command(name, ckpt, tmp_path))
    assert "'os.system'" in message and "not one of gan_lightning.models" in message, message
    assert not marker.exists()


@pytest.mark.parametrize("name", ["evaluate", "sample", "fit"])
def test_a_checkpoint_naming_a_module_with_import_side_effects_never_imports_it(name, tmp_path, monkeypatch):
    """The model's class, Lightning's ``_instantiator`` and the data module's class all name the module, and the
    class is called BiGAN, as the config's is: neither an import to look inside nor jsonargparse's import of a
    class path may happen."""
    marker = tmp_path / "imported"
    module = side_effect_module(tmp_path, marker, monkeypatch)
    ckpt = forged(tmp_path / "evil.ckpt", f"{module}.BiGAN", data={**TOY_DATA, "_class_path": f"{module}.BiGAN",
                                                                   "_instantiator": f"{module}.instantiate"},
                  latent_dim=2, _instantiator=f"{module}.instantiate")
    args = fit(ckpt, tmp_path) if name == "fit" else command(name, ckpt, tmp_path)
    try:
        message = refused(*args)
    except BaseException:  # the unfixed code fails in other ways; the marker says what matters
        message = ""
    assert not marker.exists(), f"{name} imported {module}, which the checkpoint names"
    if name != "fit":  # fit builds the config's BiGAN (the user's choice) and never looks at the checkpoint's module
        assert f"'{module}.BiGAN'" in message and "--model_class" in message, message


@pytest.mark.parametrize("class_path, settings", [("subprocess.run", {"args": "touch {marker}", "shell": True}),
                                                  ("os.system", {"command": "touch {marker}"})])
def test_fit_refuses_a_checkpoint_naming_a_callable_in_one_line_naming_it(class_path, settings, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = forged(tmp_path / "evil.ckpt", class_path, **{k: str(v).format(marker=marker) if isinstance(v, str) else v
                                                          for k, v in settings.items()})
    message = refused(*fit(ckpt, tmp_path))
    assert f"'{class_path}'" in message and "not one of gan_lightning.models" in message, message
    assert not marker.exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("name", ["evaluate", "sample"])
def test_a_class_path_inside_a_checkpoints_settings_is_refused_naming_the_setting(name, tmp_path, monkeypatch):
    """``save_hyperparameters`` records plain values; an optimizer given as a class path was not written by fit,
    and would be imported and called once the model builds its optimizers. The weights are a real BiGAN's."""
    from gan_lightning.models import BiGAN

    marker = tmp_path / "imported"
    module = side_effect_module(tmp_path, marker, monkeypatch)
    settings = dict(latent_dim=2, architecture="toy", width=16, data_shape=(2,))
    ckpt = forged(tmp_path / "evil.ckpt", "gan_lightning.models.BiGAN", state_dict=BiGAN(**settings).state_dict(),
                  **settings, optimizer_ge={"class_path": f"{module}.BiGAN", "init_args": {}})
    message = refused(*command(name, ckpt, tmp_path))
    assert "model setting 'optimizer_ge'" in message and "plain value" in message, message
    assert not marker.exists()


# --- what still loads ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_real_checkpoint_still_loads_and_samples(toy_checkpoint, tmp_path):
    from gan_lightning.commands import load_model
    from gan_lightning.models import BiGAN

    model, dm = load_model(str(toy_checkpoint))
    assert type(model) is BiGAN and model.iteration == 4 and dm.hparams.dataset == "toy_ring"
    main(command("sample", toy_checkpoint, tmp_path))
    assert (tmp_path / "samples.npz").exists()


@pytest.mark.slow
def test_a_model_class_of_the_users_own_loads_only_when_the_user_names_it(toy_checkpoint, tmp_path, monkeypatch):
    """A checkpoint of the user's own subclass: refused (and not imported) until ``--model_class`` names it; a
    ``--model_class`` that is not a model is refused too."""
    marker = tmp_path / "imported"
    module = side_effect_module(tmp_path, marker, monkeypatch)
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n"
                                           "from gan_lightning.models import BiGAN as Base\n\n\n"
                                           "class BiGAN(Base):\n    pass\n")
    ckpt = tmp_path / "own.ckpt"
    checkpoint = torch.load(toy_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["_class_path"] = f"{module}.BiGAN"
    torch.save(checkpoint, ckpt)

    message = refused(*command("sample", ckpt, tmp_path))
    assert f"--model_class {module}.BiGAN" in message and not marker.exists(), message
    message = refused(*command("sample", ckpt, tmp_path, "--model_class", "subprocess.run"))
    assert "'subprocess.run'" in message and "not a subclass of" in message, message
    main(command("sample", ckpt, tmp_path, "--model_class", f"{module}.BiGAN"))
    assert marker.exists() and (tmp_path / "samples.npz").exists()  # the user's choice: imported, and it loads


@pytest.mark.parametrize("name", ["AAE", "SemiSupervisedAAE", "ClusteringAAE"])
def test_a_checkpoint_naming_its_models_former_module_still_loads_by_the_class_name(name, tmp_path):
    """SemiSupervisedAAE and ClusteringAAE moved from ``models.aae`` to ``models.semi_supervised_aae``; a checkpoint
    naming the old module (as older jsonargparse wrote ``_class_path``) loads by the class name, importing nothing,
    and a name in gan_lightning.models that is not a model is still refused."""
    import gan_lightning.models as models
    from gan_lightning.checkpoints import CheckpointError
    from gan_lightning.commands import load_model
    from gan_lightning.models.registry import model_class

    cls = getattr(models, name)
    settings = dict(data_shape=(1, 8, 8), latent_dim=2, width=16, discriminator_width=16)
    model = cls(**settings)
    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": model.state_dict(),
                "hyper_parameters": {"_class_path": f"gan_lightning.models.aae.{name}", **settings},
                "gan_lightning": {"model": name, "iteration": 3}}, ckpt)
    loaded, datamodule = load_model(str(ckpt))
    assert type(loaded) is cls and loaded.iteration == 3 and datamodule is None
    theirs = loaded.state_dict()
    assert model.state_dict().keys() == theirs.keys()
    assert all(torch.equal(value, theirs[key]) for key, value in model.state_dict().items())
    with pytest.raises(CheckpointError, match="not one of gan_lightning.models"):
        model_class("gan_lightning.models.aae.check_adversarial_options", ckpt)
