"""The order of the players' updates: simultaneous (ALI's and BiGAN's released code) and alternating.

A simultaneous iteration takes D's gradients of D's loss and G/E's gradients of G/E's loss from one forward
pass through D as it was before either player steps, then steps both. These tests write that step by hand,
with ``torch.autograd.grad`` and the same noise, and compare.
"""
import copy

import lightning as L
import pytest
import torch

from gan_lightning.errors import ConfigError
from gan_lightning.losses import (
    bigan_encoder_generator_loss,
    discriminator_loss,
    gan_discriminator_loss,
    gan_generator_loss,
)
from tests.helpers import digits, tiny_ali, tiny_bigan, tiny_gan, tiny_trainer


class RecordIteration(L.Callback):
    """The first batch, the model's state before and after its iteration, and the gradients each optimizer stepped."""

    def __init__(self):
        self.grads_at_step: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.x = batch[0].clone()
            self.before = copy.deepcopy(pl_module.state_dict())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads_at_step.append({k: None if p.grad is None else p.grad.clone()
                                   for k, p in pl_module.named_parameters()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.after = copy.deepcopy(pl_module.state_dict())


def one_iteration(tmp_path, model) -> RecordIteration:
    record = RecordIteration()
    tiny_trainer(tmp_path, callbacks=[record], limit_train_batches=1).fit(model, digits())
    return record


def losses(model, x):
    """D's loss and the generating player's loss from one forward pass, with iteration 0's noise (as training)."""
    model.seed_iteration(0)
    z = model.draw_training_prior(len(x))
    if hasattr(model, "encoder"):
        x_fake, z_enc = model.generator(z), model.infer(x)
        if type(model).__name__ == "ALI":  # ali/bricks.py get_predictions: one batch of [x; G(z)] and [E(x); z]
            scores = model.discriminator(torch.cat([x, x_fake]), torch.cat([z_enc, z]))
            d_real, d_fake, weight = scores[: len(x)], scores[len(x):], 1.0
        else:  # BiGAN's train_gan.py: one call per kind of pair, each loss the mean of its two terms
            d_real, d_fake, weight = model.discriminator(x, z_enc), model.discriminator(x_fake, z), 0.5
        return (weight * discriminator_loss(d_real, d_fake),
                weight * bigan_encoder_generator_loss(d_real, d_fake, model.loss))
    x_fake = model.generator(z)
    d_real, d_fake = model.discriminator(x), model.discriminator(x_fake)
    return gan_discriminator_loss(d_real, d_fake, model.loss), gan_generator_loss(d_fake, model.loss)


def hand_written_simultaneous_step(model, state: dict, x: torch.Tensor) -> dict:
    """Load ``state``, take both players' gradients from one forward pass, then step both with the model's Adam."""
    model = copy.deepcopy(model)
    model.load_state_dict(state)
    model.train()
    d_params = list(model.discriminator.parameters())
    g_params = [p for name in model.player_networks() if name != "discriminator"
                for p in model.get_submodule(name).parameters()]
    d_loss, g_loss = losses(model, x)
    d_grads = torch.autograd.grad(d_loss, d_params, retain_graph=True)
    g_grads = torch.autograd.grad(g_loss, g_params)
    for params, grads in ((d_params, d_grads), (g_params, g_grads)):
        optimizer = type(model).default_optimizer(params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer.step()
    return model.state_dict()


MODELS = {
    "ali": lambda **kw: tiny_ali(encoder="gaussian", dropout=0.2, seed=5, **kw),  # dropout masks: (seed, iteration)
    "bigan": lambda **kw: tiny_bigan(seed=5, **kw),
    "gan": lambda **kw: tiny_gan(seed=5, **kw),
}


@pytest.mark.parametrize("name", MODELS)
def test_a_simultaneous_iteration_equals_the_hand_written_step_and_differs_from_alternating(tmp_path, name):
    torch.manual_seed(0)
    model = MODELS[name](update="simultaneous")
    record = one_iteration(tmp_path / "simultaneous", model)
    expected = hand_written_simultaneous_step(model, record.before, record.x)
    for key, value in expected.items():  # weights and batch-norm statistics
        torch.testing.assert_close(record.after[key], value, rtol=0, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}")

    # The same first iteration in the alternating order: the same D step, but G/E stepped against the updated D.
    torch.manual_seed(0)
    alternating = one_iteration(tmp_path / "alternating", MODELS[name](update="alternating"))
    weights = [k for k, _ in model.named_parameters()]
    assert all(torch.equal(alternating.before[k], record.before[k]) for k in record.before)
    assert all(torch.equal(alternating.after[k], record.after[k]) for k in weights if k.startswith("discriminator"))
    assert not all(torch.equal(alternating.after[k], record.after[k]) for k in weights if k.startswith("generator"))


@pytest.mark.parametrize("name", MODELS)
def test_both_players_gradients_come_from_the_discriminator_before_either_step(tmp_path, name):
    record = one_iteration(tmp_path, MODELS[name](update="simultaneous"))
    at_d_step, at_g_step = record.grads_at_step
    # Both backward passes ran before D stepped: G/E's gradients were already there at D's step, and are the ones
    # G/E stepped with; neither backward wrote into the other player's gradients.
    g_keys = [k for k in at_g_step if not k.startswith("discriminator")]
    assert all(at_d_step[k] is not None and torch.equal(at_d_step[k], at_g_step[k]) for k in g_keys)

    # They are the gradients against the pre-step D, not against the D that stepped.
    def g_grads(state):
        model = MODELS[name](update="simultaneous")
        model.load_state_dict(state)
        g_params = [p for n in model.player_networks() if n != "discriminator"
                    for p in model.get_submodule(n).parameters()]
        return torch.autograd.grad(losses(model, record.x)[1], g_params)

    updated_d = {k: (record.after[k] if k.startswith("discriminator") else v) for k, v in record.before.items()}
    recorded = [at_g_step[k] for k in g_keys]
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(recorded, g_grads(record.before), strict=True))
    assert not all(torch.allclose(a, b, atol=1e-7) for a, b in zip(recorded, g_grads(updated_d), strict=True))


def test_the_papers_configs_name_their_update_order():
    from pathlib import Path

    import yaml

    configs = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(configs.glob("**/*.yaml")):
        model = (yaml.safe_load(path.read_text()) or {}).get("model", {})
        name = model.get("class_path", "").rsplit(".", 1)[-1]
        if name in ("ALI", "BiGAN", "GAN"):
            update = model["init_args"]["update"]
            su = model["init_args"].get("generator_steps", 1) > 1
            pacgan = path.parent.name == "toy"  # PacGAN's GAN baseline steps both players at once (ali_algorithm)
            expected = "alternating" if (name == "GAN" and not pacgan) or su else "simultaneous"
            assert update == expected, f"{path.name}: update {update}, the paper's code: {expected}"
    assert tiny_ali().update == tiny_bigan().update == "simultaneous" and tiny_gan().update == "alternating"


def test_simultaneous_updates_refuse_su_generator_steps_naming_the_fix():
    with pytest.raises(ConfigError, match="model.update alternating"):
        tiny_ali(generator_steps=2, su_lambda=5.0)
    tiny_ali(generator_steps=2, su_lambda=5.0, update="alternating")
    with pytest.raises(ConfigError, match="simultaneous or alternating"):
        tiny_gan(update="both")


def test_simultaneous_updates_refuse_fp16s_loss_scaler_and_alternating_trains_with_it(tmp_path):
    """fp16's scaler may change its scale between the two players' steps of one simultaneous iteration."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    def trainer(out):
        return tiny_trainer(out, limit_train_batches=1,
                            plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))])

    with pytest.raises(ConfigError, match="bf16-mixed .* model.update alternating"):
        trainer(tmp_path / "a").fit(tiny_bigan(), digits())
    model = tiny_bigan(update="alternating")
    trainer(tmp_path / "b").fit(model, digits())
    assert model.iteration == 1
