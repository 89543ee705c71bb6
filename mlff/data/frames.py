"""Frames: labelled structures as flat numpy arrays, in eV and Angstrom.

Structures of any size sit one after another: atoms of frame k are rows
offsets[k]:offsets[k+1] of `positions`, `atomic_numbers` and `forces`.

Every frame is either off-equilibrium (its forces are reference labels) or an
equilibrium frame: a local minimum of the same potential-energy surface, whose
forces are zero by definition (whatever small residual a file stores is not a
label). `has_energy` says whether a frame's energy is a label to train on: a
frame from another level of theory, or one with no energy at all, keeps its
geometry (and its zero forces) but not its energy.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """A dataset file is corrupt or inconsistent (the message says how)."""


@dataclass
class Frames:
    """Labelled structures.

    Attributes:
        positions: [A, 3] float64, Angstrom (A = total atoms over all frames).
        atomic_numbers: [A] int64.
        n_atoms: [F] int64 atoms per frame.
        energies: [F] float64 eV (total energies as labelled).
        forces: [A, 3] float64 eV/Angstrom.
        splits: named index arrays from the file, e.g. "split_train" [K, n].
        source: where the frames came from (a path).
        extra: per-frame extra arrays from the file (e.g. "md17_index" [F], "method" [F] str).
        equilibrium: [F] bool, True for an equilibrium frame (None: all False).
        has_energy: [F] bool, True where `energies` holds a label to train on (None: all True);
            frames without one store energy 0.
        cell: [F, 3, 3] float64 Angstrom, each frame's cell vectors as rows (None: zeros, no box).
        pbc: [F, 3] bool, each frame's periodic axes (None: all False, isolated molecules).
    """

    positions: np.ndarray
    atomic_numbers: np.ndarray
    n_atoms: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    equilibrium: np.ndarray | None = None
    has_energy: np.ndarray | None = None
    cell: np.ndarray | None = None
    pbc: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.n_atoms = np.asarray(self.n_atoms, dtype=np.int64)
        count = self.n_atoms.shape[0]
        self.equilibrium = np.zeros(count, bool) if self.equilibrium is None else np.asarray(self.equilibrium, bool)
        self.has_energy = np.ones(count, bool) if self.has_energy is None else np.asarray(self.has_energy, bool)
        self.cell = np.zeros((count, 3, 3)) if self.cell is None else np.asarray(self.cell, dtype=np.float64)
        self.pbc = np.zeros((count, 3), bool) if self.pbc is None else np.asarray(self.pbc, dtype=bool)
        self.offsets = np.concatenate([[0], np.cumsum(self.n_atoms)]).astype(np.int64)
        self.validate()

    @property
    def num_frames(self) -> int:
        return int(self.n_atoms.shape[0])

    def __len__(self) -> int:
        return self.num_frames

    def validate(self) -> None:
        """Raise DatasetError naming the first inconsistency found."""
        where = f" in {self.source}" if self.source else ""
        total = int(self.offsets[-1])
        checks = [
            (self.positions.shape == (total, 3), f"positions have shape {self.positions.shape}, expected ({total}, 3)"),
            (
                self.atomic_numbers.shape == (total,),
                f"atomic numbers have shape {self.atomic_numbers.shape}, expected ({total},)",
            ),
            (self.forces.shape == (total, 3), f"forces have shape {self.forces.shape}, expected ({total}, 3)"),
            (
                self.energies.shape == (self.num_frames,),
                f"energies have shape {self.energies.shape}, expected ({self.num_frames},)",
            ),
            (bool(np.all(self.n_atoms > 0)), "a frame has no atoms"),
            (
                self.equilibrium.shape == (self.num_frames,),
                f"equilibrium flags have shape {self.equilibrium.shape}, expected ({self.num_frames},)",
            ),
            (
                self.has_energy.shape == (self.num_frames,),
                f"has_energy flags have shape {self.has_energy.shape}, expected ({self.num_frames},)",
            ),
            (
                self.cell.shape == (self.num_frames, 3, 3),
                f"cells have shape {self.cell.shape}, expected ({self.num_frames}, 3, 3)",
            ),
            (
                self.pbc.shape == (self.num_frames, 3),
                f"pbc has shape {self.pbc.shape}, expected ({self.num_frames}, 3)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise DatasetError(message + where)
        for name, array in (("positions", self.positions), ("energies", self.energies), ("forces", self.forces)):
            if not np.all(np.isfinite(array)):
                bad = int(np.argwhere(~np.isfinite(array.reshape(len(array), -1)).all(axis=-1))[0, 0])
                raise DatasetError(f"{name} contain NaN or inf (row {bad}){where}")
        if total and (self.atomic_numbers.min() < 1 or self.atomic_numbers.max() > 118):
            raise DatasetError(f"atomic numbers outside 1..118{where}")
        for name, indices in self.splits.items():
            if indices.size and (indices.min() < 0 or indices.max() >= self.num_frames):
                raise DatasetError(f"split {name!r} indexes frames outside 0..{self.num_frames - 1}{where}")

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """(atomic_numbers [n], positions [n, 3] A, energy eV, forces [n, 3] eV/A) of one frame."""
        lo, hi = self.offsets[index], self.offsets[index + 1]
        return self.atomic_numbers[lo:hi], self.positions[lo:hi], float(self.energies[index]), self.forces[lo:hi]

    def atom_indices(self, frame_indices: np.ndarray) -> np.ndarray:
        """Rows of the atom arrays that belong to the given frames, in order."""
        frame_indices = np.asarray(frame_indices, dtype=np.int64)
        counts = self.n_atoms[frame_indices]
        starts = self.offsets[frame_indices]
        first = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return first + np.arange(int(counts.sum()))

    def subset(self, frame_indices: np.ndarray) -> "Frames":
        """A new Frames holding the given frames (splits dropped)."""
        frame_indices = np.asarray(frame_indices, dtype=np.int64)
        rows = self.atom_indices(frame_indices)
        return Frames(
            positions=self.positions[rows],
            atomic_numbers=self.atomic_numbers[rows],
            n_atoms=self.n_atoms[frame_indices],
            energies=self.energies[frame_indices],
            forces=self.forces[rows],
            source=self.source,
            extra={key: value[frame_indices] for key, value in self.extra.items()},
            equilibrium=self.equilibrium[frame_indices],
            has_energy=self.has_energy[frame_indices],
            cell=self.cell[frame_indices],
            pbc=self.pbc[frame_indices],
        )

    @classmethod
    def concatenate(cls, parts: "list[Frames]") -> "Frames":
        """The frames of `parts` one after another (splits dropped; extra keys kept where every part has them).

        Frame k of parts[1] becomes frame len(parts[0]) + k, and so on.
        """
        if not parts:
            raise ValueError("nothing to concatenate")
        shared = set.intersection(*(set(part.extra) for part in parts))
        return cls(
            positions=np.concatenate([part.positions for part in parts]),
            atomic_numbers=np.concatenate([part.atomic_numbers for part in parts]),
            n_atoms=np.concatenate([part.n_atoms for part in parts]),
            energies=np.concatenate([part.energies for part in parts]),
            forces=np.concatenate([part.forces for part in parts]),
            source=" + ".join(part.source for part in parts),
            extra={key: np.concatenate([part.extra[key] for part in parts]) for key in sorted(shared)},
            equilibrium=np.concatenate([part.equilibrium for part in parts]),
            has_energy=np.concatenate([part.has_energy for part in parts]),
            cell=np.concatenate([part.cell for part in parts]),
            pbc=np.concatenate([part.pbc for part in parts]),
        )

    @property
    def periodic(self) -> np.ndarray:
        """[F] bool: True for a frame with at least one periodic axis."""
        return self.pbc.any(axis=1)

    def species(self) -> list[int]:
        """Sorted unique atomic numbers."""
        return sorted(int(z) for z in np.unique(self.atomic_numbers))

    def composition(self, species: list[int]) -> np.ndarray:
        """[F, len(species)] count of each species in each frame."""
        frame_of_atom = np.repeat(np.arange(self.num_frames), self.n_atoms)
        counts = np.zeros((self.num_frames, len(species)), dtype=np.float64)
        lookup = {z: k for k, z in enumerate(species)}
        columns = np.array([lookup[int(z)] for z in self.atomic_numbers], dtype=np.int64)
        np.add.at(counts, (frame_of_atom, columns), 1.0)
        return counts

    def summary(self) -> dict[str, Any]:
        """A small JSON-able description (for model cards and potential metadata)."""
        return {
            "source": self.source,
            "frames": self.num_frames,
            "species": self.species(),
            "atoms_per_frame": sorted({int(n) for n in self.n_atoms}),
            "equilibrium_frames": int(self.equilibrium.sum()),
            "frames_with_energy": int(self.has_energy.sum()),
        }
