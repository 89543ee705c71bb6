"""The model's configuration: everything needed to rebuild it from a checkpoint."""

from dataclasses import dataclass, field
from typing import Any

from mlff.utils import DTYPE_NAMES


@dataclass
class ModelConfig:
    """Architecture of an energy model.

    Attributes:
        backbone: a key of `mlff.models.BACKBONES`.
        backbone_options: the backbone's own keyword arguments (egnn: hidden, layers, neighbor_norm;
            transformer: hidden, heads, layers; et: hidden, heads, layers, polarization).
        encoding: a key of `mlff.encodings.ENCODINGS`.
        encoding_size: s, the feature size of the distance encoding.
        encoding_options: the encoding's own keyword arguments (spline: n_bins, r_min, r_max, init);
            empty by default, so that the encoding's own defaults apply whichever encoding is named.
        cutoff: Angstrom; pairs beyond it do not interact.
        dtype: the network's dtype, "float32" or "float64" (reference energies are always float64).
    """

    backbone: str = "egnn"
    backbone_options: dict[str, Any] = field(default_factory=lambda: {"hidden": 64, "layers": 4})
    encoding: str = "spline"
    encoding_size: int = 32
    encoding_options: dict[str, Any] = field(default_factory=dict)
    cutoff: float = 5.0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"model.dtype must be one of {list(DTYPE_NAMES)}, got {self.dtype!r}")
        if self.cutoff <= 0:
            raise ValueError(f"model.cutoff must be > 0 Angstrom, got {self.cutoff}")
        if self.encoding_size < 1:
            raise ValueError(f"model.encoding_size must be >= 1, got {self.encoding_size}")
