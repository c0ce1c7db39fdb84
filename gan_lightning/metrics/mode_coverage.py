"""Mode coverage on 2-D Gaussian mixtures: the PacGAN / VEEGAN protocol (Lin et al. 2018; Srivastava et al. 2017).

Draw 2,500 samples. A sample is *high quality* if it lies within 3 standard deviations of its
nearest mode; a mode is *captured* if it is the nearest mode of at least one high-quality sample;
the *reverse KL* is KL(q || uniform) between the histogram q of all samples' nearest modes and the
uniform distribution over the modes.
"""
import math

import torch

N_SAMPLES = 2500


def mode_coverage(samples: torch.Tensor, modes: torch.Tensor, std: float) -> dict[str, float]:
    """(N, 2) samples, (K, 2) mode centres -> modes captured, high-quality fraction, reverse KL."""
    distances = torch.cdist(samples.float(), modes.float().to(samples.device))  # (N, K)
    nearest_distance, nearest = distances.min(dim=1)
    high_quality = nearest_distance <= 3 * std
    captured = torch.unique(nearest[high_quality]).numel()
    q = torch.bincount(nearest, minlength=len(modes)).double() / len(samples)
    q = q[q > 0]  # 0 log 0 = 0
    reverse_kl = (q * (q * len(modes)).log()).sum().item()
    return {"modes": float(captured), "high_quality": high_quality.double().mean().item(),
            "reverse_kl": reverse_kl}


def max_reverse_kl(n_modes: int) -> float:
    """The reverse KL of a generator that puts everything on one mode: log K."""
    return math.log(n_modes)
