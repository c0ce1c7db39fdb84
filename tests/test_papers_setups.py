"""The papers' setups around the update, as their released code has them: initialisation, batch norm, networks,
the discriminator's batch, the encoder's input, packing and the generator's noise (docs/algorithms.md)."""
import math

import lightning as L
import pytest
import torch
from torch import nn

from gan_lightning.errors import ConfigError
from gan_lightning.models import GAN, BiGAN
from gan_lightning.nets.ali import ALIMaxoutJointDiscriminator, Maxout
from tests.helpers import digits, tiny_ali, tiny_bigan, tiny_gan, tiny_trainer


def model_of(config: str, *overrides: str) -> L.LightningModule:
    """The model a shipped config builds (nothing trained, no data read)."""
    from gan_lightning.cli import GANLightningCLI

    cli = GANLightningCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                          auto_configure_optimizers=False, run=False, save_config_callback=None,
                          args=["--config", config, "--trainer.logger", "false", "--wandb.mode", "off", *overrides])
    return cli.model


pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


@pytest.mark.parametrize("config, std, momentum", [
    ("configs/toy/ali_ring.yaml", 0.02, 0.05),    # PacGAN's 2DRing_ALI: IsotropicGaussian(0.02), m * 0.05 + p * 0.95
    ("configs/toy/gan_grid.yaml", 0.02, 0.05),    # PacGAN's 2DGrid_GAN
    ("configs/toy/bigan_ring.yaml", 0.02, 0.05),
    ("configs/ali_svhn.yaml", 0.01, 0.05),        # ALI's ali_svhn.py: IsotropicGaussian(0.01)
    ("configs/ali_cifar10.yaml", 0.01, 0.05),
    ("configs/bigan.yaml", 0.02, 0.1),            # BiGAN's net.py weight_init 0.02; torch's batch-norm momentum
])
def test_each_config_starts_its_networks_as_its_papers_code(config, std, momentum):
    model = model_of(config)
    weights, biases, norms = [], [], []
    for name in model.player_networks():
        for m in model.get_submodule(name).modules():
            if isinstance(m, LAYERS):
                weights.append(m.weight.detach().flatten())
                biases += [] if m.bias is None else [m.bias.detach()]
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                norms.append(m)
    w = torch.cat(weights)
    assert w.mean().abs() < std / 20 and w.std().item() == pytest.approx(std, rel=0.02)
    assert all((b == 0).all() for b in biases)
    assert norms and all(m.momentum == momentum for m in norms)
    assert all((m.weight == 1).all() and (m.bias == 0).all() for m in norms if m.affine)


def test_a_config_without_init_std_keeps_torchs_initialisation():
    model = model_of("configs/toy/ali_ring.yaml", "--model.init_args.init_std", "null",
                     "--model.init_args.bn_momentum", "null")
    first = model.generator.net[0]  # torch's Kaiming-uniform: |w| <= 1 / sqrt(fan_in) = 1 / sqrt(2)
    assert first.weight.abs().max() > 0.2 and model.generator.net[1].momentum == 0.1
    assert any((m.bias != 0).any() for m in model.discriminator.modules() if isinstance(m, nn.Linear))


class CountCalls:
    def __init__(self, module: nn.Module):
        self.inputs = []
        module.register_forward_hook(lambda m, args, out: self.inputs.append([a.detach().clone() for a in args]))


@pytest.mark.parametrize("make, update, calls", [
    (tiny_ali, "simultaneous", 1), (tiny_ali, "alternating", 2),     # ALI: [x; G(z)] and [E(x); z] in one batch
    (tiny_bigan, "simultaneous", 2), (tiny_bigan, "alternating", 4),  # BiGAN: one call per kind of pair
])
def test_ali_scores_both_kinds_of_pair_in_one_discriminator_batch_and_bigan_in_two(tmp_path, make, update, calls):
    model = make(update=update)
    d = CountCalls(model.discriminator)
    tiny_trainer(tmp_path, limit_train_batches=1).fit(model, digits())
    assert len(d.inputs) == calls
    if make is tiny_ali:  # the data pairs first, then the generated ones, in one batch of twice the size
        assert len(d.inputs[0][0]) == 2 * 16


def test_bigans_losses_are_half_alis_for_the_same_scores():
    from gan_lightning.models import ALI

    assert BiGAN.loss_weight == 0.5 and ALI.loss_weight == 1.0
    assert not BiGAN.one_discriminator_batch and ALI.one_discriminator_batch


def test_alis_toy_encoder_is_a_change_of_variables_on_x_and_noise():
    """PacGAN's 2DRing_ALI: COVConditional over an MLP with dims [2 * INPUT_DIM, 400, 400, NLAT]."""
    model = model_of("configs/toy/ali_ring.yaml")
    assert model.encoder.net[0].in_features == 4 and model.encoder.net[-1].out_features == 2
    assert model.encoder.net[0].bias is None  # use_bias=False before batch norm
    x = torch.randn(8, 2)
    model.train()
    torch.manual_seed(0)
    z1 = model.infer(x)
    z2 = model.infer(x)
    assert z1.shape == (8, 2) and not torch.allclose(z1, z2)  # the noise enters the code
    model.eval()
    with torch.no_grad():
        expected = model.encoder(torch.cat([x, torch.zeros_like(x)], dim=1))
    torch.testing.assert_close(model.features(x), expected)  # E(x, 0): the noise at its mode
    with pytest.raises(ConfigError, match="change_of_variables"):  # eq. 40's encoder term needs a density
        tiny_ali(data_shape=(2,), architecture="toy", encoder="change_of_variables", loss="su_full")


def test_a_packed_discriminator_scores_m_samples_at_a_time(tmp_path):
    model = GAN(data_shape=(2,), latent_dim=2, architecture="toy", width=40, pack=4, update="simultaneous")
    first = model.discriminator.net[0].linear
    assert first.in_features == 4 * 2
    x = torch.randn(10, 2)
    assert model.critic(x).shape == (2,)  # 10 // 4 packs; the last 2 samples are left out
    pair = torch.cat([x[:4].flatten(), x[4:8].flatten()]).view(2, 8)
    torch.testing.assert_close(model.critic(x), model.discriminator(pair))
    from gan_lightning.data import GANDataModule

    tiny_trainer(tmp_path, limit_train_batches=2).fit(model, GANDataModule("toy_ring", batch_size=20))
    assert model.iteration == 2
    ali = tiny_ali(pack=2)
    assert ali.discriminator.x_layer[1].in_features == 2 * 64 and ali.discriminator.z_in.in_features == 2 * 4
    with pytest.raises(ConfigError, match="model.pack"):
        tiny_gan(pack=2, loss="wasserstein", gradient_penalty=10.0)


@pytest.mark.parametrize("fresh", [True, False])
def test_wgan_gps_generator_draws_its_own_noise(tmp_path, fresh):
    """Algorithm 1, line 11: the generator's step samples a new batch of z."""
    model = tiny_gan(loss="wasserstein", gradient_penalty=10.0, fresh_generator_noise=fresh)
    g = CountCalls(model.generator)
    tiny_trainer(tmp_path, limit_train_batches=1).fit(model, digits())
    assert len(g.inputs) == (2 if fresh else 1)
    if fresh:
        assert not torch.equal(g.inputs[0][0], g.inputs[1][0])
    with pytest.raises(ConfigError, match="fresh_generator_noise"):
        tiny_gan(fresh_generator_noise=True, update="simultaneous")


def test_bigans_joint_discriminator_is_the_official_mnist_one():
    """net.py mnist_mlp with z as its condition, --nobias --nogain: z added before the second layer's batch norm."""
    model = model_of("configs/bigan.yaml")
    d = model.discriminator
    assert {n for n, _ in d.named_parameters()} == {"x_layer.1.weight", "hidden.weight", "z_in.weight",
                                                    "joint.3.weight", "joint.3.bias"}
    norms = [m for m in d.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(norms) == 1 and not norms[0].affine
    d.eval()
    x, z = torch.rand(4, 1, 28, 28) * 2 - 1, torch.rand(4, 50) * 2 - 1
    with torch.no_grad():
        h = d.hidden(d.x_layer(x)) + d.z_in(z)
        torch.testing.assert_close(d(x, z), d.joint(h).squeeze(1))


def test_ali_cifar10_has_the_released_maxout_discriminator():
    model = model_of("configs/ali_cifar10.yaml")
    d = model.discriminator
    assert isinstance(d, ALIMaxoutJointDiscriminator)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())
    assert sum(isinstance(m, Maxout) and m.pieces == 2 for m in d.modules()) == 5 + 2 + 2
    # ali_cifar10.py: x-branch conv 5x5 32, 4x4 64, 4x4 128, 4x4 256, 4x4 512 (with biases), each halved by maxout;
    # z-branch 1x1 512, 512 without biases; joint 1x1 1024, 1024, 1 on the 256 + 256 maxout channels
    x = [(3, 32, 5), (16, 64, 4), (32, 128, 4), (64, 256, 4), (128, 512, 4)]
    expected = (sum(i * o * k * k + o for i, o, k in x) + 64 * 512 + 256 * 512
                + (512 * 1024 + 1024) + (512 * 1024 + 1024) + (512 + 1))
    assert sum(p.numel() for p in d.parameters()) == expected
    rates = sorted(m.p for m in d.modules() if isinstance(m, nn.Dropout))
    assert rates == [0.2] * 2 + [0.5] * 7  # 0.2 on x and z; 0.5 on 3 + 1 + 3 inputs the released code picks
    slopes = {m.negative_slope for net in (model.generator, model.encoder) for m in net.modules()
              if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1}


@pytest.mark.parametrize("config", ["configs/ali_svhn.yaml", "configs/ali_celeba.yaml"])
def test_ali_svhn_and_celeba_drop_0_2_before_every_discriminator_layer_inputs_included(config):
    d = model_of(config).discriminator
    for branch in (d.x_branch, d.z_branch, d.joint):
        layers = [m for m in branch if isinstance(m, LAYERS)]
        before = [branch[i - 1] for i, m in enumerate(branch) if isinstance(m, LAYERS)]
        assert layers and all(isinstance(m, nn.Dropout) and m.p == 0.2 for m in before)
    assert isinstance(d.x_branch[0], nn.Dropout) and isinstance(d.z_branch[0], nn.Dropout)  # on x and z themselves
    assert all(m.bias is None for m in d.z_branch if isinstance(m, nn.Linear))


def test_toy_layers_before_batch_norm_have_no_bias():
    model = model_of("configs/toy/gan_ring.yaml")
    net = list(model.generator.net)
    for layer, following in zip(net, net[1:], strict=False):
        if isinstance(following, nn.BatchNorm1d):
            assert layer.bias is None
    assert net[-1].bias is not None and math.prod(net[-1].weight.shape) == 400 * 2
