import math

import pytest
import torch

from gan_lightning.losses import bigan_encoder_generator_loss, discriminator_loss


def test_discriminator_loss_at_chance_is_2_log_2():
    zeros = torch.zeros(7)
    assert discriminator_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))


def test_discriminator_loss_matches_binary_cross_entropy_definition():
    d_real, d_fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    p_real, p_fake = torch.sigmoid(d_real), torch.sigmoid(d_fake)
    expected = -(torch.log(p_real).mean() + torch.log(1 - p_fake).mean())
    assert discriminator_loss(d_real, d_fake).item() == pytest.approx(expected.item(), rel=1e-6)


def test_losses_stay_finite_for_extreme_logits():
    big = torch.tensor([1e4, -1e4])
    assert torch.isfinite(discriminator_loss(big, -big))
    assert torch.isfinite(bigan_encoder_generator_loss(big, -big))


def test_minimax_is_minus_the_discriminator_loss():
    d_real, d_fake = torch.randn(5), torch.randn(5)
    assert bigan_encoder_generator_loss(d_real, d_fake, "minimax").item() == pytest.approx(
        -discriminator_loss(d_real, d_fake).item())


def test_non_saturating_swaps_the_labels():
    # -log(1 - D(x, E(x))) - log D(G(z), z)
    d_real, d_fake = torch.tensor([1.5]), torch.tensor([-0.5])
    expected = -torch.log(1 - torch.sigmoid(d_real)) - torch.log(torch.sigmoid(d_fake))
    assert bigan_encoder_generator_loss(d_real, d_fake).item() == pytest.approx(expected.item(), rel=1e-6)


def test_non_saturating_gives_strong_gradient_where_minimax_saturates():
    # A confident D (fake logit -8): minimax's gradient for the generator vanishes, the non-saturating one does not.
    d_real = torch.tensor([8.0])
    grads = {}
    for kind in ("minimax", "non_saturating"):
        d_fake = torch.tensor([-8.0], requires_grad=True)
        bigan_encoder_generator_loss(d_real, d_fake, kind).backward()
        grads[kind] = d_fake.grad.abs().item()
    assert grads["non_saturating"] > 0.99 and grads["minimax"] < 1e-3


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="non_saturating"):
        bigan_encoder_generator_loss(torch.zeros(1), torch.zeros(1), "hinge")
