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
