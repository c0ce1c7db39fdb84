"""The model that lives outside the package (examples/infogan.py, docs/extending.md): it fits from its config, and
it learns what InfoGAN learns. Its config also runs in test_cli's every-config smoke test."""
import csv
import math
from pathlib import Path

import pytest
import torch
import yaml

from examples.infogan import InfoGAN, information_losses
from gan_lightning.checkpoints import CheckpointError
from gan_lightning.cli import main
from gan_lightning.commands import load_model
from tests.helpers import digits, tiny_trainer
from tests.test_bigan import Snapshots, changed

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "examples" / "infogan.yaml"


def test_information_losses_are_the_codes_negative_log_likelihoods():
    category, continuous = torch.tensor([0, 3]), torch.tensor([[0.5, -1.0], [0.0, 1.0]])
    flat = torch.cat([torch.zeros(2, 4), continuous], dim=1)                       # uniform Q(c_cat), exact means
    nll_category, nll_continuous = information_losses(flat, category, continuous)
    assert torch.isclose(nll_category, torch.tensor(math.log(4))) and nll_continuous == 0  # L_I = H(c) - log K = 0
    sure = torch.cat([torch.eye(4)[category] * 50, torch.zeros(2, 2)], dim=1)        # Q certain of c_cat, means 0
    nll_category, nll_continuous = information_losses(sure, category, continuous)
    assert nll_category < 1e-6 and torch.isclose(nll_continuous, torch.tensor(0.5 * (0.25 + 1 + 0 + 1) / 2))


def test_d_and_q_step_together_and_the_generator_alone(tmp_path):
    """The discriminator's step moves D's body and both heads (Q shares D's optimizer), never G; G's moves only G."""
    spy = Snapshots()
    model = InfoGAN(data_shape=(1, 8, 8), noise_dim=4, n_categories=3, n_continuous=1, width=4)
    tiny_trainer(tmp_path, callbacks=[spy], limit_train_batches=2).fit(model, digits())
    for start in (0, 4):
        _, before_d, before_g, at_end = (event[1] for event in spy.events[start: start + 4])
        assert all(changed(before_d, before_g, f"discriminator.{part}") for part in ("body", "d_head", "q_head"))
        assert not changed(before_d, before_g, "generator")
        assert changed(before_g, at_end, "generator") and not changed(before_g, at_end, "discriminator")


@pytest.mark.slow
def test_infogan_fits_from_its_config_and_its_generator_writes_the_codes_that_q_reads(tmp_path, data_dir, monkeypatch):
    """150 iterations of a narrow InfoGAN on Fashion-MNIST: Q reads the category and the continuous codes back from
    G's samples, and the category alone accounts for much of what G draws at a fixed noise. Without the
    information term (information_weight 0) the same run gives chance (0.11), correlations near 0 and a share
    of 0.02."""
    spec = yaml.safe_load(CONFIG.read_text())
    kept = ("ModelCheckpoint", "SampleGrid", "CodeGrid")  # the pictures; the scores have their own tests
    spec["trainer"]["callbacks"] = [cb for cb in spec["trainer"]["callbacks"] if cb["class_path"].endswith(kept)]
    config = tmp_path / "infogan.yaml"
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(config), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
          "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "150", "--trainer.limit_val_batches", "4",
          "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "10",
          "--trainer.enable_progress_bar", "false", "--model.init_args.width", "16",
          "--data.init_args.batch_size", "64", "--data.init_args.data_dir", str(data_dir)])
    root = tmp_path / spec["trainer"]["default_root_dir"]
    for picture in ("samples", "reconstructions", "codes"):
        assert list((root / "samples").glob(f"{picture}_it0000150.png")), f"no {picture} picture"
    rows = list(csv.DictReader(next((root / "logs").rglob("metrics.csv")).open()))
    info_cat = [float(r["train/info_cat"]) for r in rows if r.get("train/info_cat")]
    assert info_cat[0] > 2.1 and info_cat[-1] < info_cat[0] - 0.3, info_cat  # from about log 10 = 2.30, down
    held_out = {k: float(v) for r in rows for k, v in r.items() if k.startswith("val/") and v}
    assert 0 <= held_out["val/cluster_error_majority"] < 0.9 and "val/info_cat" in held_out and "val/d_loss" in held_out

    checkpoint = str(root / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError, match="--model_class examples.infogan.InfoGAN"):
        load_model(checkpoint)  # a class outside gan_lightning.models is imported only when the user names it
    model, _ = load_model(checkpoint, chosen_class="examples.infogan.InfoGAN")
    z = model.draw_prior(1000, torch.Generator().manual_seed(1))
    _, category, continuous = model.split(z)
    _, read_category, read_continuous = model.split(model.encode(model.sample(z=z)))
    assert (read_category == category).float().mean() > 0.6                         # chance: 0.1
    for i in range(2):
        assert torch.corrcoef(torch.stack([continuous[:, i], read_continuous[:, i]]))[0, 1] > 0.5

    noise = model.split(z[:100])[0]
    per_category = torch.stack([model.sample(z=model.join(noise, torch.full((100,), k), torch.zeros(100, 2)))
                                for k in range(10)])                                 # (K, 100, 1, 28, 28)
    share = per_category.mean(1).var(0).sum() / per_category.flatten(0, 1).var(0).sum()
    assert share > 0.3, f"the category accounts for {share:.2f} of the samples' variance at a fixed noise"
