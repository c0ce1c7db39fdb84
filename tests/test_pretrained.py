"""``export`` and ``load_pretrained``: a checkpoint shared as a Hugging Face model folder (safetensors, config.json,
model card), loaded without pickles, and refused in one line when it is not what export wrote.

The round trip of every model family (tiny widths, 3 iterations on 8x8 digits), one shipped config through the
commands a user runs, and the refusals. The fuzzing of model folders is in test_fuzz_inputs.py. Budget: about
1 minute of CI."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file, save_file

import gan_lightning
from gan_lightning.cli import main
from gan_lightning.commands import export, load_model
from gan_lightning.models import AAE, VAE, BiGAN, RealNVP, SemiSupervisedAAE
from gan_lightning.pretrained import FOLDER_FILES, ModelFolder, PretrainedError, load_folder
from tests.helpers import digits, tiny_ali, tiny_bigan, tiny_gan, tiny_trainer

REPO = Path(__file__).resolve().parents[1]

FAMILIES = {
    "gan with a moving average": lambda: tiny_gan(width=16, ema_decay=0.9),
    "bigan": lambda: tiny_bigan(width=16),
    "ali with a moving average": lambda: tiny_ali(width=16, ema_decay=0.9),
    "aae, mixture prior": lambda: AAE(data_shape=(1, 8, 8), latent_dim=2, width=16, discriminator_width=16,
                                      prior="mixture"),
    "semi-supervised aae": lambda: SemiSupervisedAAE(data_shape=(1, 8, 8), latent_dim=3, width=16,
                                                     discriminator_width=16, ema_decay=0.9),
    "vae": lambda: VAE(data_shape=(1, 8, 8), latent_dim=2, width=16),
    "flow": lambda: RealNVP(data_shape=(1, 8, 8), levels=2, steps_per_level=1, hidden=8),
}


def trained_checkpoint(root: Path, model) -> Path:
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0)
    tiny_trainer(root, enable_checkpointing=True, callbacks=[checkpoint]).fit(model, digits(batch_size=16))
    return root / "checkpoints" / "last.ckpt"


def assert_same_outputs(loaded, original, n: int = 8) -> None:
    """Samples bit-equal for the same z, and where there is an encoder the codes and reconstructions too."""
    z = original.draw_prior(n, torch.Generator().manual_seed(1))
    assert torch.equal(loaded.sample(z=z), original.sample(z=z))
    if hasattr(original, "encode"):
        x = torch.rand(n, *original.hparams.data_shape) * 2 - 1
        assert torch.equal(loaded.encode(x), original.encode(x))
        assert torch.equal(loaded.reconstruct(x), original.reconstruct(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_round_trips_bit_for_bit(tmp_path, family):
    ckpt = trained_checkpoint(tmp_path, FAMILIES[family]())
    folder = export(ckpt, tmp_path / "exported")
    loaded = gan_lightning.load_pretrained(folder)
    original, _ = load_model(str(ckpt))
    assert type(loaded) is type(original) and loaded.iteration == original.iteration == 3
    assert_same_outputs(loaded, original)
    for name, averaged in original.ema.items():  # the folder holds the moving averages, which sample
        ours = getattr(loaded, name).state_dict()
        assert all(torch.equal(ours[key], value) for key, value in averaged.module.state_dict().items())
        assert any(not torch.equal(ours[key], value) for key, value in getattr(original, name).state_dict().items())
    assert not any(key.startswith(("discriminator", "ema.")) for key in load_file(folder / "model.safetensors"))


def test_a_shipped_config_round_trips_through_the_commands_and_the_folder_holds_no_pickle(tmp_path, data_dir):
    run, folder = tmp_path / "run", tmp_path / "exported" / "bigan"
    main(["fit", "--config", str(REPO / "configs/bigan.yaml"), "--config", str(REPO / "configs/overlays/smoke.yaml"),
          "--run_dir", str(run), "--data.init_args.data_dir", str(data_dir), "--wandb.mode", "off"])
    ckpt = run / "checkpoints" / "last.ckpt"
    out = subprocess.run([sys.executable, "-m", "gan_lightning", "export", "--ckpt_path", str(ckpt), "--out",
                          str(folder)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"gan_lightning.load_pretrained('{folder}')" in out.stdout and "hf upload USER/REPO" in out.stdout
    assert sorted(p.name for p in folder.iterdir()) == sorted(FOLDER_FILES)
    for path in folder.iterdir():  # neither a torch.save zip archive nor a pickle stream
        head = path.read_bytes()[:2]
        assert head != b"PK" and head[:1] != b"\x80", path
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_class"], config["iteration"], config["data"]["dataset"]) == ("BiGAN", 4, "fashion_mnist")
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: gan_lightning") and "arxiv.org/abs/1605.09782" in card
    assert "4 iterations, 512 images seen" in card and "![64 samples, seed 0](samples.png)" in card
    # the run's scores at that iteration, each with its full protocol record; the training config
    assert "| val/fd_fashion_classifier |" in card and "extractor fashion_classifier:" in card
    assert "reference_size 1000" in card and "## Training config" in card and "class_path: gan_lightning" in card

    loaded = ModelFolder.from_pretrained(str(folder))  # the Hub mixin's class method: load_pretrained's
    assert type(loaded) is BiGAN
    original, _ = load_model(str(ckpt))
    assert_same_outputs(loaded, original)
    # sample and evaluate take the folder where they take a checkpoint
    main(["sample", "--ckpt_path", str(folder), "--n", "16", "--out", str(tmp_path / "from_folder.npz")])
    main(["sample", "--ckpt_path", str(ckpt), "--n", "16", "--out", str(tmp_path / "from_ckpt.npz")])
    import numpy as np

    assert np.array_equal(np.load(tmp_path / "from_folder.npz")["x"], np.load(tmp_path / "from_ckpt.npz")["x"])
    main(["evaluate", "--ckpt_path", str(folder), "--metrics", "fid", "--n_samples", "200", "--n_real", "200",
          "--data_dir", str(data_dir), "--quiet", "--out", str(tmp_path / "eval.json")])
    scored = json.loads((tmp_path / "eval.json").read_text())
    assert scored["model"] == "BiGAN" and scored["iteration"] == 4 and scored["protocol"]["n_samples"] == 200


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny GAN's checkpoint and its export, made once: the refusal tests damage copies."""
    root = tmp_path_factory.mktemp("exported")
    ckpt = trained_checkpoint(root, tiny_gan(width=16))
    return ckpt, export(ckpt, root / "folder")


def copy_of(exported, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(exported[1], tmp_path / "folder"))


def edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def refused(folder: Path, match: str) -> str:
    with pytest.raises(PretrainedError.__mro__[1], match=match) as caught:  # CheckpointError and its subclasses
        load_folder(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message, message
    return message


def test_a_class_outside_the_package_is_refused_and_never_imported(exported, tmp_path, monkeypatch):
    folder = copy_of(exported, tmp_path)
    module = tmp_path / "planted.py"
    module.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('imported')\nclass Model: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    edit_config(folder, lambda c: c.update(model_class="planted.Model"))
    refused(folder, "names the model class 'planted.Model', which is not one of gan_lightning.models")
    assert not (tmp_path / "ran").exists() and "planted" not in sys.modules


@pytest.mark.parametrize(("setting", "value", "said"), [
    ("width", "wide", 'model.width'),               # a setting of the wrong type
    ("loss", "os.system", 'model.loss'),             # outside its choices
    ("optimizer_d", {"class_path": "os.system"}, "'optimizer_d' holds .*where a plain value"),  # something to build
])
def test_settings_of_the_wrong_type_are_refused_naming_them(exported, tmp_path, setting, value, said):
    folder = copy_of(exported, tmp_path)
    edit_config(folder, lambda c: c["settings"].update({setting: value}))
    refused(folder, said)


def test_settings_that_would_build_other_weights_or_allocate_are_refused(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    edit_config(folder, lambda c: c["settings"].update(width=10**6))  # the generator the file holds is 16 wide
    refused(folder, "does not hold the weights of this GAN")
    # pack builds the discriminator only, which the folder leaves out: bounded by the weights the folder holds
    edit_config(folder, lambda c: c["settings"].update(width=16, pack=10**5))
    refused(folder, "edited to allocate memory")


def test_a_tensor_of_another_shape_a_truncated_file_and_nan_weights_are_refused(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    key = sorted(tensors)[0]
    save_file({**tensors, key: torch.zeros(tensors[key].numel() + 1)}, weights)
    refused(folder, rf"{key} is \({tensors[key].numel() + 1},\) there")
    save_file(tensors, weights)
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2])
    refused(folder, "truncated")
    poisoned = dict(tensors)
    poisoned[key] = torch.full_like(tensors[key], float("nan"))
    save_file(poisoned, weights)
    refused(folder, "hold NaN or Inf")


def test_a_config_that_is_not_an_exports_is_refused(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    (folder / "config.json").write_text(" " * (2 << 20))
    refused(folder, "a few kB")
    (folder / "config.json").write_text("[1, 2]")
    refused(folder, "not a gan_lightning export's config")
    edit_config(copy_of(exported, tmp_path / "b"), lambda c: c.update(format=99))
    refused(tmp_path / "b" / "folder", "format 99")
    (folder / "config.json").unlink()
    refused(folder, "has no config.json")


def test_a_model_class_named_by_the_user_must_be_the_one_the_folder_holds(exported):
    assert type(load_folder(exported[1], "gan_lightning.models.GAN")[0]).__name__ == "GAN"
    with pytest.raises(PretrainedError, match="holds a GAN, not the VAE named by --model_class"):
        gan_lightning.load_pretrained(exported[1], model_class="gan_lightning.models.VAE")


def test_the_left_out_discriminator_says_where_it_is(exported):
    model = gan_lightning.load_pretrained(exported[1])
    with pytest.raises(RuntimeError, match="not in an exported model folder.*fit --ckpt_path"):
        model.discriminator(torch.zeros(2, 1, 8, 8))


def test_export_never_overwrites_and_leaves_no_half_folder(exported, tmp_path, monkeypatch):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not an empty folder"):
        export(exported[0], taken)
    assert (taken / "thesis.tex").read_text() == "years of work"
    from gan_lightning import pretrained

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pretrained.ModelCard, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        export(exported[0], tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # neither the folder nor its staging copy


def test_push_to_hub_uploads_the_folder_export_writes_and_a_hub_id_loads(exported, tmp_path, monkeypatch):
    """Offline: the Hub's API replaced by one that records what would be uploaded, and snapshot_download by the
    folder it would fetch."""
    import huggingface_hub
    from huggingface_hub import hub_mixin

    uploaded = {}

    class OfflineApi:
        def __init__(self, *args, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})
            return f"https://huggingface.co/{repo_id}"

    monkeypatch.setattr(hub_mixin, "HfApi", OfflineApi)
    model, config = load_folder(exported[1])
    ModelFolder(model, config).push_to_hub("user/tiny-gan")
    assert set(uploaded) >= {"model.safetensors", "config.json", "README.md"}
    assert uploaded["model.safetensors"] == (exported[1] / "model.safetensors").read_bytes()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(exported[1]))
    assert gan_lightning.load_pretrained("user/tiny-gan").iteration == 3


def test_a_model_class_of_your_own_exports_and_loads_when_you_name_it(tmp_path):
    """InfoGAN (examples/, outside the package) keeps its discriminator in the folder (``export_leaves_out``): Q,
    which ``encode`` reads, shares its body. Its class is imported only because the user names it."""
    from examples.infogan import InfoGAN

    ckpt = trained_checkpoint(tmp_path, InfoGAN(data_shape=(1, 8, 8), noise_dim=4, n_categories=3, n_continuous=1,
                                                width=4))
    with pytest.raises(PretrainedError.__mro__[1], match="not one of gan_lightning.models"):
        export(ckpt, tmp_path / "refused")
    folder = export(ckpt, tmp_path / "exported", "examples.infogan.InfoGAN")
    with pytest.raises(PretrainedError.__mro__[1], match="names the model class 'gan_lightning.models.InfoGAN'"):
        gan_lightning.load_pretrained(folder)
    loaded = gan_lightning.load_pretrained(folder, model_class="examples.infogan.InfoGAN")
    original, _ = load_model(str(ckpt), chosen_class="examples.infogan.InfoGAN")
    assert_same_outputs(loaded, original)


def test_settings_that_would_build_millions_of_modules_are_refused_before_they_are_built(tmp_path):
    """The meta device allocates no tensor, but every module is a Python object: a forged depth is refused when the
    build passes a few modules per tensor the file holds, in a second, not after hours and hundreds of GB."""
    import time

    from gan_lightning.checkpoints import check_weights

    ckpt = trained_checkpoint(tmp_path, FAMILIES["flow"]())
    folder = export(ckpt, tmp_path / "exported")
    edit_config(folder, lambda c: c["settings"].update(steps_per_level=10**7))
    start = time.perf_counter()
    refused(folder, r"its settings build more than [\d,]+ modules")
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    with pytest.raises(PretrainedError.__mro__[1], match=r"checkpoint .* build more than [\d,]+ modules"):
        check_weights(RealNVP, {"data_shape": (1, 8, 8), "levels": 2, "steps_per_level": 10**7, "hidden": 8}, state,
                      ckpt)
    assert time.perf_counter() - start < 30


def test_a_hub_id_that_cannot_be_downloaded_is_one_line(monkeypatch):
    import huggingface_hub

    def offline(repo_id, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(PretrainedError, match=r"exported/bigan is neither a folder here nor a Hub repository that "
                                              r"could be downloaded \(OSError: We couldn't connect"):
        gan_lightning.load_pretrained("exported/bigan")


def test_the_card_takes_scores_only_from_the_checkpoints_own_run(exported, tmp_path):
    """A checkpoint outside a run's checkpoints/ folder: its neighbours' logs are not its scores."""
    import shutil

    elsewhere = tmp_path / "downloads" / "model.ckpt"
    elsewhere.parent.mkdir()
    shutil.copy(exported[0], elsewhere)
    # another run's log where a run's would be (the checkpoint folder's parent), at the same iteration
    (tmp_path / "logs" / "version_0").mkdir(parents=True)
    (tmp_path / "logs" / "version_0" / "metrics.csv").write_text("epoch,iteration,val/fid_inception\n0,3,1.5\n")
    card = (export(elsewhere, tmp_path / "out") / "README.md").read_text()
    assert "No score was recorded at this iteration" in card and "fid_inception" not in card


def test_the_upload_command_the_docs_give_is_installed():
    """`hf upload` (README, docs/tracking.md, export's last line) is huggingface_hub's command line, installed with
    the package; the upload itself needs the network, so only its help runs here."""
    import shlex

    from gan_lightning.pretrained import UPLOAD

    words = shlex.split(UPLOAD.split("  (")[0].format(folder="DIR"))
    hf = Path(sys.executable).parent / words[0]
    out = subprocess.run([str(hf), *words[1:2], "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "REPO_ID" in out.stdout and "LOCAL_PATH" in out.stdout, out.stderr[-1000:]
    for page in (REPO / "README.md", REPO / "docs" / "tracking.md"):
        assert "hf upload USER/bigan-fashion-mnist exported/bigan ." in page.read_text()
