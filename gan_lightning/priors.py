"""Latent priors p(z) for the adversarial autoencoder (Makhzani et al. 2016, arXiv 1511.05644, Sec. 2-4).

The AAE's latent discriminator only ever sees samples, so any distribution that can be sampled is a
prior. Each prior here is a deterministic map of standard normal noise ``eps`` (n, dim) and a mixture
component index ``k`` (n,): the model draws both from its seeded training noise (so a resumed or
distributed run draws the same prior samples), and label-conditioned priors (Sec. 4, Figure 4) pick
``k`` from the example's label instead of at random.

- ``gaussian``:   z = std * eps                               (paper, MNIST: 8-D, std 5)
- ``mixture``:    10 elongated 2-D Gaussians arranged on a circle (Figures 2 and 4)
- ``swiss_roll``: a 2-D swiss roll cut into 10 consecutive segments, one per label (Figure 4)

Shapes and scales follow the paper's figures as its public reimplementations draw them (component std
0.5 along and 0.05 across the radius at distance 1.4; roll radius sqrt(u) * 3 over two turns).
"""
import math
from typing import Literal

import torch

PriorName = Literal["gaussian", "mixture", "swiss_roll"]


class LatentPrior:
    """p(z) as a map of (eps ~ N(0, I) of shape (n, dim), component k of shape (n,)) to z (n, dim)."""

    name: str
    dim: int
    n_components: int = 1   # components a label can select (1: no labelled structure)

    def transform(self, eps: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None, k: torch.Tensor | None = None,
               device=None) -> torch.Tensor:
        """n draws; from component ``k`` (n,) where given (-1: any component), else from the whole prior."""
        device = generator.device if generator is not None else device
        eps = torch.randn(n, self.dim, generator=generator, device=device)
        random_k = torch.randint(self.n_components, (n,), generator=generator, device=device)
        k = random_k if k is None else torch.where(k.to(device) >= 0, k.to(device), random_k)
        return self.transform(eps, k)


class GaussianPrior(LatentPrior):
    name = "gaussian"

    def __init__(self, dim: int, std: float = 1.0):
        self.dim, self.std = dim, std

    def transform(self, eps: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.std * eps


class GaussianMixturePrior(LatentPrior):
    """Component k: N(0, diag(0.5^2, 0.05^2)) shifted 1.4 along x, then rotated by 2 pi k / K."""

    name = "mixture"

    def __init__(self, n_components: int = 10, radius: float = 1.4, std_along: float = 0.5, std_across: float = 0.05):
        self.dim, self.n_components = 2, n_components
        self.radius, self.std = radius, torch.tensor([std_along, std_across])

    def means(self) -> torch.Tensor:
        """(K, 2): the components' centres."""
        angle = 2 * math.pi * torch.arange(self.n_components) / self.n_components
        return self.radius * torch.stack([angle.cos(), angle.sin()], dim=1)

    def transform(self, eps: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        local = eps * self.std.to(eps) + torch.tensor([self.radius, 0.0]).to(eps)   # component 0, on the x axis
        angle = 2 * math.pi * k.to(eps) / self.n_components
        cos, sin = angle.cos(), angle.sin()
        return torch.stack([cos * local[:, 0] - sin * local[:, 1], sin * local[:, 0] + cos * local[:, 1]], dim=1)


class SwissRollPrior(LatentPrior):
    """u ~ U[k/K, (k+1)/K): z = 3 sqrt(u) (cos 4 pi sqrt(u), sin 4 pi sqrt(u)); u from eps through the normal CDF."""

    name = "swiss_roll"

    def __init__(self, n_components: int = 10, scale: float = 3.0, turns: float = 2.0):
        self.dim, self.n_components, self.scale, self.turns = 2, n_components, scale, turns

    def transform(self, eps: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        u = (torch.special.ndtr(eps[:, 0]).clamp(0, 1 - 1e-6) + k.to(eps)) / self.n_components
        r, angle = self.scale * u.sqrt(), 2 * math.pi * self.turns * u.sqrt()
        return torch.stack([r * angle.cos(), r * angle.sin()], dim=1)


def make_prior(name: PriorName, dim: int, std: float = 1.0, n_components: int = 10) -> LatentPrior:
    """The prior called ``name``; the 2-D ones check that the latent space is 2-D."""
    if name == "gaussian":
        return GaussianPrior(dim, std)
    if dim != 2:
        raise ValueError(f"model.prior {name!r} is a 2-D distribution; set model.latent_dim to 2 (got {dim}) "
                         "or use model.prior gaussian")
    if name == "mixture":
        return GaussianMixturePrior(n_components)
    if name == "swiss_roll":
        return SwissRollPrior(n_components)
    raise ValueError(f"unknown model.prior {name!r}; expected one of {PriorName.__args__}")
