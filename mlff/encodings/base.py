"""The distance-encoding seam: distances [E] in Angstrom -> features [E, size].

Every encoding is multiplied by the same smooth cosine cutoff envelope, so a
pair's features and their derivative go to zero as the pair leaves the cutoff.
"""

import math

import torch
from torch import nn


def cosine_envelope(distances: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Smooth cosine cutoff 0.5 (cos(pi r / r_c) + 1) for r < r_c, else 0.

    Args:
        distances: [E] pair distances in Angstrom.
        cutoff: r_c in Angstrom.

    Returns:
        [E] envelope values in [0, 1]; value and first derivative vanish at r_c.
    """
    inside = distances < cutoff
    value = 0.5 * (torch.cos(distances * (math.pi / cutoff)) + 1.0)
    return torch.where(inside, value, torch.zeros_like(value))


class DistanceEncoding(nn.Module):
    """Base class of every distance encoding.

    Subclasses implement `encode` (raw features, no envelope); `forward` applies
    the shared cosine envelope. `regularization` returns the encoding's own
    loss term (zero unless the encoding defines one, like the spline's
    smoothness loss).
    """

    size: int
    cutoff: float

    def __init__(self, size: int, cutoff: float) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"encoding size must be >= 1, got {size}")
        if cutoff <= 0.0:
            raise ValueError(f"cutoff must be > 0 Angstrom, got {cutoff}")
        self.size = int(size)
        self.cutoff = float(cutoff)

    def encode(self, distances: torch.Tensor) -> torch.Tensor:
        """Raw features [E, size] of distances [E] in Angstrom (no envelope)."""
        raise NotImplementedError

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """Features [E, size] of distances [E] (Angstrom), times the cutoff envelope."""
        return self.with_envelope(distances, cosine_envelope(distances, self.cutoff))

    def with_envelope(self, distances: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        """`forward` given the envelope [E] of these distances already computed (the energy model
        needs it for the backbone too: computing it once saves a cosine per edge and call)."""
        return self.encode(distances) * envelope.unsqueeze(-1)

    def regularization(self) -> torch.Tensor:
        """The encoding's own regularisation loss (dimensionless scalar)."""
        return torch.zeros((), device=self._any_device())

    def _any_device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")
