"""Distance encodings behind one interface (`DistanceEncoding`) and a registry.

Adding an encoding: write the class, add one line to `ENCODINGS`.
"""

from typing import Any

from mlff.encodings.base import DistanceEncoding, cosine_envelope
from mlff.encodings.basis import BesselEncoding, GaussianEncoding, MLPEncoding, RawDistanceEncoding
from mlff.encodings.spline import SplineEncoding, smoothness_loss

ENCODINGS: dict[str, type[DistanceEncoding]] = {
    "spline": SplineEncoding,
    "gaussian": GaussianEncoding,
    "bessel": BesselEncoding,
    "mlp": MLPEncoding,
    "raw": RawDistanceEncoding,
}


def build_encoding(name: str, size: int, cutoff: float, **options: Any) -> DistanceEncoding:
    """Build a registered encoding by name.

    Args:
        name: a key of `ENCODINGS`.
        size: feature size s.
        cutoff: envelope cutoff in Angstrom.
        options: the encoding's own keyword arguments (for the spline: n_bins, r_min, r_max, init).
    """
    if name not in ENCODINGS:
        raise ValueError(f"unknown distance encoding {name!r}; known: {sorted(ENCODINGS)}")
    auto = sorted(key for key, value in options.items() if value == "auto")
    if auto:
        raise ValueError(
            f"encoding options {auto} are 'auto': they are fitted from the training frames when `mlff train` "
            "starts a run; give numbers to build the encoding directly"
        )
    try:
        return ENCODINGS[name](size=size, cutoff=cutoff, **options)
    except TypeError as error:
        raise ValueError(f"bad options for encoding {name!r}: {error}") from None


__all__ = [
    "ENCODINGS",
    "DistanceEncoding",
    "SplineEncoding",
    "GaussianEncoding",
    "BesselEncoding",
    "MLPEncoding",
    "RawDistanceEncoding",
    "build_encoding",
    "cosine_envelope",
    "smoothness_loss",
]
