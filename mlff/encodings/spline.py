"""Learned positional encoding of distances (Gao et al. 2022).

The range [r_min, r_max] holds n_bins bin centres x_i = r_min + i D. Each
centre carries a learned value h_i and a learned slope g_i (vectors of size s,
2 s n_bins parameters). Between centres h(x) is the cubic Hermite spline

    h(x) = c1 h_i + c2 h_{i+1} + D (c3 g_i + c4 g_{i+1}),   t = (x - x_i) / D,
    c1 = 2t^3 - 3t^2 + 1, c2 = 1 - c1, c3 = t^3 - 2t^2 + t, c4 = t^3 - t^2,

so g is dh/dx per Angstrom and both h and dh/dx are continuous at every
centre. Below r_min (and above r_max) h extends linearly with the end slope:
never clamped, because a flat encoding at short range gives no repulsion.

The smoothness loss is the paper's sum_i ||h_{i+1} - h_i|| / sum_i ||h_i||.
"""

import torch
from torch import nn

from mlff.encodings.base import DistanceEncoding


class SplineEncoding(DistanceEncoding):
    """Cubic Hermite spline through learned values and slopes at bin centres.

    Args:
        size: s, the feature size of each bin value and slope.
        cutoff: envelope cutoff in Angstrom.
        n_bins: number of bin centres (>= 2).
        r_min: first centre in Angstrom.
        r_max: last centre in Angstrom (defaults to the cutoff).
        init: "rbf" starts h as Gaussian radial basis functions sampled at the
            centres (g their exact derivatives), a smooth start the training
            then reshapes; "random" starts from N(0, 1) values and zero slopes.
    """

    def __init__(
        self,
        size: int,
        cutoff: float,
        n_bins: int = 64,
        r_min: float = 0.0,
        r_max: float = -1.0,
        init: str = "rbf",
    ) -> None:
        super().__init__(size, cutoff)
        if r_max <= 0.0:
            r_max = cutoff
        if n_bins < 2:
            raise ValueError(f"spline encoding needs n_bins >= 2, got {n_bins}")
        if not r_max > r_min:
            raise ValueError(f"spline encoding needs r_max > r_min, got [{r_min}, {r_max}]")
        self.n_bins = int(n_bins)
        self.r_min = float(r_min)
        self.r_max = float(r_max)
        self.spacing = (self.r_max - self.r_min) / (self.n_bins - 1)
        centres = torch.linspace(self.r_min, self.r_max, self.n_bins, dtype=torch.float64)
        values, slopes = _initial_values(centres, size, init)
        self.values = nn.Parameter(values.to(torch.get_default_dtype()))
        self.slopes = nn.Parameter(slopes.to(torch.get_default_dtype()))

    def encode(self, distances: torch.Tensor) -> torch.Tensor:
        """h(distances): [E] Angstrom -> [E, size]."""
        scaled = (distances - self.r_min) / self.spacing
        index = torch.clamp(torch.floor(scaled), 0.0, float(self.n_bins - 2)).to(torch.long)
        t = (scaled - index.to(scaled.dtype)).unsqueeze(-1)
        t2 = t * t
        t3 = t2 * t
        c1 = 2.0 * t3 - 3.0 * t2 + 1.0
        c2 = 1.0 - c1
        c3 = t3 - 2.0 * t2 + t
        c4 = t3 - t2
        h_left = self.values[index]
        h_right = self.values[index + 1]
        g_left = self.slopes[index]
        g_right = self.slopes[index + 1]
        inside = c1 * h_left + c2 * h_right + self.spacing * (c3 * g_left + c4 * g_right)
        below = self.values[0] + (distances - self.r_min).unsqueeze(-1) * self.slopes[0]
        above = self.values[-1] + (distances - self.r_max).unsqueeze(-1) * self.slopes[-1]
        result = torch.where((distances < self.r_min).unsqueeze(-1), below, inside)
        return torch.where((distances > self.r_max).unsqueeze(-1), above, result)

    def regularization(self) -> torch.Tensor:
        """Smoothness loss sum_i ||h_{i+1} - h_i|| / sum_i ||h_i|| (dimensionless)."""
        return smoothness_loss(self.values)


def smoothness_loss(values: torch.Tensor) -> torch.Tensor:
    """Gao et al.'s smoothness loss of bin values [n_bins, s]."""
    differences = torch.linalg.vector_norm(values[1:] - values[:-1], dim=-1).sum()
    return differences / torch.linalg.vector_norm(values, dim=-1).sum()


def _initial_values(centres: torch.Tensor, size: int, init: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial h [n_bins, size] and g [n_bins, size] at the centres (float64)."""
    if init == "random":
        generator = torch.Generator().manual_seed(0)
        values = torch.randn(centres.numel(), size, generator=generator, dtype=torch.float64)
        return values, torch.zeros_like(values)
    if init == "rbf":
        lo, hi = float(centres[0]), float(centres[-1])
        means = torch.linspace(lo, hi, size, dtype=torch.float64)
        width = (hi - lo) / max(size - 1, 1) if size > 1 else (hi - lo)
        gamma = 1.0 / (2.0 * width * width)
        diff = centres.unsqueeze(-1) - means
        values = torch.exp(-gamma * diff * diff)
        slopes = -2.0 * gamma * diff * values
        return values, slopes
    raise ValueError(f"unknown spline init {init!r}: expected 'rbf' or 'random'")


__all__ = ["SplineEncoding", "smoothness_loss"]
