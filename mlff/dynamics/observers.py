"""Observers: they see a run's saved MD states, keep their own measures and report them.

Two kinds. An `Observer` (what `run_md(observers=[...])` takes) sees every saved state of the
whole run as a `Frame`: for each live replica its positions [n, 3] Angstrom, forces [n, 3]
eV/Angstrom and potential energy (eV), with kinetic energy and temperature, and with a committee
potential the per-atom force spread [n] eV/Angstrom (`Frame.force_spread_ev_per_a`, None
otherwise); `ForceObserver`, `SpreadObserver` and `mlff.dynamics.selection.SelectionObserver` are
such observers. A `ReplicaObserver` sees one replica's positions; the runner keeps one stability and one
h(r) observer per replica and stops a replica when its stability observer says it collapsed.

Stability follows MDsim (Fu et al. 2022, "Forces are not Enough"): a replica has collapsed at
the first saved frame where any bond deviates more than `max_deviation_a` from its reference
length (or its positions are no longer finite); its stable time is (collapse frame - 1) times
the frame interval. h(r) is the distribution of all interatomic distances over the frames
before collapse (`mlff.data.reference.distance_counts`), compared with the dataset's.
"""

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from mlff.data.reference import HR_BINS, HR_MAX_A, bond_lengths, distance_counts, hr_density, hr_mae
from mlff.dynamics.frame import Frame
from mlff.units import FS_PER_PS


class Observer(Protocol):
    """Sees each saved state of a run (every live replica, `Frame`: positions, forces, energies).

    `name` keys its entry in the run's summary and checkpoint; `summary()` gives its measures as
    a JSON-able dict; `state_dict()` / `load_state_dict()` carry it across a resumed run. It sees
    a frame before the runner stops the replicas that collapsed at it.
    """

    name: str

    def observe(self, frame: Frame) -> None: ...

    def summary(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, saved: dict[str, Any]) -> None: ...


class ReplicaObserver(Protocol):
    """Sees each saved frame of one replica (its positions [n, 3] Angstrom); otherwise as `Observer`."""

    def observe(self, step: int, time_fs: float, positions_a: np.ndarray) -> None: ...

    def summary(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, saved: dict[str, Any]) -> None: ...


def largest_bond_deviation(positions_a: np.ndarray, bonds: np.ndarray, reference_lengths_a: np.ndarray) -> float:
    """The largest |bond length - reference length| of positions [n, 3] over bonds [K, 2], Angstrom."""
    return float(np.abs(bond_lengths(positions_a, bonds) - reference_lengths_a).max(initial=0.0))


class _DataclassState:
    """state_dict / load_state_dict of a dataclass observer: its fields."""

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        for name, value in saved.items():
            setattr(self, name, value)


@dataclass
class StabilityObserver(_DataclassState):
    """Bond-length deviation of one trajectory (MDsim's stability criterion).

    Attributes:
        bonds: [K, 2] bonded atom pairs.
        reference_lengths_a: [K] reference bond lengths, Angstrom.
        max_deviation_a: collapse threshold, Angstrom (MDsim: 0.5).
        collapsed_at_fs: time of the collapse frame, fs (None while stable).
        last_stable_fs: time of the last frame before collapse (the stable time), fs.
        largest_deviation_a: the largest deviation seen before collapse, Angstrom.
        times_fs, deviations_a: every observed frame's time and largest deviation (for plots).
    """

    bonds: np.ndarray
    reference_lengths_a: np.ndarray
    max_deviation_a: float = 0.5
    collapsed_at_fs: float | None = None
    last_stable_fs: float = 0.0
    largest_deviation_a: float = 0.0
    frames_seen: int = 0
    times_fs: list[float] = field(default_factory=list)
    deviations_a: list[float] = field(default_factory=list)

    def observe(self, step: int, time_fs: float, positions_a: np.ndarray) -> None:
        if self.collapsed_at_fs is not None:
            return
        self.frames_seen += 1
        finite = bool(np.isfinite(positions_a).all())
        deviation = largest_bond_deviation(positions_a, self.bonds, self.reference_lengths_a)
        self.times_fs.append(float(time_fs))
        self.deviations_a.append(deviation if finite else float("inf"))
        if not finite or deviation > self.max_deviation_a:
            self.collapsed_at_fs = float(time_fs)
            return
        self.largest_deviation_a = max(self.largest_deviation_a, deviation)
        self.last_stable_fs = float(time_fs)

    @property
    def collapsed(self) -> bool:
        return self.collapsed_at_fs is not None

    def summary(self) -> dict[str, Any]:
        return {
            "collapsed": self.collapsed,
            "stable_time_ps": self.last_stable_fs / FS_PER_PS,
            "collapse_time_ps": None if self.collapsed_at_fs is None else self.collapsed_at_fs / FS_PER_PS,
            "largest_bond_deviation_a": self.largest_deviation_a,
            "bonds": int(len(self.bonds)),
            "frames_observed": self.frames_seen,
        }


@dataclass
class RDFObserver(_DataclassState):
    """h(r) of one trajectory: all interatomic distances of the observed frames, 500 bins on
    (0, 10] Angstrom, density-normalised; its MAE against a reference h(r) when one is given.

    Attributes:
        reference_density: [bins] the dataset's h(r) per Angstrom, or None.
        counts: [bins] distance counts so far.
    """

    reference_density: np.ndarray | None = None
    r_max_a: float = HR_MAX_A
    bins: int = HR_BINS
    counts: np.ndarray = field(default_factory=lambda: np.zeros(HR_BINS, dtype=np.int64))
    frames_seen: int = 0

    def observe(self, step: int, time_fs: float, positions_a: np.ndarray) -> None:
        self.frames_seen += 1
        self.counts = self.counts + distance_counts(positions_a, self.r_max_a, self.bins)

    @property
    def density(self) -> np.ndarray:
        """h(r) [bins] per Angstrom."""
        return hr_density(self.counts, self.r_max_a)

    @property
    def bin_centres_a(self) -> np.ndarray:
        width = self.r_max_a / self.bins
        return (np.arange(self.bins) + 0.5) * width

    def summary(self) -> dict[str, Any]:
        mae = None
        if self.reference_density is not None and self.frames_seen:
            mae = hr_mae(self.density, self.reference_density, self.r_max_a)
        return {"hr_mae": mae, "hr_frames": self.frames_seen}

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "frames_seen": self.frames_seen}


@dataclass
class ForceObserver(_DataclassState):
    """The largest atomic force and the potential-energy range of each replica over a run.

    A replica's forces growing without bound or its energy falling far below the start are the
    first signs of a hole in the potential, often before any bond breaks.

    Attributes:
        largest_force_ev_per_a: replica index -> largest |F_i| seen, eV/Angstrom.
        energy_range_ev: replica index -> [lowest, highest] potential energy seen, eV.
        frames_seen: saved states observed.
    """

    name: str = "forces"
    largest_force_ev_per_a: dict[int, float] = field(default_factory=dict)
    energy_range_ev: dict[int, list[float]] = field(default_factory=dict)
    frames_seen: int = 0

    def observe(self, frame: Frame) -> None:
        self.frames_seen += 1
        for b, k in enumerate(frame.replicas):
            forces = frame.forces_ev_per_a[b]
            if not np.isfinite(forces).all():
                continue
            largest = float(np.linalg.norm(forces, axis=-1).max(initial=0.0))
            self.largest_force_ev_per_a[k] = max(self.largest_force_ev_per_a.get(k, 0.0), largest)
            energy = float(frame.potential_energy_ev[b])
            low, high = self.energy_range_ev.get(k, [energy, energy])
            self.energy_range_ev[k] = [min(low, energy), max(high, energy)]

    def summary(self) -> dict[str, Any]:
        return {
            "largest_force_ev_per_a": {str(k): v for k, v in sorted(self.largest_force_ev_per_a.items())},
            "energy_range_ev": {str(k): v for k, v in sorted(self.energy_range_ev.items())},
            "frames": self.frames_seen,
        }


@dataclass
class SpreadObserver(_DataclassState):
    """The largest committee force spread of each saved frame (over the live replicas' atoms).

    Sees nothing when the potential is not a committee (`Frame.force_spread_ev_per_a` is None).

    Attributes:
        times_fs, largest_ev_per_a: each saved frame's time and largest per-atom spread, eV/Angstrom.
        per_replica_ev_per_a: replica index -> largest spread seen.
    """

    name: str = "force_spread"
    times_fs: list[float] = field(default_factory=list)
    largest_ev_per_a: list[float] = field(default_factory=list)
    per_replica_ev_per_a: dict[int, float] = field(default_factory=dict)

    def observe(self, frame: Frame) -> None:
        if frame.force_spread_ev_per_a is None:
            return
        largest = float("nan")
        for k, spread in zip(frame.replicas, frame.force_spread_ev_per_a):
            if spread.size == 0 or not np.isfinite(spread).all():
                continue
            value = float(spread.max())
            self.per_replica_ev_per_a[k] = max(self.per_replica_ev_per_a.get(k, 0.0), value)
            largest = value if not largest >= value else largest
        self.times_fs.append(float(frame.time_fs))
        self.largest_ev_per_a.append(largest)

    def summary(self) -> dict[str, Any]:
        values = np.array(self.largest_ev_per_a, dtype=np.float64)
        finite = values[np.isfinite(values)]
        return {
            "committee": bool(self.times_fs),
            "frames": len(self.times_fs),
            "largest_ev_per_a": float(finite.max()) if finite.size else None,
            "median_of_frame_largest_ev_per_a": float(np.median(finite)) if finite.size else None,
            "per_replica_largest_ev_per_a": {str(k): v for k, v in sorted(self.per_replica_ev_per_a.items())},
            "times_fs": list(self.times_fs),
            "largest_per_frame_ev_per_a": [value if np.isfinite(value) else None for value in self.largest_ev_per_a],
        }
