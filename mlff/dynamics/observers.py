"""Observers: each sees the MD frames, keeps its own measures and reports them.

Stability follows MDsim (Fu et al. 2022): a replica has collapsed at the first
saved frame where any bond deviates more than `max_deviation_a` from its
reference length.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mlff.data.reference import bond_lengths


class Observer(Protocol):
    """Sees each saved MD frame; `summary()` gives its measures as a JSON-able dict."""

    def observe(self, step: int, time_fs: float, positions_a: np.ndarray) -> None: ...

    def summary(self) -> dict[str, Any]: ...


@dataclass
class StabilityObserver:
    """Bond-length deviation of one trajectory (MDsim's stability criterion).

    Attributes:
        bonds: [K, 2] bonded atom pairs.
        reference_lengths_a: [K] reference bond lengths, Angstrom.
        max_deviation_a: collapse threshold, Angstrom (MDsim: 0.5).
    """

    bonds: np.ndarray
    reference_lengths_a: np.ndarray
    max_deviation_a: float = 0.5
    collapsed_at_fs: float | None = None
    last_stable_fs: float = 0.0
    largest_deviation_a: float = 0.0
    frames_seen: int = field(default=0)

    def observe(self, step: int, time_fs: float, positions_a: np.ndarray) -> None:
        self.frames_seen += 1
        if self.collapsed_at_fs is not None or not len(self.bonds):
            return
        deviation = float(np.abs(bond_lengths(positions_a, self.bonds) - self.reference_lengths_a).max())
        self.largest_deviation_a = max(self.largest_deviation_a, deviation)
        if deviation > self.max_deviation_a:
            self.collapsed_at_fs = time_fs
        else:
            self.last_stable_fs = time_fs

    @property
    def collapsed(self) -> bool:
        return self.collapsed_at_fs is not None

    def summary(self) -> dict[str, Any]:
        return {
            "collapsed": self.collapsed,
            "stable_time_ps": self.last_stable_fs / 1000.0,
            "largest_bond_deviation_a": self.largest_deviation_a,
            "bonds": int(len(self.bonds)),
            "frames_observed": self.frames_seen,
        }
