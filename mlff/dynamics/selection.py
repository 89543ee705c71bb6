"""Selection during MD: the saved frames worth labelling, for active learning (an `Observer`).

A live replica's saved frame becomes a candidate when
- `spread`: its largest committee force spread (`Frame.force_spread_ev_per_a`) reaches
  `spread_threshold_ev_per_a`; the default (`SelectionObserver.for_run`) is the committee file's
  `committee.spread_threshold_ev_per_a`, the 99th percentile over its training frames of each
  frame's largest per-atom spread (`mlff.export.committee`), so about 1 training frame in 100
  would pass; no threshold (or no committee): this criterion is off;
- `bond_deviation`: a bond deviates from its reference length by more than `bond_deviation_a`
  (default 0.3 A, 0.6 of the 0.5 A collapse limit; the stability observer's bonds and lengths);
- `spread_ceiling_factor` (DP-GEN's upper trust level; default off): a frame whose largest spread
  reaches factor x the threshold is no `spread` or `bond_deviation` candidate (counted in
  `over_ceiling`): the committee disagrees so much there that the geometry is most likely already
  a consequence of wrong forces, and labels of such frames (forces of several eV/A) dominate a
  squared force loss and pull the fit away from the frames that matter;
- `before_collapse`: it is one of the last `before_collapse` (default 2) saved frames of a replica
  before the frame where it collapses (a bond deviates more than `collapse_deviation_a`, or the
  positions are no longer finite); the collapsed frame itself is not kept.

Each candidate has a score: spread / threshold, deviation / bond_deviation_a, or 1000 (+ its
order) before a collapse. Candidates are de-duplicated: two frames of the same atoms are the same
when the RMS difference of their sorted interatomic-distance vectors is below `duplicate_distance_a`
(default 0.03 A; invariant to rotation, translation and permutation), and the one with the higher
score stays. At most `max_candidates` (default 50) are kept: beyond that a new candidate replaces
the lowest-scoring one if it scores higher. `write(path)` (or `output`, written by `summary()`)
writes them as extxyz (ase.io), with info `reason`, `score`, `replica`, `step`, `time_fs`,
`force_spread_ev_per_a` (largest, NaN without committee) and `bond_deviation_a`.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlff.dynamics.frame import Frame
from mlff.dynamics.observers import largest_bond_deviation

BEFORE_COLLAPSE_SCORE = 1000.0


def check_spread_ceiling(factor: float | None) -> None:
    """Raise ValueError unless the spread ceiling is off (None) or a multiple > 1 of the threshold."""
    if factor is not None and factor <= 1.0:
        raise ValueError(f"spread_ceiling_factor must be > 1 (a multiple of the threshold), got {factor}")


def distance_descriptor(positions_a: np.ndarray) -> np.ndarray:
    """The sorted interatomic distances [n (n - 1) / 2] of positions [n, 3], Angstrom."""
    positions = np.asarray(positions_a, dtype=np.float64)
    upper = np.triu_indices(len(positions), k=1)
    return np.sort(np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)[upper])


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference of two sorted-distance descriptors (inf for different sizes), Angstrom."""
    if a.shape != b.shape:
        return float("inf")
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else 0.0


@dataclass
class SelectionObserver:
    """Collects candidate frames for labelling (see the module docstring).

    Args:
        atomic_numbers: each replica's atomic numbers (index = replica in the run).
        bonds, reference_lengths_a: each replica's bonded pairs [K, 2] and reference lengths [K] A.
        spread_threshold_ev_per_a: the spread criterion's threshold (None: off).
        spread_ceiling_factor: frames at or above factor x spread_threshold_ev_per_a are skipped
            by the spread and bond-deviation criteria (None: no ceiling).
        bond_deviation_a, collapse_deviation_a, before_collapse, duplicate_distance_a, max_candidates:
            as the module docstring says.
        output: extxyz file written by `summary()` (None: call `write`).
        cells, pbc: each replica's box [3, 3] (Angstrom) and periodic flags [3] (None: isolated
            molecules), carried into the candidate frames so that a periodic frame is labelled as one.
    """

    atomic_numbers: list[np.ndarray]
    bonds: list[np.ndarray]
    reference_lengths_a: list[np.ndarray]
    spread_threshold_ev_per_a: float | None = None
    spread_ceiling_factor: float | None = None
    bond_deviation_a: float = 0.3
    collapse_deviation_a: float = 0.5
    before_collapse: int = 2
    duplicate_distance_a: float = 0.03
    max_candidates: int = 50
    output: str | Path | None = None
    cells: list[np.ndarray] | None = None
    pbc: list[np.ndarray] | None = None
    name: str = "selection"
    candidates: list[dict[str, Any]] = field(default_factory=list)
    recent: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    collapsed: list[int] = field(default_factory=list)
    duplicates_dropped: int = 0
    over_cap_dropped: int = 0
    over_ceiling: int = 0
    frames_seen: int = 0

    def __post_init__(self) -> None:
        check_spread_ceiling(self.spread_ceiling_factor)

    @classmethod
    def for_run(
        cls, systems: Sequence[Any], reference: dict[str, Any], metadata: dict[str, Any], **options: Any
    ) -> "SelectionObserver":
        """The observer of a run's start structures (ASE Atoms, one per replica): bonds and reference
        lengths as the runner's stability observers, the spread threshold from the committee file's
        metadata (unless `spread_threshold_ev_per_a` is given)."""
        from mlff.dynamics.runner import replica_observers

        stability = [replica_observers(atoms, reference, 0.5)[0] for atoms in systems]
        committee = metadata.get("committee") or {}
        options.setdefault("spread_threshold_ev_per_a", committee.get("spread_threshold_ev_per_a"))
        return cls(
            atomic_numbers=[atoms.get_atomic_numbers() for atoms in systems],
            bonds=[s.bonds for s in stability],
            reference_lengths_a=[s.reference_lengths_a for s in stability],
            cells=[atoms.cell.array.copy() for atoms in systems],
            pbc=[atoms.pbc.copy() for atoms in systems],
            **options,
        )

    @classmethod
    def for_potential(
        cls,
        potential_path: str | Path,
        structure: str | Sequence[str] | None,
        replicas: int,
        reference_data: str | Path | None = None,
        **options: Any,
    ) -> "SelectionObserver":
        """The observer of the run `run_md(potential_path, structure, ...)` will make: the same start
        structures (one per replica) and reference (the potential's, or `reference_data`'s)."""
        from mlff.data.reference import dataset_reference
        from mlff.dynamics.runner import load_structures
        from mlff.export.load import read_metadata

        metadata = read_metadata(potential_path)
        reference = dataset_reference(reference_data) if reference_data else (metadata.get("reference") or {})
        specs = [structure] if isinstance(structure, str) else list(structure or [])
        systems = load_structures(specs, {"reference": reference}, replicas)
        return cls.for_run(systems, reference, metadata, **options)

    def observe(self, frame: Frame) -> None:
        self.frames_seen += 1
        spreads = frame.force_spread_ev_per_a
        for b, k in enumerate(frame.replicas):
            if k in self.collapsed:
                continue
            positions = np.asarray(frame.positions_a[b], dtype=np.float64)
            finite = bool(np.isfinite(positions).all())
            deviation = (
                largest_bond_deviation(positions, self.bonds[k], self.reference_lengths_a[k]) if finite else np.inf
            )
            if not finite or deviation > self.collapse_deviation_a:
                self.collapsed.append(k)
                for order, entry in enumerate(self.recent.pop(k, [])):
                    self._add({**entry, "reason": "before_collapse", "score": BEFORE_COLLAPSE_SCORE + order})
                continue
            spread = float(np.max(spreads[b])) if spreads is not None and len(spreads[b]) else float("nan")
            entry = {
                "replica": int(k),
                "step": int(frame.step),
                "time_fs": float(frame.time_fs),
                "positions_a": positions.copy(),
                "force_spread_ev_per_a": spread,
                "bond_deviation_a": float(deviation),
            }
            recent = self.recent.setdefault(k, [])
            recent.append(entry)
            del recent[: max(0, len(recent) - self.before_collapse)]
            reasons = []
            if self._over_ceiling(spread):
                self.over_ceiling += 1
                continue
            if self.spread_threshold_ev_per_a and spread >= self.spread_threshold_ev_per_a:
                reasons.append(("spread", spread / self.spread_threshold_ev_per_a))
            if deviation > self.bond_deviation_a:
                reasons.append(("bond_deviation", deviation / self.bond_deviation_a))
            if reasons:
                reason, score = max(reasons, key=lambda item: item[1])
                self._add({**entry, "reason": reason, "score": float(score)})

    def _over_ceiling(self, spread: float) -> bool:
        """Whether a frame's largest spread (eV/A) is at or above the ceiling (never without threshold and factor)."""
        if not self.spread_threshold_ev_per_a or self.spread_ceiling_factor is None:
            return False
        return spread >= self.spread_ceiling_factor * self.spread_threshold_ev_per_a

    def _add(self, candidate: dict[str, Any]) -> None:
        """Keep `candidate` unless a near-duplicate scores higher or the cap is full of better ones."""
        descriptor = distance_descriptor(candidate["positions_a"])
        candidate["descriptor"] = descriptor
        for index, kept in enumerate(self.candidates):
            if descriptor_distance(descriptor, kept["descriptor"]) < self.duplicate_distance_a:
                self.duplicates_dropped += 1
                if candidate["score"] > kept["score"]:
                    self.candidates[index] = candidate
                return
        if len(self.candidates) < self.max_candidates:
            self.candidates.append(candidate)
            return
        self.over_cap_dropped += 1
        lowest = min(range(len(self.candidates)), key=lambda i: self.candidates[i]["score"])
        if candidate["score"] > self.candidates[lowest]["score"]:
            self.candidates[lowest] = candidate

    def atoms(self) -> list[Any]:
        """The candidates as ASE Atoms (by replica, then time), their reason and values in `info`."""
        from ase import Atoms

        frames = []
        for candidate in sorted(self.candidates, key=lambda c: (c["replica"], c["time_fs"])):
            k = candidate["replica"]
            atoms = Atoms(numbers=self.atomic_numbers[k], positions=candidate["positions_a"])
            if self.cells is not None and self.pbc is not None:
                atoms.cell, atoms.pbc = self.cells[k], self.pbc[k]
            for key in ("reason", "score", "replica", "step", "time_fs", "force_spread_ev_per_a", "bond_deviation_a"):
                atoms.info[key] = candidate[key]
            frames.append(atoms)
        return frames

    def write(self, path: str | Path) -> Path:
        """Write the candidates as extxyz, all or nothing."""
        import ase.io

        from mlff.utils import atomic_path

        with atomic_path(path) as temporary:
            ase.io.write(temporary, self.atoms(), format="extxyz")
        return Path(path)

    def summary(self) -> dict[str, Any]:
        reasons = [candidate["reason"] for candidate in self.candidates]
        written = str(self.write(self.output)) if self.output is not None else None
        return {
            "candidates": len(self.candidates),
            "by_reason": {reason: reasons.count(reason) for reason in sorted(set(reasons))},
            "duplicates_dropped": self.duplicates_dropped,
            "over_cap_dropped": self.over_cap_dropped,
            "over_ceiling": self.over_ceiling,
            "collapsed_replicas": sorted(self.collapsed),
            "spread_threshold_ev_per_a": self.spread_threshold_ev_per_a,
            "spread_ceiling_factor": self.spread_ceiling_factor,
            "bond_deviation_a": self.bond_deviation_a,
            "max_candidates": self.max_candidates,
            "output": written,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "recent": self.recent,
            "collapsed": self.collapsed,
            "duplicates_dropped": self.duplicates_dropped,
            "over_cap_dropped": self.over_cap_dropped,
            "over_ceiling": self.over_ceiling,
            "frames_seen": self.frames_seen,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        for name, value in saved.items():
            setattr(self, name, value)
