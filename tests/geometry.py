"""Geometry helpers shared by the model tests: format-v1 inputs of molecules and random rotations."""

import numpy as np
import torch


def inputs(molecules, dtype=torch.float64):
    """Format-v1 inputs for a list of (atomic numbers, positions) molecules."""
    positions = torch.cat([torch.as_tensor(np.asarray(xyz), dtype=dtype) for _, xyz in molecules])
    numbers = torch.cat([torch.as_tensor(z, dtype=torch.long) for z, _ in molecules])
    batch = torch.cat([torch.full((len(z),), b, dtype=torch.long) for b, (z, _) in enumerate(molecules)])
    cell = torch.zeros(len(molecules), 3, 3, dtype=dtype)
    pbc = torch.zeros(len(molecules), 3, dtype=torch.bool)
    return positions, numbers, batch, cell, pbc


def random_molecules(sizes: list[int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random molecules of these sizes (H, C, O) in 7 A boxes 20 A apart: the five forward arguments, float64."""
    generator = np.random.default_rng(seed)
    numbers = [generator.choice([1, 6, 8], n) for n in sizes]
    return inputs([(z, generator.uniform(0, 7.0, (len(z), 3)) + 20.0 * k) for k, z in enumerate(numbers)])


def evaluate(model, molecules):
    """(energies [B], forces [N, 3]) of `model` on the molecules, detached."""
    energy, forces = model(*inputs(molecules))
    return energy.detach(), forces.detach()


def random_orthogonal(seed: int, proper: bool = True) -> np.ndarray:
    """A random 3x3 rotation (proper) or rotoreflection (improper) matrix drawn from `seed`."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q


def finite_difference_forces(model, molecule, step: float = 1e-5) -> torch.Tensor:
    """-dE/dx [N, 3] of one (atomic numbers, positions) molecule by central differences.

    All 6N displaced geometries go through `model` in one batch; pass a model without its large
    reference-energy offset (its rounding would swamp the differences).
    """
    numbers, xyz = molecule
    displaced = []
    for atom in range(len(numbers)):
        for axis in range(3):
            for sign in (1.0, -1.0):
                moved = np.array(xyz, dtype=np.float64, copy=True)
                moved[atom, axis] += sign * step
                displaced.append((numbers, moved))
    energies, _ = evaluate(model, displaced)
    pairs = energies.view(len(numbers), 3, 2)
    return -(pairs[..., 0] - pairs[..., 1]) / (2 * step)
