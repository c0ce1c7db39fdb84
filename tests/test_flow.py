"""RealNVP / Glow: every layer inverts exactly, its log-determinant is the Jacobian's, bits/dim is the density."""
import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Normal

from gan_lightning.data import to_model_range
from gan_lightning.models.flow import RealNVP
from gan_lightning.nets.flow import ActNorm, AffineCoupling, Flow, InvertibleConv1x1, squeeze, unsqueeze
from tests.helpers import digits, tiny_trainer


def tiny_flow(**kwargs) -> RealNVP:
    return RealNVP(**{"data_shape": (1, 8, 8), "levels": 2, "steps_per_level": 2, "hidden": 16, **kwargs})


def perturbed_coupling(channels: int, parity: int) -> AffineCoupling:
    """A coupling layer that is not the identity (the last conv starts at zero)."""
    layer = AffineCoupling(channels, 8, parity)
    with torch.no_grad():
        layer.net[-1].weight.normal_(0, 0.3)
        layer.net[-1].bias.normal_(0, 0.3)
    return layer


def initialised_actnorm(channels: int) -> ActNorm:
    layer = ActNorm(channels)
    layer(torch.randn(16, channels, 4, 4) * 3 + 1)  # training mode: data-dependent init
    return layer


def perturbed_flow(levels: int) -> Flow:
    flow = Flow((1, 4, 4), levels=levels, steps_per_level=2, hidden=8)
    flow(torch.randn(8, 1, 4, 4))  # initialise every ActNorm
    with torch.no_grad():
        for module in flow.modules():
            if isinstance(module, AffineCoupling):
                module.net[-1].weight.normal_(0, 0.3)
                module.net[-1].bias.normal_(0, 0.3)
    return flow


LAYERS = {
    "actnorm": lambda: initialised_actnorm(2),
    "conv1x1": lambda: InvertibleConv1x1(2),
    "coupling_even": lambda: perturbed_coupling(2, 0),
    "coupling_odd": lambda: perturbed_coupling(3, 1),
    "flow_1_level": lambda: perturbed_flow(1),
    "flow_2_levels": lambda: perturbed_flow(2),
}


def input_for(name: str) -> torch.Tensor:
    return torch.randn(1, 1 if name.startswith("flow") else 3 if name == "coupling_odd" else 2, 4, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", LAYERS)
def test_each_layer_inverts_its_forward(name, dtype):
    torch.manual_seed(0)
    layer = LAYERS[name]().to(dtype)
    x = torch.randn(5, *input_for(name).shape[1:], dtype=dtype)
    y, logdet = layer(x)
    assert logdet.shape == (5,) and not torch.allclose(y.flatten(1), x.flatten(1), atol=1e-3)  # non-trivial
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(layer.inverse(y), x, atol=atol)


@pytest.mark.parametrize("name", LAYERS)
def test_log_determinant_is_the_brute_force_jacobians(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().double().eval()
    x = input_for(name).double()
    jac = jacobian(lambda v: layer(v)[0], x).reshape(x.numel(), x.numel())
    expected = torch.linalg.slogdet(jac)[1]
    assert torch.allclose(layer(x)[1], expected.view(1), atol=1e-8), (layer(x)[1], expected)


def test_squeeze_is_a_permutation_of_2x2_blocks():
    x = torch.arange(2 * 3 * 4 * 6.0).view(2, 3, 4, 6)
    y = squeeze(x)
    assert y.shape == (2, 12, 2, 3) and torch.equal(unsqueeze(y), x)
    assert torch.equal(y[0, :4, 0, 0], torch.stack([x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1]]))


def test_actnorm_initialises_from_its_first_training_batch_only():
    x = torch.randn(64, 3, 5, 5) * torch.tensor([2.0, 0.5, 7.0]).view(1, 3, 1, 1) + 4
    layer = ActNorm(3)
    assert not layer.initialized and torch.equal(layer.eval()(x)[0], x)  # eval before init: the identity
    y, _ = layer.train()(x)
    assert layer.initialized
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    layer(x * 10)  # a second batch does not re-initialise
    assert all(torch.equal(v, layer.state_dict()[k]) for k, v in state.items())
    restored = ActNorm(3)
    restored.load_state_dict(state)  # nor does loading a checkpoint
    assert restored.initialized and torch.equal(restored(x * 10)[0], layer(x * 10)[0])


def test_the_flow_validates_its_levels():
    assert Flow((3, 32, 32), levels=3).latent_shape == (192, 4, 4)
    assert Flow((1, 28, 28), levels=2).latent_shape == (16, 7, 7)
    with pytest.raises(ValueError, match="model.levels"):
        Flow((1, 28, 28), levels=3)


def test_bits_per_dim_of_the_identity_flow_is_the_logit_normal_density():
    """With every flow layer the identity (fresh model, eval mode), z = y = logit(v): compare to
    torch.distributions, building p(u) as N(0, 1) pushed through sigmoid and the affine map to u."""
    torch.manual_seed(0)
    model = tiny_flow(logit_alpha=0.05)
    for p in model.flow.parameters():  # 1x1 convs to the identity; ActNorm and couplings already are
        if p.dim() == 2:
            p.data.copy_(torch.eye(len(p)))
    x = to_model_range(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8))
    noise = torch.rand(4, 1, 8, 8)
    u = (((x + 1) * 127.5).round() + noise) / 256
    v = 0.05 + 0.9 * u
    y = torch.log(v) - torch.log1p(-v)
    # log p(u) = log N(y) + log|dy/dv| + log|dv/du| with dy/dv = 1 / (v (1 - v)), dv/du = 0.9
    log_p_u = (Normal(0.0, 1.0).log_prob(y) - torch.log(v * (1 - v)) + math.log(0.9)).flatten(1).sum(1)
    expected = (-log_p_u + 64 * math.log(256)) / (64 * math.log(2))
    with torch.no_grad():
        got = model.eval().bits_per_dim(x, noise)
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.allclose(model.evaluate(x, 0, "val")["val/bits_per_dim"],
                          model.bits_per_dim(x, torch.rand(x.shape, generator=torch.Generator().manual_seed(0))).mean())


def test_training_lowers_bits_per_dim_on_held_out_data(tmp_path):
    torch.manual_seed(0)
    model = tiny_flow()
    data = digits(batch_size=64, on_device=True)
    data.setup()
    x_val = to_model_range(torch.stack([data.splits["val"][i][0] for i in range(64)]))
    before = model.evaluate(x_val, 0, "val")["val/bits_per_dim"]
    assert math.isfinite(float(before)) and before > 0
    tiny_trainer(tmp_path, max_epochs=3, limit_train_batches=None).fit(model, data)
    after = model.evaluate(x_val, 0, "val")["val/bits_per_dim"]
    assert model.flow.levels[0][0][0].initialized  # ActNorm initialised by the first training batch
    assert after < before - 0.5, f"bits/dim {before:.2f} -> {after:.2f}"
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 8, 8) and samples.min() >= -1 and samples.max() <= 1
    assert model.encode(x_val[:3]).shape == (3, 64)
    assert (model.reconstruct(x_val) - x_val).abs().max() < 1 / 255  # each pixel's bin centre


def test_sampling_respects_the_generator_and_the_temperature():
    model = tiny_flow()
    a = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, model.sample(4, generator=torch.Generator().manual_seed(1)))
    x = to_model_range(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8))
    assert torch.allclose(model.sample(z=model.encode(x)), x, atol=1e-4)
    cold = tiny_flow(temperature=0.1)
    cold.load_state_dict(model.state_dict())
    assert cold.sample(4).std() < a.std()


def test_adversarial_options_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="no critic"):
        tiny_flow(n_critic=2)
    with pytest.raises(ValueError, match="model.levels"):
        tiny_flow(data_shape=(1, 6, 6))
