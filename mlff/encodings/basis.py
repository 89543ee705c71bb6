"""Fixed and MLP distance encodings: the baselines of the paper's ablation."""

import math

import torch
from torch import nn

from mlff.encodings.base import DistanceEncoding


class GaussianEncoding(DistanceEncoding):
    """Gaussian radial basis: exp(-(r - mu_k)^2 / (2 w^2)), mu_k evenly on [0, cutoff].

    Args:
        size: number of Gaussians.
        cutoff: envelope cutoff and last centre, Angstrom.
    """

    def __init__(self, size: int, cutoff: float) -> None:
        super().__init__(size, cutoff)
        width = cutoff / max(size - 1, 1)
        self.gamma = 1.0 / (2.0 * width * width)

    def encode(self, distances: torch.Tensor) -> torch.Tensor:
        # Built in the distances' dtype on each call: a float32 buffer cast to
        # float64 later would keep float32 rounding.
        means = torch.linspace(0.0, self.cutoff, self.size, dtype=distances.dtype, device=distances.device)
        diff = distances.unsqueeze(-1) - means
        return torch.exp(-self.gamma * diff * diff)


class BesselEncoding(DistanceEncoding):
    """Radial Bessel basis sqrt(2 / r_c) sin(k pi r / r_c) / r, k = 1..size (DimeNet)."""

    def __init__(self, size: int, cutoff: float) -> None:
        super().__init__(size, cutoff)
        self.prefactor = math.sqrt(2.0 / cutoff)

    def encode(self, distances: torch.Tensor) -> torch.Tensor:
        multiples = torch.arange(1, self.size + 1, dtype=distances.dtype, device=distances.device)
        r = distances.unsqueeze(-1)
        return self.prefactor * torch.sin(multiples * (math.pi / self.cutoff) * r) / r


class MLPEncoding(DistanceEncoding):
    """The raw distance (Angstrom) through a 2-layer MLP with SiLU."""

    def __init__(self, size: int, cutoff: float) -> None:
        super().__init__(size, cutoff)
        self.net = nn.Sequential(nn.Linear(1, size), nn.SiLU(), nn.Linear(size, size))

    def encode(self, distances: torch.Tensor) -> torch.Tensor:
        return self.net(distances.unsqueeze(-1))
