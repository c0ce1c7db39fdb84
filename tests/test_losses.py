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


# --- GAN losses, penalties and Su's additions (issue: GAN and ALI) ---------------------------------

from gan_lightning.losses import (  # noqa: E402
    gan_discriminator_loss,
    gan_generator_loss,
    gradient_penalty,
    r1_penalty,
    su_regulariser,
)

D_REAL, D_FAKE = torch.tensor([2.0, -0.5]), torch.tensor([0.5, -3.0])


@pytest.mark.parametrize("kind,expected", [
    ("hinge", (max(0, 1 - 2.0) + max(0, 1 + 0.5)) / 2 + (max(0, 1 + 0.5) + max(0, 1 - 3.0)) / 2),
    ("wasserstein", (0.5 - 3.0) / 2 - (2.0 - 0.5) / 2),
    ("non_saturating", (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(0.5))) / 2
                        + (math.log1p(math.exp(0.5)) + math.log1p(math.exp(-3.0))) / 2),
])
def test_gan_discriminator_losses_by_hand(kind, expected):
    assert gan_discriminator_loss(D_REAL, D_FAKE, kind).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind,expected", [
    ("non_saturating", (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(3.0))) / 2),  # -log D(G(z))
    ("minimax", -(math.log1p(math.exp(0.5)) + math.log1p(math.exp(-3.0))) / 2),       # log(1 - D(G(z)))
    ("hinge", -(0.5 - 3.0) / 2),
    ("wasserstein", -(0.5 - 3.0) / 2),
])
def test_gan_generator_losses_by_hand(kind, expected):
    assert gan_generator_loss(D_FAKE, kind).item() == pytest.approx(expected, rel=1e-6)


def test_su_joint_loss_pushes_both_pairs_to_the_encoder_label():
    expected = -torch.log(torch.sigmoid(D_REAL)).mean() - torch.log(torch.sigmoid(D_FAKE)).mean()
    assert bigan_encoder_generator_loss(D_REAL, D_FAKE, "su").item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradient_penalty_takes_the_norm_over_all_non_batch_dimensions():
    w = torch.randn(1, 3, 4, 4)
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731  grad_x D = w at every x
    x_real, x_fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    assert gradient_penalty(critic, x_real, x_fake).item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)


def test_r1_penalty_is_the_squared_gradient_norm_on_real_data():
    x_real = torch.randn(6, 2, 3, 3, requires_grad=True)
    d_real = 0.5 * x_real.square().flatten(1).sum(1)  # grad_x D = x
    expected = x_real.detach().flatten(1).square().sum(1).mean()
    assert r1_penalty(d_real, x_real).item() == pytest.approx(expected.item(), rel=1e-6)


def test_su_regulariser_is_zero_at_the_old_output_and_pulls_back_towards_it():
    x_old = torch.randn(4, 3)
    x = x_old.clone().requires_grad_(True)
    loss = su_regulariser(x, x_old)
    loss.backward()
    assert loss.item() == 0 and torch.all(x.grad == 0)
    moved = (x_old + 0.1).requires_grad_(True)
    su_regulariser(moved, x_old).backward()
    stepped = moved.detach() - 0.5 * moved.grad  # a gradient step moves G(z) back towards G_old(z)
    assert (stepped - x_old).norm() < (moved.detach() - x_old).norm()
