"""The AAE's latent discriminator D_z: an MLP on codes (Makhzani et al. 2016: two layers of 1000 ReLU units)."""
import torch
from torch import nn


class LatentDiscriminator(nn.Module):
    """D(z) or D(z, c) for a conditioning vector c (a label's one-hot): (B, Z) [, (B, C)] -> (B,) logits."""

    def __init__(self, in_dim: int, hidden_dim: int = 1000, n_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden_dim, 1))

    def forward(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        h = z if condition is None else torch.cat([z, condition], dim=1)
        return self.net(h).squeeze(1)
