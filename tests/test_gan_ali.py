"""GAN and ALI on the shared base: player isolation, Su's regulariser, penalties, the Gaussian encoder."""
import math
import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch

import gan_lightning.models.players as players_module
from gan_lightning.data import GANDataModule
from gan_lightning.errors import ConfigError
from tests.helpers import digits, tiny_ali, tiny_bigan, tiny_gan, tiny_trainer
from tests.test_bigan import Snapshots, changed, same_grads


@pytest.mark.parametrize("make,others", [(tiny_gan, ("generator",)), (tiny_ali, ("generator", "encoder")),
                                         (lambda: tiny_gan(loss="wasserstein", gradient_penalty=10.0), ("generator",)),
                                         (lambda: tiny_gan(r1_penalty=1.0, loss="hinge"), ("generator",))])
def test_each_player_step_leaves_the_other_players_unchanged(tmp_path, make, others):
    spy = Snapshots()
    tiny_trainer(tmp_path, callbacks=[spy], limit_train_batches=2).fit(make(), digits())
    for start in (0, 4):
        at_start, before_d, before_g, at_end = spy.events[start: start + 4]
        assert changed(before_d[1], before_g[1], "discriminator")
        assert not any(changed(before_d[1], before_g[1], p) for p in others)
        assert all(changed(before_g[1], at_end[1], p) for p in others)
        assert not changed(before_g[1], at_end[1], "discriminator")


@pytest.mark.parametrize("make", [tiny_gan, lambda **kw: tiny_ali(update="alternating", **kw)])
def test_su_regulariser_is_zero_on_the_first_generator_step_and_pulls_back_on_the_second(tmp_path, monkeypatch,
                                                                                        make):
    values = []
    original = players_module.su_regulariser
    monkeypatch.setattr(players_module, "su_regulariser",
                        lambda x, x_old: values.append(original(x, x_old)) or values[-1])
    spy = Snapshots()
    model = make(su_lambda=5.0, generator_steps=2)
    tiny_trainer(tmp_path, callbacks=[spy], limit_train_batches=2).fit(model, digits())
    assert len(values) == 4  # two G steps in each of two iterations
    assert values[0].item() == 0 and values[2].item() == 0
    assert values[1].item() > 0 and values[3].item() > 0
    players = [e[0] for e in spy.events if e[0] not in ("batch_start", "batch_end")]
    assert players.count("discriminator") == 2 and len(players) == 6  # 1 D step and 2 G steps per iteration


def test_gradient_penalties_remove_batch_norm_from_the_critic():
    """WGAN-GP and R1 penalise each example's gradient, which batch norm would mix with the others'."""
    has_bn = lambda m: any(isinstance(layer, torch.nn.BatchNorm1d) for layer in m.discriminator.modules())  # noqa: E731
    assert has_bn(tiny_gan()) and not has_bn(tiny_gan(loss="wasserstein", gradient_penalty=10.0))
    assert not has_bn(tiny_gan(r1_penalty=1.0))


def test_wasserstein_without_a_gradient_penalty_is_refused_and_wgan_gp_defaults_to_the_papers_adam():
    with pytest.raises(ConfigError, match="model.gradient_penalty 10"):
        tiny_gan(loss="wasserstein")
    trainer = tiny_trainer(Path(tempfile.mkdtemp()), limit_train_batches=1)
    model = tiny_gan(loss="wasserstein", gradient_penalty=10.0, n_critic=5)
    trainer.fit(model, digits())
    for optimizer in trainer.optimizers:  # Gulrajani et al., Algorithm 1: alpha 1e-4, beta1 0, beta2 0.9
        assert optimizer.param_groups[0]["lr"] == 1e-4 and optimizer.param_groups[0]["betas"] == (0.0, 0.9)
    assert tiny_gan().default_optimizer.keywords["betas"] == (0.5, 0.999)  # DCGAN's, without a penalty


def test_the_wgan_gp_config_runs_the_papers_algorithm():
    import yaml

    config = Path(__file__).resolve().parents[1] / "configs/wgan_gp.yaml"
    model = yaml.safe_load(config.read_text())["model"]["init_args"]
    assert (model["loss"], model["gradient_penalty"], model["n_critic"]) == ("wasserstein", 10.0, 5)
    for player in ("optimizer_d", "optimizer_g"):
        assert model[player]["init_args"]["lr"] == 1e-4 and model[player]["init_args"]["betas"] == [0.0, 0.9]


def test_gaussian_encoder_samples_in_training_and_encodes_the_mean():
    model = tiny_ali(encoder="gaussian")
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    mu = model.encode(x)
    assert mu.shape == (6, 4) and torch.equal(mu, model.encode(x))  # deterministic: the posterior mean
    model.noise = torch.Generator().manual_seed(0)
    z1, z2 = model.infer(x), model.infer(x)
    assert not torch.equal(z1, z2)  # reparameterised draws differ
    model.encoder.eval()
    h = model.encoder(x)
    model.noise = torch.Generator().manual_seed(1)
    eps = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model.infer(x), h[:, :4] + h[:, 4:].exp() * eps)  # z = mu + sigma * eps


@pytest.mark.parametrize("encoder", ["gaussian", "deterministic"])
def test_su_full_encoder_term_is_minus_log_q_of_z_given_g_of_z_and_leaves_batch_norm_statistics(encoder):
    model = tiny_ali(encoder=encoder)
    z, x_fake = torch.randn(6, 4), torch.rand(6, 1, 8, 8) * 2 - 1
    statistics = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    nll = model.latent_nll(z, x_fake)
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in statistics.items())
    h = model.encoder(x_fake)  # training mode, like latent_nll: the batch's statistics
    mu, sigma = (h[:, :4], h[:, 4:].exp()) if encoder == "gaussian" else (h, torch.ones_like(h))
    log_density = torch.distributions.Normal(mu, sigma).log_prob(z).sum(1).mean()
    assert nll.item() == pytest.approx(-log_density.item() - 4 * 0.5 * math.log(2 * math.pi), rel=1e-5)


def test_su_full_adds_to_the_encoder_gradient_only(tmp_path):
    """Su's eq. 40 differs from eq. 41 by the encoder's term: on the same batch and noise, the G/E step's
    generator gradients are equal and its encoder gradients are not."""
    grads = {}
    for loss in ("su", "su_full"):
        L.seed_everything(0)
        spy = Snapshots()
        tiny_trainer(tmp_path / loss, callbacks=[spy], limit_train_batches=1).fit(tiny_ali(loss=loss), digits())
        grads[loss] = next(e[2] for e in spy.events if e[0] == "generator_encoder")
    assert same_grads(grads["su"], grads["su_full"], ("generator.",))
    assert not same_grads(grads["su"], grads["su_full"], ("encoder.",))


def test_bigan_is_ali_with_a_deterministic_encoder_and_its_own_defaults():
    from gan_lightning.models import ALI, BiGAN

    bigan = BiGAN(data_shape=(1, 8, 8), width=16)
    assert isinstance(bigan, ALI) and not bigan.gaussian_encoder and bigan.prior == "uniform"
    assert bigan.latent_dim == 50 and bigan.encoder(torch.zeros(2, 1, 8, 8)).shape == (2, 50)
    opt_d, _ = bigan.configure_optimizers()[0]
    assert opt_d.param_groups[0]["lr"] == 2e-4 and opt_d.param_groups[0]["weight_decay"] == 2.5e-5


def test_squashed_bigan_encoder_stays_in_the_uniform_support_and_probes_the_pre_squash_activations(tmp_path):
    from gan_lightning.callbacks.probes import model_probe_scores
    from gan_lightning.errors import ConfigError

    bigan = tiny_bigan(squash_encoder=True, seed=0)
    x = torch.randn(64, 1, 8, 8) * 3
    a = bigan.features(x)
    z = bigan.encode(x)
    assert torch.allclose(z, 2 * torch.sigmoid(a) - 1) and z.abs().max() < 1
    assert not torch.allclose(a, z, atol=1e-3)  # the features are not the squashed codes
    bigan.eval()
    assert torch.allclose(bigan.infer(x), z)  # training sees the squashed codes too (in eval mode, the same BN path)
    plain = tiny_bigan(seed=0)
    assert torch.allclose(plain.encode(x), plain.features(x))

    # The probe's 1-NN runs on the pre-squash features: an encoder a = 8 x has pixels' neighbours, and so
    # pixels' accuracy, which its nearly binary codes 2 sigmoid(8 x) - 1 do not.
    dm = digits(batch_size=32)
    scaled = tiny_bigan(squash_encoder=True, latent_dim=64, seed=0)
    scaled.encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64, bias=False))
    torch.nn.init.eye_(scaled.encoder[1].weight)
    scaled.encoder[1].weight.data *= 8
    scores = model_probe_scores(scaled, dm, n_train=500, n_test=300, linear=False, penultimate=False)
    assert scores["probe_1nn"] == scores["probe_1nn_pixels"]

    for bad in ({"prior": "gaussian"}, {"encoder": "gaussian"}):
        with pytest.raises(ConfigError, match="squash_encoder"):
            tiny_bigan(squash_encoder=True, **bad)


@pytest.mark.parametrize("make", [tiny_gan, tiny_ali])
def test_toy_models_train_and_report_mode_coverage(tmp_path, make):
    from gan_lightning.callbacks import ModeCoverage

    coverage = ModeCoverage(n_samples=500)
    model = make(architecture="toy", width=40, data_shape=(2,))
    dm = GANDataModule("toy_ring", batch_size=100, on_device=True)
    trainer = tiny_trainer(tmp_path, callbacks=[coverage], limit_train_batches=5, limit_val_batches=1)
    trainer.fit(model, dm)
    assert set(coverage.last) == {"modes", "high_quality", "reverse_kl"}
    assert 0 <= coverage.last["modes"] <= 8 and 0 <= coverage.last["high_quality"] <= 1
    assert list((tmp_path / "samples").glob("toy_it*.png"))
