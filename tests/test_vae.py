"""VAE: the ELBO's parts as the paper writes them, the KL weight reaching the loss, training improving the bound."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from gan_lightning.data import to_model_range
from gan_lightning.losses import gaussian_kl, reconstruction_nll
from gan_lightning.models import VAE
from tests.helpers import digits, tiny_trainer


def tiny_vae(**kwargs) -> VAE:
    return VAE(**{"data_shape": (1, 8, 8), "latent_dim": 4, "width": 32, **kwargs})


def test_closed_form_kl_equals_torch_distributions():
    mu, log_var = torch.randn(5, 3), torch.randn(5, 3)
    q, p = Normal(mu, (0.5 * log_var).exp()), Normal(torch.zeros(3), torch.ones(3))
    assert torch.allclose(gaussian_kl(mu, log_var), kl_divergence(q, p).sum(dim=1), atol=1e-5)
    assert torch.allclose(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))  # q = p


def test_likelihoods_are_the_negative_log_densities():
    x, x_hat = torch.rand(4, 1, 2, 2) * 2 - 1, torch.rand(4, 1, 2, 2) * 1.8 - 0.9
    gaussian = -Normal(x_hat, 0.3).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(reconstruction_nll(x_hat, x, "gaussian", 0.3), gaussian, atol=1e-4)
    t, p = (x + 1) / 2, (x_hat + 1) / 2
    bernoulli = -(t * p.log() + (1 - t) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(reconstruction_nll(x_hat, x, "bernoulli", 1.0), bernoulli, atol=1e-4)


def test_bernoulli_likelihood_is_float32_under_bf16_autocast():
    """CUDA's autocast refuses binary_cross_entropy in bf16 (the VAE under --trainer.precision bf16-mixed
    stopped there on an H100); the term is computed in float32, from the bf16 decoder output, with gradients."""
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    logits = torch.randn(4, 784, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_hat = torch.nn.functional.linear(logits, torch.eye(784)).tanh().view(4, 1, 28, 28)
        assert x_hat.dtype == torch.bfloat16
        nll = reconstruction_nll(x_hat, x, "bernoulli", 1.0)
    assert nll.dtype == torch.float32
    assert torch.allclose(nll, reconstruction_nll(x_hat.detach().float(), x, "bernoulli", 1.0), rtol=1e-6)
    nll.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_the_kl_weight_reaches_the_loss_and_the_gradients():
    """Lightning Bolts' VAE once ignored its KL coefficient; here beta scales the KL term exactly."""
    x, eps = torch.rand(6, 1, 8, 8) * 2 - 1, torch.randn(6, 4)
    torch.manual_seed(0)
    plain = tiny_vae(kl_weight=1.0)
    beta = tiny_vae(kl_weight=4.0)
    beta.load_state_dict(plain.state_dict())
    a, b = plain.negative_elbo(x, eps), beta.negative_elbo(x, eps)
    assert torch.allclose(a["nll"], b["nll"]) and torch.allclose(a["kl"], b["kl"])
    assert torch.allclose(b["loss"], b["nll"] + 4.0 * b["kl"]) and torch.allclose(a["loss"], a["nll"] + a["kl"])
    grads = []
    for model, parts in ((plain, a), (beta, b)):
        parts["loss"].mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.encoder.parameters()]))
    assert not torch.allclose(grads[0], grads[1])  # the weight changes what the encoder learns
    decoder_grads = [torch.cat([p.grad.flatten() for p in m.generator.parameters()]) for m in (plain, beta)]
    assert torch.allclose(decoder_grads[0], decoder_grads[1])  # the KL term does not involve the decoder


def test_training_raises_the_bound_on_held_out_data(tmp_path):
    torch.manual_seed(0)
    model = tiny_vae(likelihood="gaussian", sigma=0.5)
    data = digits(batch_size=64, on_device=True)
    data.setup()
    x_val = to_model_range(torch.stack([data.splits["val"][i][0] for i in range(64)]))
    before = model.evaluate(x_val, 0, "val")["val/loss"]
    tiny_trainer(tmp_path, max_epochs=3, limit_train_batches=None).fit(model, data)
    after = model.evaluate(x_val, 0, "val")["val/loss"]
    assert after < before - 0.1 * abs(before), f"negative ELBO {before:.1f} -> {after:.1f}"
    assert model.sample(3).shape == (3, 1, 8, 8) and model.encode(x_val[:3]).shape == (3, 4)
    assert math.isfinite(float(after))


def test_adversarial_options_are_refused():
    with pytest.raises(ValueError, match="no critic"):
        tiny_vae(n_critic=2)


def test_the_logged_parts_of_the_loss_are_batch_means_taken_when_written(tmp_path):
    """The per-example nll and kl are averaged only in the iterations whose logs are written (every
    log_every_n_steps): each logged row still holds loss = nll + kl_weight * kl, as batch means."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    model = tiny_vae(kl_weight=0.5)
    trainer = tiny_trainer(tmp_path, limit_train_batches=4, log_every_n_steps=2,
                           logger=CSVLogger(tmp_path, name="", version=""))
    trainer.fit(model, digits())
    with open(tmp_path / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/nll")]
    assert [int(float(r["iteration"])) for r in rows] == [2, 4]
    for r in rows:
        assert float(r["train/loss"]) == pytest.approx(float(r["train/nll"]) + 0.5 * float(r["train/kl"]), rel=1e-5)
