"""Batches of frames as torch tensors in the potential file's v1 layout."""

from dataclasses import dataclass

import numpy as np
import torch

from mlff.data.frames import Frames


@dataclass
class Batch:
    """Structures packed for a v1 forward call.

    Attributes:
        positions: [N, 3] Angstrom. atomic_numbers: [N]. batch: [N] structure index.
        cell: [B, 3, 3] Angstrom (zeros: no box). pbc: [B, 3] bool (False).
        energies: [B] float64 eV. forces: [N, 3] eV/Angstrom. n_atoms: [B].
        equilibrium: [B] bool, True for an equilibrium frame (None: all False).
        has_energy: [B] bool, True where `energies` is a label to train on (None: all True).
    """

    positions: torch.Tensor
    atomic_numbers: torch.Tensor
    batch: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    energies: torch.Tensor
    forces: torch.Tensor
    n_atoms: torch.Tensor
    equilibrium: torch.Tensor | None = None
    has_energy: torch.Tensor | None = None

    def __post_init__(self) -> None:
        count, device = self.n_atoms.numel(), self.n_atoms.device
        if self.equilibrium is None:
            self.equilibrium = torch.zeros(count, dtype=torch.bool, device=device)
        if self.has_energy is None:
            self.has_energy = torch.ones(count, dtype=torch.bool, device=device)

    @property
    def num_structures(self) -> int:
        return int(self.n_atoms.numel())


class FrameTensors:
    """A Frames object held as torch tensors once, so batches are cheap gathers.

    Args:
        frames: the dataset.
        dtype: floating dtype of positions and forces (energies stay float64).
        device: where batches live.
    """

    def __init__(self, frames: Frames, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        self.frames = frames
        self.device = torch.device(device)
        self.positions = torch.as_tensor(frames.positions, dtype=dtype, device=self.device)
        self.forces = torch.as_tensor(frames.forces, dtype=dtype, device=self.device)
        self.atomic_numbers = torch.as_tensor(frames.atomic_numbers, dtype=torch.long, device=self.device)
        self.energies = torch.as_tensor(frames.energies, dtype=torch.float64, device=self.device)
        self.n_atoms = torch.as_tensor(frames.n_atoms, dtype=torch.long, device=self.device)
        self.equilibrium = torch.as_tensor(frames.equilibrium, dtype=torch.bool, device=self.device)
        self.has_energy = torch.as_tensor(frames.has_energy, dtype=torch.bool, device=self.device)
        self.cell = torch.as_tensor(frames.cell, dtype=dtype, device=self.device)
        self.pbc = torch.as_tensor(frames.pbc, dtype=torch.bool, device=self.device)

    def batch(self, frame_indices: np.ndarray) -> Batch:
        """The given frames as one Batch, in the given order."""
        frame_indices = np.asarray(frame_indices, dtype=np.int64)
        rows = torch.as_tensor(self.frames.atom_indices(frame_indices), device=self.device)
        index = torch.as_tensor(frame_indices, device=self.device)
        n_atoms = self.n_atoms[index]
        count = int(frame_indices.size)
        return Batch(
            positions=self.positions[rows],
            atomic_numbers=self.atomic_numbers[rows],
            batch=torch.repeat_interleave(torch.arange(count, device=self.device), n_atoms),
            cell=self.cell[index],
            pbc=self.pbc[index],
            energies=self.energies[index],
            forces=self.forces[rows],
            n_atoms=n_atoms,
            equilibrium=self.equilibrium[index],
            has_energy=self.has_energy[index],
        )

    def batches(self, frame_indices: np.ndarray, batch_size: int):
        """Consecutive Batches over the given frames."""
        for start in range(0, len(frame_indices), batch_size):
            yield self.batch(frame_indices[start : start + batch_size])
