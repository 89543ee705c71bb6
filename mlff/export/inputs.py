"""The input contract of a potential file's forward, checked in one place.

`check_inputs` is what every potential (the TorchScript module's `check_inputs` method, an
AOTInductor package's Python wrapper) runs before it trusts its arguments. The checks read
tensor values (finite coordinates, known elements, sorted batch), so on a GPU each one waits for
the device: engines run them once per system set-up and then call the unchecked path each step.
"""

import torch


def check_inputs(
    species_table: torch.Tensor,
    species: list[int],
    positions: torch.Tensor,
    atomic_numbers: torch.Tensor,
    batch: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
) -> None:
    """Raise ValueError naming the problem unless the five forward arguments fit the contract.

    Args:
        species_table: [119] long, the species index of each atomic number (-1: unknown).
        species: the atomic numbers the potential knows (for the message).
        positions: [N, 3] Angstrom. atomic_numbers: [N]. batch: [N] non-decreasing in [0, B).
        cell: [B, 3, 3] Angstrom. pbc: [B, 3].
    """
    if positions.dim() != 2 or positions.size(1) != 3:
        raise ValueError("positions must have shape [N, 3], got " + str(list(positions.shape)))
    num_atoms = positions.size(0)
    if atomic_numbers.shape != (num_atoms,) or batch.shape != (num_atoms,):
        raise ValueError(
            "atomic_numbers and batch must have shape [N] = ["
            + str(num_atoms)
            + "], got "
            + str(list(atomic_numbers.shape))
            + " and "
            + str(list(batch.shape))
        )
    if cell.dim() != 3 or cell.size(1) != 3 or cell.size(2) != 3:
        raise ValueError("cell must have shape [B, 3, 3], got " + str(list(cell.shape)))
    if pbc.dim() != 2 or pbc.size(0) != cell.size(0) or pbc.size(1) != 3:
        raise ValueError("pbc must have shape [B, 3] matching cell, got " + str(list(pbc.shape)))
    if bool(pbc.any()) and not bool(torch.isfinite(cell).all()):
        raise ValueError("cell contains NaN or inf")
    if not bool(torch.isfinite(positions).all()):
        raise ValueError("positions contain NaN or inf")
    if num_atoms == 0:
        return
    if bool((atomic_numbers < 0).any()) or bool((atomic_numbers >= species_table.size(0)).any()):
        raise ValueError("atomic numbers must lie in 0..118")
    unknown = species_table[atomic_numbers] < 0
    if bool(unknown.any()):
        bad = int(atomic_numbers[unknown][0])
        raise ValueError("atomic number " + str(bad) + " is not among the potential's species " + str(species))
    if bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be non-decreasing (atoms of each structure contiguous)")
    if int(batch[0]) < 0 or int(batch[-1]) >= cell.size(0):
        raise ValueError("batch indices must lie in [0, B) with B = cell.shape[0]")
