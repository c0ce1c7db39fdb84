import math

import pytest
import torch

from gan_lightning.data.toy import mixture_modes, sample_mixture
from gan_lightning.metrics import mode_coverage


@pytest.mark.parametrize("name", ["toy_ring", "toy_grid"])
def test_samples_of_the_true_mixture_capture_every_mode_with_high_quality(name):
    modes, std = mixture_modes(name)
    samples, _ = sample_mixture(name, 2500, seed=1)
    result = mode_coverage(samples, modes, std)
    assert result["modes"] == len(modes)
    assert result["high_quality"] > 0.98  # a 2-D Gaussian puts 1 - exp(-9/2) = 98.9 % within 3 std
    assert result["reverse_kl"] < 0.02


@pytest.mark.parametrize("name", ["toy_ring", "toy_grid"])
def test_samples_of_one_mode_capture_one_mode_with_reverse_kl_log_k(name):
    modes, std = mixture_modes(name)
    samples = modes[3] + std * torch.randn(2500, 2)
    result = mode_coverage(samples, modes, std)
    assert result["modes"] == 1
    assert result["reverse_kl"] == pytest.approx(math.log(len(modes)))


def test_samples_between_modes_are_low_quality_and_capture_nothing():
    modes, std = mixture_modes("toy_grid")
    samples = torch.full((2500, 2), 1.0)  # halfway between grid modes
    result = mode_coverage(samples, modes, std)
    assert result["high_quality"] == 0 and result["modes"] == 0


def pacgan_metric_logger(samples, means, std, dis_thre=3):
    """PacGAN's MetricLogger.do (synthetic_data_experiments/PacGAN/pacgan/extensions.py), its loops kept."""
    detail_of_coverage = [0] * len(means)
    for point in samples.tolist():
        dis = [math.sqrt(sum((p - m) ** 2 / std ** 2 for p, m in zip(point, mean, strict=True)))
               for mean in means.tolist()]
        j = min(range(len(means)), key=dis.__getitem__)
        if dis[j] < dis_thre:
            detail_of_coverage[j] += 1
    total = sum(detail_of_coverage)
    entropy = -sum(c / total * math.log(c / total) for c in detail_of_coverage if c)
    return {"modes": float(sum(1 for c in detail_of_coverage if c)), "high_quality": total / len(samples),
            "reverse_kl": math.log(len(means)) - entropy}


@pytest.mark.parametrize("name", ["toy_ring", "toy_grid"])
def test_coverage_equals_pacgans_metric_logger_on_a_generator_with_stray_samples(name):
    """Half the samples sit on four modes, half stray 2-6 std away: the strays count in high_quality's
    denominator only, never in the histogram whose entropy gives the reverse KL."""
    modes, std = mixture_modes(name)
    g = torch.Generator().manual_seed(0)
    good = modes[torch.randint(4, (1250,), generator=g)] + std * torch.randn(1250, 2, generator=g)
    stray = modes[torch.randint(len(modes), (1250,), generator=g)]
    angle = 2 * math.pi * torch.rand(1250, generator=g)
    stray = stray + (2 + 4 * torch.rand(1250, 1, generator=g)) * std * torch.stack([angle.cos(), angle.sin()], 1)
    samples = torch.cat([good, stray]).double()
    ours, reference = mode_coverage(samples, modes, std), pacgan_metric_logger(samples, modes, std)
    assert ours["modes"] == reference["modes"]
    assert ours["high_quality"] == pytest.approx(reference["high_quality"], abs=1e-12)
    assert ours["reverse_kl"] == pytest.approx(reference["reverse_kl"], abs=1e-9)


def test_low_quality_samples_do_not_spread_the_histogram():
    """Every high-quality sample sits on mode 0; low-quality ones nearest to mode 1 would halve the reverse KL
    if they were counted."""
    modes, std = mixture_modes("toy_grid")
    samples = torch.cat([modes[0].expand(1000, 2), (modes[1] + torch.tensor([0.0, 5 * std])).expand(1000, 2)])
    result = mode_coverage(samples, modes, std)
    assert result["modes"] == 1 and result["high_quality"] == 0.5
    assert result["reverse_kl"] == pytest.approx(math.log(len(modes)))
