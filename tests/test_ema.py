"""The moving-average generator: warmed-up weights and the live network's batch-norm statistics.

Averaging batch-norm running statistics from their initial values (variance 1) with the weights' decay keeps a
share decay ** n of them: after a short run the averaged generator normalises its activations by a variance far
above the live one and, in eval mode (sampling, SampleGrid, ImageMetrics), draws flat grey images.
"""
import pytest
import torch

from gan_lightning.models import GAN
from gan_lightning.models.base import ema_with_warmup
from tests.helpers import digits, tiny_trainer


def dcgan(**kwargs) -> GAN:
    return GAN(data_shape=(1, 8, 8), latent_dim=8, architecture="dcgan", width=8, ema_decay=0.999, seed=1, **kwargs)


def per_image_std(images: torch.Tensor) -> float:
    return images.flatten(1).std(dim=1).mean().item()


def test_after_a_short_run_the_averaged_networks_batch_norm_statistics_are_the_live_ones(tmp_path):
    model = dcgan()
    tiny_trainer(tmp_path, limit_train_batches=30).fit(model, digits(batch_size=32))
    live, averaged = dict(model.generator.named_buffers()), dict(model.ema["generator"].module.named_buffers())
    variances = [k for k in live if k.endswith("running_var")]
    assert variances
    for key in live:
        assert torch.equal(averaged[key], live[key]), key


def test_the_averaged_generator_samples_with_the_live_generators_contrast(tmp_path):
    torch.manual_seed(0)
    model = dcgan()
    tiny_trainer(tmp_path, limit_train_batches=60).fit(model, digits(batch_size=32))
    z = model.draw_prior(64, torch.Generator().manual_seed(0))
    ema_std = per_image_std(model.sample(z=z))  # the averaged generator, eval mode
    model.generator.eval()
    with torch.no_grad():
        live_std = per_image_std(model.generator(z))
    assert 0.5 < ema_std / live_std < 2, f"per-image std: averaged {ema_std:.3f}, live {live_std:.3f}"


@pytest.mark.parametrize("decay", [0.5, 0.999])
def test_the_average_warms_up_as_min_decay_and_1_plus_n_over_10_plus_n(decay):
    update = ema_with_warmup(decay)
    averaged, expected = [torch.zeros(3)], torch.zeros(3)
    for n in range(1, 40):
        current = torch.full((3,), float(n))
        update(averaged, [current], torch.tensor(n))
        d = min(decay, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * current
        assert torch.allclose(averaged[0], expected), n
