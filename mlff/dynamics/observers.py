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

from mlff.data.reference import (
    HR_BINS,
    HR_MAX_A,
    bond_lengths,
    distance_counts,
    hr_density,
    hr_mae,
    pair_distance_counts,
)
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


def largest_bond_deviation(
    positions_a: np.ndarray,
    bonds: np.ndarray,
    reference_lengths_a: np.ndarray,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
) -> float:
    """The largest |bond length - reference length| of positions [n, 3] over bonds [K, 2], Angstrom
    (bond lengths under minimum image when `pbc` has a periodic axis; cell [3, 3] Angstrom)."""
    lengths = bond_lengths(positions_a, bonds, cell, pbc)
    return float(np.abs(lengths - reference_lengths_a).max(initial=0.0))


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
        cell, pbc: the box (cell [3, 3] Angstrom, pbc [3]) of a periodic system, None for a
            molecule: bonds are then measured under minimum image, so a molecule crossing the box
            face is not a collapse. For a liquid, `bonds` should be the intramolecular bonds
            of the first frame (`mlff.data.reference.molecular_bonds`).
    """

    bonds: np.ndarray
    reference_lengths_a: np.ndarray
    max_deviation_a: float = 0.5
    cell: np.ndarray | None = None
    pbc: np.ndarray | None = None
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
        deviation = largest_bond_deviation(positions_a, self.bonds, self.reference_lengths_a, self.cell, self.pbc)
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

    Given the atomic numbers it also keeps h(r) per element pair (`pair_counts`, "O-H", ...);
    given a cell and pbc with a periodic axis, distances are under minimum image (complete up to
    half the box width: `mlff.data.reference.half_width`, which r_max_a should not exceed).

    Attributes:
        reference_density: [bins] the dataset's h(r) per Angstrom, or None.
        counts: [bins] distance counts so far.
        atomic_numbers: [n] of the system (None: no per-pair counts).
        cell, pbc: the box (cell [3, 3] Angstrom, pbc [3]) of a periodic system, or None.
        pair_counts: element pair -> [bins] counts so far.
    """

    reference_density: np.ndarray | None = None
    r_max_a: float = HR_MAX_A
    bins: int = HR_BINS
    counts: np.ndarray = field(default_factory=lambda: np.zeros(HR_BINS, dtype=np.int64))
    frames_seen: int = 0
    atomic_numbers: np.ndarray | None = None
    cell: np.ndarray | None = None
    pbc: np.ndarray | None = None
    pair_counts: dict[str, np.ndarray] = field(default_factory=dict)

    def observe(self, step: int, time_fs: float, positions_a: np.ndarray) -> None:
        self.frames_seen += 1
        periodic = self.pbc is not None and bool(np.any(self.pbc))
        if self.atomic_numbers is None and not periodic:
            self.counts = self.counts + distance_counts(positions_a, self.r_max_a, self.bins)
            return
        numbers = self.atomic_numbers if self.atomic_numbers is not None else np.ones(len(positions_a), np.int64)
        pairs = pair_distance_counts(numbers, positions_a, self.cell, self.pbc, self.r_max_a, self.bins)
        self.counts = self.counts + sum(pairs.values())
        if self.atomic_numbers is not None:
            for name, counts in pairs.items():
                self.pair_counts[name] = self.pair_counts.get(name, 0) + counts

    def pair_density(self, pair: str) -> np.ndarray:
        """h(r) [bins] per Angstrom of one element pair ("O-O", "O-H": heavier element first)."""
        if pair not in self.pair_counts:
            raise KeyError(f"no {pair} distances observed; pairs: {sorted(self.pair_counts)}")
        return hr_density(self.pair_counts[pair], self.r_max_a)

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
        return {"counts": self.counts, "frames_seen": self.frames_seen, "pair_counts": self.pair_counts}


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


@dataclass
class CollapseObserver(_DataclassState):
    """Keeps the saved frames around each replica's collapse (what `mlff.bench.collapse` examines).

    For every live replica it tracks the largest bond deviation (and which bond) of each saved
    frame and keeps its last `keep` frames (positions, forces, potential energy) in a short ring;
    at the first frame where a bond deviates more than `max_deviation_a` from its reference length
    (or the positions are not finite), the stability observer's criterion, it freezes that
    replica's record: the ring (the last `keep` stable frames) plus the collapse frame. All
    replicas share one bond list, so they must be the same molecule (the stability protocols' case).

    Attributes:
        bonds: [K, 2] bonded atom pairs.
        reference_lengths_a: [K] reference bond lengths, Angstrom.
        max_deviation_a: collapse threshold, Angstrom (MDsim: 0.5).
        keep: stable frames kept before the collapse frame.
        series: replica -> {"times_fs", "deviation_a", "bond"}: each observed frame's time, largest
            |length - reference| (Angstrom, inf when not finite) and the index of that bond.
        recent: replica -> the last `keep` + 1 frames, each {"step", "time_fs", "positions_a" [n, 3],
            "forces_ev_per_a" [n, 3], "energy_ev"}.
        collapses: replica -> {"time_fs", "step", "frames"}: the frozen frames, collapse frame last.
    """

    bonds: np.ndarray
    reference_lengths_a: np.ndarray
    max_deviation_a: float = 0.5
    keep: int = 3
    name: str = "collapse"
    series: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    recent: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    collapses: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bonds = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 2)
        self.reference_lengths_a = np.asarray(self.reference_lengths_a, dtype=np.float64)
        if len(self.bonds) != len(self.reference_lengths_a) or not len(self.bonds):
            raise ValueError(
                f"CollapseObserver needs one reference length per bond and at least one bond, got "
                f"{len(self.bonds)} bonds and {len(self.reference_lengths_a)} lengths"
            )
        if self.keep < 0:
            raise ValueError(f"keep must be >= 0, got {self.keep}")

    def observe(self, frame: Frame) -> None:
        for b, k in enumerate(frame.replicas):
            if k in self.collapses:
                continue
            positions = np.asarray(frame.positions_a[b], dtype=np.float64)
            finite = bool(np.isfinite(positions).all())
            deviations = np.abs(bond_lengths(positions, self.bonds) - self.reference_lengths_a)
            worst = int(np.nanargmax(deviations)) if finite else 0
            deviation = float(deviations[worst]) if finite else float("inf")
            series = self.series.setdefault(k, {"times_fs": [], "deviation_a": [], "bond": []})
            series["times_fs"].append(float(frame.time_fs))
            series["deviation_a"].append(deviation)
            series["bond"].append(worst)
            ring = self.recent.setdefault(k, [])
            ring.append(
                {
                    "step": int(frame.step),
                    "time_fs": float(frame.time_fs),
                    "positions_a": positions.copy(),
                    "forces_ev_per_a": np.asarray(frame.forces_ev_per_a[b], dtype=np.float64).copy(),
                    "energy_ev": float(frame.potential_energy_ev[b]),
                }
            )
            del ring[: -(self.keep + 1)]
            if not finite or deviation > self.max_deviation_a:
                self.collapses[k] = {"time_fs": float(frame.time_fs), "step": int(frame.step), "frames": list(ring)}
                del self.recent[k]

    def summary(self) -> dict[str, Any]:
        return {
            "collapsed_replicas": sorted(self.collapses),
            "collapse_time_ps": {str(k): c["time_fs"] / FS_PER_PS for k, c in sorted(self.collapses.items())},
            "frames_kept": self.keep,
        }
