"""Fixed, MLP and raw-distance encodings: the baselines of the paper's ablation."""

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


class RawDistanceEncoding(DistanceEncoding):
    """The distance itself, in Angstrom, as a single feature: the paper's baseline rows.

    Features are [E, 1], so `size` must be 1 (`model.encoding_size=1`); every backbone reads the
    encoding through a linear layer of input size s. Unlike the other encodings the feature is
    not multiplied by the cutoff envelope: r env(r) peaks at 0.416 r_c and falls after it, so two
    distances would share each feature value, which is not the baseline the paper describes.
    Energies and forces stay continuous at the cutoff all the same, because every backbone also
    multiplies its messages or attention weights by the envelope (the cutoff-scan tests check it).
    """

    def __init__(self, size: int, cutoff: float) -> None:
        super().__init__(size, cutoff)
        if size != 1:
            raise ValueError(f"the raw distance encoding has size 1, got size {size}: set model.encoding_size=1")

    def encode(self, distances: torch.Tensor) -> torch.Tensor:
        return distances.unsqueeze(-1)

    def with_envelope(self, distances: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        """The distances [E] (Angstrom) as features [E, 1], no envelope (see the class docstring)."""
        return self.encode(distances)
