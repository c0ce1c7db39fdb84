"""Mode coverage on 2-D Gaussian mixtures: the PacGAN / VEEGAN protocol (Lin et al. 2018; Srivastava et al. 2017).

As PacGAN's ``MetricLogger`` (``synthetic_data_experiments/PacGAN/pacgan/extensions.py``) computes it: draw
2,500 samples and assign each to its nearest mode. A sample is *high quality* if it lies within 3 standard
deviations of that mode (strictly); a mode is *captured* if at least one high-quality sample is assigned to
it. Only the high-quality samples are counted in the histogram q over the modes, and the *reverse KL* is
KL(q || uniform) = log K - H(q), the entropy of coverage PacGAN reports turned into a divergence.
"""
import math

import torch

N_SAMPLES = 2500


def mode_coverage(samples: torch.Tensor, modes: torch.Tensor, std: float) -> dict[str, float]:
    """(N, 2) samples, (K, 2) mode centres -> modes captured, high-quality fraction, reverse KL.

    With no high-quality sample the reverse KL is log K, its value when all mass sits on one mode."""
    distances = torch.cdist(samples.float(), modes.float().to(samples.device))  # (N, K)
    nearest_distance, nearest = distances.min(dim=1)
    high_quality = nearest_distance < 3 * std
    counts = torch.bincount(nearest[high_quality], minlength=len(modes)).double()  # PacGAN's detail_of_coverage
    captured = int((counts > 0).sum())
    if counts.sum() == 0:
        reverse_kl = max_reverse_kl(len(modes))
    else:
        q = counts[counts > 0] / counts.sum()  # 0 log 0 = 0
        reverse_kl = (q * (q * len(modes)).log()).sum().item()
    return {"modes": float(captured), "high_quality": high_quality.double().mean().item(),
            "reverse_kl": reverse_kl}


def max_reverse_kl(n_modes: int) -> float:
    """The reverse KL of a generator that puts everything on one mode: log K."""
    return math.log(n_modes)
