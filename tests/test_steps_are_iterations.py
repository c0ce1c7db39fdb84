"""A step is an iteration: ``max_steps``, checkpoint intervals and names, and the logged step count iterations
(one call of ``update_players``), whatever the number of players, ``n_critic`` and ``data.iterations_per_batch``
(``AdversarialModule.count_iterations``). Lightning's own count under manual optimisation is one per optimizer
step: BiGAN would stop at half its ``max_steps``, a three-player AAE at a third.

Tiny widths on 8x8 digits; budget: about 30 s of CI."""
import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from gan_lightning.errors import ConfigError
from gan_lightning.models import SemiSupervisedAAE
from tests.helpers import digits, tiny_bigan, tiny_gan, tiny_trainer

FAMILIES = {
    # the discriminator steps at every iteration, the generator at every fifth: 1 or 2 optimizer steps
    "gan n_critic 5": lambda: tiny_gan(width=16, n_critic=5),
    "bigan": lambda: tiny_bigan(width=16),  # 2 optimizer steps per iteration
    # reconstruction, regularisation (D, then E) and the labelled batch's classifier: 4 optimizer steps
    "semi-supervised aae": lambda: SemiSupervisedAAE(data_shape=(1, 8, 8), latent_dim=3, width=16,
                                                     discriminator_width=16),
}


def fit(root, model, *callbacks, ckpt_path=None, **trainer_args):
    checkpoints = ModelCheckpoint(dirpath=root / "checkpoints", filename="{step}", every_n_train_steps=3,
                                  save_top_k=-1, save_last=True, enable_version_counter=False)
    trainer_args = {"max_epochs": 10, **trainer_args}
    trainer = tiny_trainer(root, limit_train_batches=4, enable_checkpointing=True, callbacks=[*callbacks, checkpoints],
                           logger=CSVLogger(root, name="logs", version=0), log_every_n_steps=1, **trainer_args)
    trainer.fit(model, digits(batch_size=16, on_device=True), ckpt_path=ckpt_path)
    return trainer


def logged_steps(root) -> list[tuple[int, int]]:
    """(step, iteration) of each logged training row."""
    with open(root / "logs" / "version_0" / "metrics.csv") as file:
        return [(int(row["step"]), int(float(row["iteration"]))) for row in csv.DictReader(file)
                if row.get("train/d_loss") or row.get("train/ae_loss")]


@pytest.mark.parametrize("family", FAMILIES)
def test_max_steps_n_ends_at_iteration_n_and_steps_name_iterations(tmp_path, family):
    model = FAMILIES[family]()
    trainer = fit(tmp_path, model, max_steps=7)
    optimizer_steps = sum(opt.state_dict()["state"].get(0, {}).get("step", torch.tensor(0)).item()
                          for opt in trainer.optimizers)
    assert optimizer_steps > 7  # the cause: more optimizer steps than iterations
    assert (model.iteration, trainer.global_step) == (7, 7)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step=*.ckpt"))
    assert names == ["step=3.ckpt", "step=6.ckpt"]  # every 3 iterations, named by the iteration
    saved = torch.load(tmp_path / "checkpoints" / "step=6.ckpt", weights_only=True)
    assert (saved["global_step"], saved["gan_lightning"]["iteration"]) == (6, 6)
    # the logged rows' step is the iteration the row was logged at, less one, as Lightning's first row is step 0
    assert logged_steps(tmp_path) == [(i - 1, i) for i in range(1, 8)]


def test_with_several_iterations_per_batch_max_steps_still_counts_iterations(tmp_path):
    model = tiny_bigan(width=16)
    trainer = tiny_trainer(tmp_path, max_epochs=10, max_steps=6)
    trainer.fit(model, digits(batch_size=16, on_device=True, iterations_per_batch=2))
    assert (model.iteration, trainer.global_step) == (6, 6)


def test_a_max_steps_between_two_iterations_of_a_batch_is_refused_naming_both(tmp_path):
    trainer = tiny_trainer(tmp_path, max_epochs=10, max_steps=5)
    with pytest.raises(ConfigError, match=r"trainer.max_steps 5 is not a multiple of data.iterations_per_batch 2.*"
                                          r"set trainer.max_steps 4 or 6"):
        trainer.fit(tiny_bigan(width=16), digits(batch_size=16, on_device=True, iterations_per_batch=2))


def test_a_checkpoint_that_counted_optimizer_steps_resumes_at_its_iteration(tmp_path):
    """Checkpoints written before steps were iterations hold BiGAN's ``global_step`` at twice the iteration: the
    resumed run starts at the checkpoint's iteration and runs on to ``max_steps`` iterations, not 0 more."""
    fit(tmp_path, tiny_bigan(width=16), max_steps=3)
    path = tmp_path / "checkpoints" / "last.ckpt"
    old = torch.load(path, weights_only=True)
    assert old["gan_lightning"]["iteration"] == 3
    old["global_step"] = 6  # as the earlier version wrote it: one step per player update
    loop = old["loops"]["fit_loop"]
    loop["epoch_loop.manual_optimization.optim_step_progress"]["total"].update(ready=6, completed=6)
    torch.save(old, path)
    model = tiny_bigan(width=16)
    started = []

    class Started(L.Callback):
        def on_train_start(self, trainer, pl_module):
            started.append((pl_module.iteration, trainer.global_step))

    trainer = fit(tmp_path, model, Started(), ckpt_path=path, max_steps=5)
    assert started == [(3, 3)]
    assert (model.iteration, trainer.global_step) == (5, 5)


def test_the_progress_bar_counts_iterations(tmp_path):
    from gan_lightning.callbacks import GANProgressBar

    class Shown(L.Callback):  # after the bar's own on_train_batch_end: what it shows after each batch
        def __init__(self):
            self.seen = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen.append((bar.train_progress_bar.n, bar.train_progress_bar.total))

    bar, shown = GANProgressBar(refresh_rate=1), Shown()
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=3, enable_progress_bar=True,
                           callbacks=[bar, shown])
    trainer.fit(tiny_bigan(width=16), digits(batch_size=16, on_device=True, iterations_per_batch=2))
    assert shown.seen == [(2, 6), (4, 6), (6, 6)]  # 3 of Lightning's batches of 2 iterations


def test_a_run_bounded_by_steps_alone_shows_the_iterations_left_after_a_resume(tmp_path):
    from gan_lightning.callbacks import GANProgressBar

    fit(tmp_path, tiny_bigan(width=16), max_steps=3)  # stops inside the first epoch of 4
    bar = GANProgressBar(refresh_rate=1)
    totals = []

    class Total(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            totals.append((bar.train_progress_bar.n, bar.train_progress_bar.total))

    fit(tmp_path, tiny_bigan(width=16), bar, Total(), ckpt_path=tmp_path / "checkpoints" / "last.ckpt",
        max_steps=4, max_epochs=-1, enable_progress_bar=True)
    assert totals == [(4, 4)]  # the epoch's 4th iteration of 4, not 4 of the 1 left
