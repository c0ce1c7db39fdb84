"""BiGAN and the adversarial base module: each player's step touches only that player."""
import copy

import lightning as L
import pytest
import torch

from gan_lightning.models import BiGAN
from tests.helpers import digits, tiny_bigan, tiny_trainer


def params(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters() if k.startswith(prefix)}


class Snapshots(L.Callback):
    """Parameters at the start of each batch and just before each optimizer step."""

    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.events.append(("batch_start", params(pl_module, "")))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        player = "discriminator" if optimizer is trainer.optimizers[0] else "generator_encoder"
        grads = {k: None if p.grad is None else p.grad.clone() for k, p in pl_module.named_parameters()}
        self.events.append((player, params(pl_module, ""), grads))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.events.append(("batch_end", params(pl_module, "")))


def changed(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def same_grads(a: dict, b: dict, prefixes: tuple[str, ...]) -> bool:
    keys = [k for k in a if k.startswith(prefixes)]
    return all((a[k] is None and b[k] is None) or (a[k] is not None and b[k] is not None and torch.equal(a[k], b[k]))
               for k in keys)


def test_each_player_step_leaves_the_other_players_bitwise_unchanged(tmp_path):
    """The alternating order (simultaneous updates: tests/test_update_order.py)."""
    spy = Snapshots()
    tiny_trainer(tmp_path, callbacks=[spy], limit_train_batches=2).fit(tiny_bigan(update="alternating"), digits())
    kinds = [e[0] for e in spy.events]
    assert kinds == ["batch_start", "discriminator", "generator_encoder", "batch_end"] * 2
    ge_grads_before = {k: None for k in spy.events[0][1]}  # no player has a gradient before the first step
    for start in (0, 4):
        at_start, before_d, before_ge, at_end = spy.events[start: start + 4]
        # The D step ran between before_d and before_ge: only D moved; its backward left G/E gradients alone.
        assert not changed(at_start[1], before_d[1], "")
        assert changed(before_d[1], before_ge[1], "discriminator")
        assert not changed(before_d[1], before_ge[1], "generator") and not changed(before_d[1], before_ge[1], "encoder")
        assert same_grads(before_d[2], ge_grads_before, ("generator", "encoder"))
        # The G/E step: G and E moved, D did not; its backward left D's gradients alone.
        assert changed(before_ge[1], at_end[1], "generator") and changed(before_ge[1], at_end[1], "encoder")
        assert not changed(before_ge[1], at_end[1], "discriminator")
        assert same_grads(before_ge[2], before_d[2], ("discriminator",))
        ge_grads_before = before_ge[2]


def test_n_critic_steps_the_generator_every_nth_iteration(tmp_path):
    spy = Snapshots()
    model = tiny_bigan(n_critic=3)
    trainer = tiny_trainer(tmp_path, callbacks=[spy], limit_train_batches=6)
    trainer.fit(model, digits())
    players = [e[0] for e in spy.events if e[0] not in ("batch_start", "batch_end")]
    assert players == ["discriminator", "discriminator", "discriminator", "generator_encoder"] * 2
    assert model.iteration == trainer.global_step == 6  # 8 optimizer steps; a step is an iteration


def test_iteration_counter_and_images_seen_survive_a_checkpoint(tmp_path):
    model = tiny_bigan()
    trainer = tiny_trainer(tmp_path, limit_train_batches=5)
    trainer.fit(model, digits(batch_size=16))
    assert (model.iteration, model.images_seen, trainer.global_step) == (5, 80, 5)
    trainer.save_checkpoint(tmp_path / "bigan.ckpt")
    restored = BiGAN.load_from_checkpoint(tmp_path / "bigan.ckpt")
    assert (restored.iteration, restored.images_seen) == (5, 80)
    assert torch.equal(restored.generator.net[0].weight, model.generator.net[0].weight)


def test_a_checkpoint_of_another_model_is_refused_with_both_names(tmp_path):
    class OtherGAN(BiGAN):
        pass

    trainer = tiny_trainer(tmp_path, limit_train_batches=1)
    trainer.fit(tiny_bigan(), digits())
    trainer.save_checkpoint(tmp_path / "bigan.ckpt")
    with pytest.raises(ValueError, match="holds a BiGAN model, but the config builds a OtherGAN"):
        OtherGAN.load_from_checkpoint(tmp_path / "bigan.ckpt")


def test_ema_follows_the_update_rule_and_is_what_sample_uses(tmp_path):
    decay = 0.75
    after_step = []

    class Record(L.Callback):  # after training_step, which stepped G and then updated the EMA
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            after_step.append(copy.deepcopy(pl_module.generator.state_dict()))

    model = tiny_bigan(ema_decay=decay)
    tiny_trainer(tmp_path, callbacks=[Record()], limit_train_batches=3).fit(model, digits())
    key = "net.0.weight"
    # The first update copies; the n-th after it interpolates with the warmed-up decay min(decay, (1 + n) / (10 + n)).
    d1, d2 = min(decay, 2 / 11), min(decay, 3 / 12)
    expected = d2 * (d1 * after_step[0][key] + (1 - d1) * after_step[1][key]) + (1 - d2) * after_step[2][key]
    averaged = model.ema["generator"].module
    assert torch.allclose(averaged.state_dict()[key], expected, atol=1e-6)
    # Batch-norm running statistics are the live network's, not an average.
    buffers = [k for k, _ in model.generator.named_buffers()]
    assert buffers and all(torch.equal(averaged.state_dict()[k], after_step[2][k]) for k in buffers)
    assert not torch.equal(averaged.state_dict()[key], model.generator.state_dict()[key])
    z = torch.rand(4, 4) * 2 - 1
    assert torch.equal(model.sample(z=z), averaged.eval()(z))
    assert not any(p.requires_grad for p in averaged.parameters())


def test_training_noise_is_a_function_of_the_iteration():
    model = tiny_bigan(seed=7)
    draws = []
    for it in (0, 1, 0):
        model.seed_iteration(it)
        draws.append(model.draw_training_prior(3))
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])
    # ... and of the seed; different ranks are checked in the two-process test (test_ddp.py)
    other = tiny_bigan(seed=8)
    other.seed_iteration(0)
    assert not torch.equal(other.draw_training_prior(3), draws[0])


def test_public_api_shapes_and_training_mode_restored():
    model = tiny_bigan().train()
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    assert model.sample(6).shape == (6, 1, 8, 8)
    assert model.encode(x).shape == (5, 4)
    assert model.reconstruct(x).shape == x.shape
    assert model.generator.training and model.encoder.training  # evaluated in eval mode, restored after
    g = torch.Generator().manual_seed(0)
    assert torch.equal(model.sample(3, generator=g), model.sample(3, generator=torch.Generator().manual_seed(0)))


def test_a_nan_loss_stops_training_naming_the_player_and_keeps_the_checkpoint(tmp_path):
    model = tiny_bigan()
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, enable_checkpointing=True)
    trainer.fit(model, digits())
    trainer.save_checkpoint(tmp_path / "good.ckpt")
    model.discriminator.joint[-1].bias.data.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="discriminator loss is nan at iteration 2"):
        tiny_trainer(tmp_path, limit_train_batches=2, max_epochs=2).fit(model, digits())
    assert BiGAN.load_from_checkpoint(tmp_path / "good.ckpt").iteration == 2


def test_an_optimizer_setting_torch_refuses_names_the_player_before_training(tmp_path):
    from functools import partial

    from gan_lightning.errors import ConfigError

    model = tiny_bigan(optimizer_d=partial(torch.optim.Adam, lr=-1.0))
    with pytest.raises(ConfigError,
                       match="discriminator player's optimizer refuses its settings .*Invalid learning rate"):
        tiny_trainer(tmp_path).fit(model, digits())
    assert model.iteration == 0


def test_bad_model_values_name_the_key():
    with pytest.raises(ValueError, match="model.n_critic"):
        tiny_bigan(n_critic=0)
    with pytest.raises(ValueError, match="model.ema_decay"):
        tiny_bigan(ema_decay=1.5)
    with pytest.raises(ValueError, match="model.generator_steps"):
        tiny_bigan(generator_steps=0)


def test_schedulers_are_stepped_once_per_epoch_for_their_player_only(tmp_path):
    from functools import partial

    model = tiny_bigan(scheduler_d=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, max_epochs=3)
    trainer.fit(model, digits())
    opt_d, opt_ge = trainer.optimizers
    assert opt_d.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.5**3)
    assert opt_ge.param_groups[0]["lr"] == pytest.approx(2e-4)


@pytest.mark.parametrize("precision, fused", [("32-true", False), ("bf16-mixed", False), ("bf16-mixed", True)])
def test_gradient_clipping_bounds_each_players_gradient_norm(tmp_path, precision, fused):
    """Also with fused Adam under bf16, which Lightning's own clipping refuses (the configs use fused Adam)."""
    from functools import partial

    adam = partial(torch.optim.Adam, lr=2e-4, fused=fused)
    norms = {}

    class GradNorms(L.Callback):  # after the batch every player's clipped gradients are still in .grad
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            for player in ("discriminator", "generator", "encoder"):
                grads = [p.grad for p in getattr(pl_module, player).parameters()]
                norms.setdefault(player, []).append(torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(g) for g in grads])).item())

    for clip in (None, 1e-3):
        norms.clear()
        tiny_trainer(tmp_path, precision=precision, callbacks=[GradNorms()]).fit(
            tiny_bigan(gradient_clip_val=clip, optimizer_d=adam, optimizer_ge=adam), digits())
        if clip is None:
            assert min(norms["discriminator"]) > 1e-2
        else:  # D alone, and G with E together, each have norm <= clip
            assert max(norms["discriminator"]) <= clip * 1.01
            assert all((g**2 + e**2) ** 0.5 <= clip * 1.01
                       for g, e in zip(norms["generator"], norms["encoder"], strict=True))
