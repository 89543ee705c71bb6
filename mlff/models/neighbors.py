"""Pairs within the cutoff, per structure, in pure torch (TorchScript-safe).

A potential file must run with plain `torch.jit.load`, so the neighbour search
lives inside it and uses no extension library. Molecules are small, so every
ordered pair inside each structure is a candidate: sum_b n_b^2 work, not N^2
over the whole batch (`neighbor_pairs`).

Periodic structures (`periodic_neighbor_pairs`, one structure at a time) take one of three
paths, chosen from the structure's size and its cell's perpendicular widths w_k:

- minimum image (all pairs, n^2): every periodic w_k > 2 cutoff, so each pair has at most one
  image within the cutoff, the one that rounding the fractional difference picks;
- image shifts (all pairs times all lattice shifts within ceil(cutoff / w_k)): a small box,
  where an atom meets several images of another, or its own;
- cell list (O(n)): more than `CELL_LIST_MIN_ATOMS` atoms and every periodic w_k >= 3 cutoff;
  bins at least one cutoff wide, each atom against the 27 bins around its own.

Each edge carries its shift: the lattice translation (integer multiples of the periodic cell
vectors) added to r_j - r_i. Shifts are found without gradients and applied to the positions and
cell the caller gives, so distances and their gradients wrt positions and cell strain are exact.
Non-periodic directions of a partly periodic cell (a slab, pbc [T, T, F]) are never shifted; the
cell's vectors along them are ignored.
"""

from typing import NamedTuple, Optional

import torch

# Atoms in one periodic structure above which its pairs come from a cell list rather than all pairs:
# the two cost the same near 1,500 atoms at liquid density, one CPU thread (docs/periodic.md,
# scripts/neighbor_timing.py).
CELL_LIST_MIN_ATOMS = 1536
# Bins per axis at most: a sparse or elongated structure would otherwise allocate ~ (extent / cutoff)^3 bins.
MAX_BINS_PER_AXIS = 128
# |det| of the completed cell below this fraction of the product of its rows' norms: singular.
SINGULAR_TOLERANCE = 1e-8


class Edges(NamedTuple):
    """The neighbour pairs of a batch, with their geometry and features computed once per call.

    Attributes:
        index: [2, E] long, (receiver i, sender j); each unordered pair appears in both directions.
        vectors: [E, 3] r_j - r_i, Angstrom.
        distances: [E] |r_j - r_i|, Angstrom (> 0: pairs are distinct atoms).
        encoded: [E, s] the model's distance encoding of `distances`, cutoff envelope included.
        envelope: [E] the smooth cosine cutoff envelope of `distances`, in [0, 1].
        shifts: [E, 3] Angstrom, the lattice translation included in `vectors`
            (vectors = r_j - r_i + shifts), or None when no structure is periodic.
    """

    index: torch.Tensor
    vectors: torch.Tensor
    distances: torch.Tensor
    encoded: torch.Tensor
    envelope: torch.Tensor
    shifts: Optional[torch.Tensor] = None


def structure_pairs(batch: torch.Tensor, num_structures: int) -> torch.Tensor:
    """Every ordered pair (i, j), i != j, of atoms in the same structure.

    Args:
        batch: [N] structure index of each atom, non-decreasing.
        num_structures: B, the number of structures.

    Returns:
        [2, P] long tensor of (receiver i, sender j) pairs.
    """
    # index_add rather than bincount: its length is B whatever the values, a static shape for torch.export.
    counts = torch.zeros(num_structures, dtype=torch.long, device=batch.device).index_add(
        0, batch, torch.ones_like(batch)
    )
    starts = torch.cumsum(counts, 0) - counts
    pairs_per_structure = counts * counts
    structure_of_pair = torch.repeat_interleave(torch.arange(num_structures, device=batch.device), pairs_per_structure)
    first_pair = torch.cumsum(pairs_per_structure, 0) - pairs_per_structure
    local = torch.arange(structure_of_pair.numel(), device=batch.device) - first_pair[structure_of_pair]
    size = counts[structure_of_pair]
    receiver = starts[structure_of_pair] + torch.div(local, size, rounding_mode="floor")
    sender = starts[structure_of_pair] + torch.remainder(local, size)
    keep = receiver != sender
    return torch.stack([receiver[keep], sender[keep]], dim=0)


def neighbor_pairs(
    positions: torch.Tensor, batch: torch.Tensor, num_structures: int, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs closer than the cutoff, with their vectors and distances.

    Args:
        positions: [N, 3] Angstrom.
        batch: [N] structure index of each atom, non-decreasing.
        num_structures: B.
        cutoff: Angstrom.

    Returns:
        edge_index [2, E] (receiver, sender), vectors [E, 3] = r_sender - r_receiver
        in Angstrom, distances [E] in Angstrom.
    """
    candidates = structure_pairs(batch, num_structures)
    with torch.no_grad():
        candidate_vectors = positions[candidates[1]] - positions[candidates[0]]
        within = torch.linalg.vector_norm(candidate_vectors, dim=-1) < cutoff
    edge_index = candidates[:, within]
    vectors = positions[edge_index[1]] - positions[edge_index[0]]
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    return edge_index, vectors, distances


def padded_neighbor_pairs(
    positions: torch.Tensor, candidates: torch.Tensor, cutoff: float, capacity: int, ghost: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs of `neighbor_pairs` in a list of fixed length: shapes depend on no value.

    The candidates depend on the batch alone (`structure_pairs`), so an MD engine builds them once;
    each call then keeps the first `capacity` candidates within the cutoff (in candidate order, so
    the real pairs come in `neighbor_pairs`' order) and fills the rest with (ghost, ghost) pairs
    whose vector is (2 cutoff, 0, 0): outside the cutoff (zero envelope), no zero distance, and
    their messages reach only the ghost atom. Nothing is copied to the host.

    Args:
        positions: [N + 1, 3] Angstrom, the last row the ghost atom.
        candidates: [2, P] long, the ordered pairs of atoms in the same structure.
        cutoff: Angstrom.
        capacity: the list's length; at least P keeps every candidate (no sort needed).
        ghost: the ghost atom's index (N).

    Returns:
        edge_index [2, C] (receiver, sender), vectors [C, 3] and distances [C] in Angstrom,
        C = min(capacity, P), and the number of candidates within the cutoff ([] long; more than
        C means pairs were dropped: the caller grows the capacity and repeats the step).
    """
    with torch.no_grad():
        candidate_vectors = positions[candidates[1]] - positions[candidates[0]]
        within = torch.linalg.vector_norm(candidate_vectors, dim=-1) < cutoff
        count = within.sum()
        if capacity < candidates.size(1):
            # A stable sort puts the pairs within the cutoff first, in their candidate order.
            order = torch.sort((~within).to(torch.uint8), stable=True).indices[:capacity]
            candidates = candidates[:, order]
            within = within[order]
        index = torch.where(within.unsqueeze(0), candidates, torch.full_like(candidates, ghost))
    vectors = positions[index[1]] - positions[index[0]]
    far = torch.zeros_like(vectors)
    far[:, 0] = 2.0 * cutoff
    vectors = torch.where(within.unsqueeze(1), vectors, far)
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    return index, vectors, distances, count


def complete_cell(cell: torch.Tensor, pbc: torch.Tensor, tolerance: float = SINGULAR_TOLERANCE) -> torch.Tensor:
    """The cell with its non-periodic rows replaced by unit vectors orthogonal to the periodic ones.

    Fractional coordinates and perpendicular widths need three independent vectors, but a slab's
    or a wire's cell may have none (or any) along its open directions.

    Args:
        cell: [3, 3] Angstrom, rows the cell vectors (no gradient needed).
        pbc: [3] bool.
        tolerance: singular when |det| <= tolerance * the product of the rows' norms.

    Returns:
        [3, 3] Angstrom.

    Raises:
        ValueError: the periodic cell vectors are zero or linearly dependent.
    """
    num_periodic = int(pbc.sum())
    identity = torch.eye(3, dtype=cell.dtype, device=cell.device)
    if num_periodic == 0:
        return identity
    full = cell.clone()
    if num_periodic == 2:
        open_axis = int(torch.nonzero(~pbc)[0, 0])
        periodic_axes = torch.nonzero(pbc).flatten()
        normal = torch.linalg.cross(cell[int(periodic_axes[0])], cell[int(periodic_axes[1])])
        full[open_axis] = normal / torch.linalg.vector_norm(normal).clamp_min(1e-300)
    elif num_periodic == 1:
        axis = int(torch.nonzero(pbc)[0, 0])
        vector = cell[axis]
        # The coordinate axis least aligned with the periodic vector gives a well-conditioned normal.
        helper = identity[int(torch.argmin(vector.abs()))]
        first = torch.linalg.cross(vector, helper)
        first = first / torch.linalg.vector_norm(first).clamp_min(1e-300)
        second = torch.linalg.cross(vector, first)
        second = second / torch.linalg.vector_norm(second).clamp_min(1e-300)
        open_axes = torch.nonzero(~pbc).flatten()
        full[int(open_axes[0])] = first
        full[int(open_axes[1])] = second
    scale = torch.linalg.vector_norm(full, dim=1).prod()
    if not bool(torch.isfinite(full).all()) or float(torch.linalg.det(full).abs()) <= tolerance * float(scale):
        raise ValueError("the cell is singular: its periodic vectors are zero or linearly dependent")
    return full


def perpendicular_widths(full: torch.Tensor) -> torch.Tensor:
    """[3] Angstrom: the distance between opposite faces of a non-singular cell [3, 3], per axis."""
    volume = torch.linalg.det(full).abs()
    first = full.index_select(0, torch.tensor([1, 2, 0], device=full.device))
    second = full.index_select(0, torch.tensor([2, 0, 1], device=full.device))
    areas = torch.linalg.vector_norm(torch.linalg.cross(first, second), dim=1)
    return volume / areas


def structure_periodic_pairs(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    cutoff: float,
    cell_list_min_atoms: int = CELL_LIST_MIN_ATOMS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs of one structure closer than the cutoff in any image, and their lattice shifts.

    Args:
        positions: [n, 3] Angstrom (need not lie inside the cell).
        cell: [3, 3] Angstrom, rows the cell vectors.
        pbc: [3] bool.
        cutoff: Angstrom.
        cell_list_min_atoms: more atoms than this (and a box >= 3 cutoffs wide) take the cell list.

    Returns:
        index [2, E] long (receiver i, sender j; local atom indices) and shifts [E, 3] long: the
        image of j is r_j + shifts @ cell. Both directions of every pair appear.
    """
    with torch.no_grad():
        full = complete_cell(cell.detach(), pbc)
        periodic = pbc.to(full.dtype)
        fractional = positions.detach() @ torch.linalg.inv(full)
        # Wrapping into [0, 1) along periodic axes bounds every fractional difference by 1.
        offsets = torch.floor(fractional) * periodic
        wrapped = fractional - offsets
        widths = perpendicular_widths(full)
        periodic_widths = widths[pbc]
        num_atoms = positions.size(0)
        if num_atoms > cell_list_min_atoms and bool((periodic_widths >= 3.0 * cutoff).all()):
            index, shifts = _cell_list_candidates(wrapped, widths, pbc, cutoff)
        elif bool((periodic_widths > 2.0 * cutoff).all()):
            index, shifts = _minimum_image_candidates(wrapped, full, periodic, cutoff)
        else:
            index, shifts = _image_shift_candidates(wrapped, full, widths, pbc, cutoff)
        vectors = (wrapped[index[1]] - wrapped[index[0]] + shifts) @ full
        keep = torch.linalg.vector_norm(vectors, dim=1) < cutoff
        index = index[:, keep]
        shifts = shifts[keep] - offsets[index[1]] + offsets[index[0]]
    return index, torch.round(shifts).to(torch.long)


def _minimum_image_candidates(
    wrapped: torch.Tensor, full: torch.Tensor, periodic: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ordered pairs of distinct atoms whose minimum image lies within the cutoff, and that image's shift.

    One [n, n, 3] broadcast of the fractional differences (no index gathers): with every periodic
    width above 2 cutoffs, rounding the difference picks the only image that can be close enough.
    """
    difference = wrapped.unsqueeze(0) - wrapped.unsqueeze(1)
    shift = -torch.round(difference) * periodic
    squared = ((difference + shift) @ full).square().sum(dim=-1)
    # 1e-4 of slack: the exact test on the candidates (`structure_periodic_pairs`) decides, so
    # rounding here may only add candidates, never drop a pair.
    close = squared < (cutoff * 1.0001) ** 2
    close.fill_diagonal_(False)
    found = close.nonzero()
    receiver, sender = found[:, 0], found[:, 1]
    return torch.stack([receiver, sender], dim=0), shift[receiver, sender]


def _image_shift_candidates(
    wrapped: torch.Tensor, full: torch.Tensor, widths: torch.Tensor, pbc: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (i, j, lattice shift) within the cutoff, for boxes under two cutoffs wide along some axis.

    Shifts up to ceil(cutoff / w_k) along each periodic axis; one [S, n, n] broadcast of the squared
    distances (no index gathers). An atom meets its own images, never itself.
    """
    device = wrapped.device
    reach = torch.ceil(widths.reciprocal() * cutoff).to(torch.long) * pbc.to(torch.long)
    axes = [torch.arange(-int(reach[k]), int(reach[k]) + 1, device=device) for k in range(3)]
    grid = torch.meshgrid(axes[0], axes[1], axes[2], indexing="ij")
    lattice = torch.stack([grid[0].flatten(), grid[1].flatten(), grid[2].flatten()], dim=1).to(full.dtype)
    cartesian = wrapped @ full
    difference = cartesian.unsqueeze(0) - cartesian.unsqueeze(1)
    squared = (difference.unsqueeze(0) + (lattice @ full).view(-1, 1, 1, 3)).square().sum(dim=-1)
    close = squared < (cutoff * 1.0001) ** 2  # slack as in _minimum_image_candidates
    # The zero shift sits at the centre of the symmetric grid of shifts.
    close[lattice.size(0) // 2].fill_diagonal_(False)
    found = close.nonzero()
    return torch.stack([found[:, 1], found[:, 2]], dim=0), lattice[found[:, 0]]


def _cell_list_candidates(
    wrapped: torch.Tensor, widths: torch.Tensor, pbc: torch.Tensor, cutoff: float, max_bins: int = MAX_BINS_PER_AXIS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of atoms in neighbouring bins (bins >= cutoff wide; >= 3 bins along each periodic axis)."""
    device = wrapped.device
    num_atoms = wrapped.size(0)
    low = wrapped.min(dim=0).values
    high = wrapped.max(dim=0).values
    # Periodic axes span [0, 1) of the cell; open ones the atoms' extent.
    low = torch.where(pbc, torch.zeros_like(low), low)
    span = torch.where(pbc, torch.ones_like(high), (high - low).clamp_min(1e-12))
    bins = torch.floor(span * widths / cutoff).clamp(1, max_bins).to(torch.long)
    position = torch.floor((wrapped - low) / span * bins.to(wrapped.dtype)).to(torch.long)
    position = torch.minimum(position.clamp_min(0), bins - 1)
    strides = torch.stack([bins[1] * bins[2], bins[2], torch.ones_like(bins[2])])
    own_bin = (position * strides).sum(dim=1)
    total_bins = int(bins.prod())
    order = torch.argsort(own_bin)
    counts = torch.bincount(own_bin, minlength=total_bins)
    starts = torch.cumsum(counts, 0) - counts
    steps = torch.tensor([-1, 0, 1], device=device)
    grid = torch.meshgrid(steps, steps, steps, indexing="ij")
    around = torch.stack([grid[0].flatten(), grid[1].flatten(), grid[2].flatten()], dim=1)
    neighbour = position.unsqueeze(1) + around.unsqueeze(0)
    wrap = torch.div(neighbour, bins, rounding_mode="floor")
    valid = (pbc | (wrap == 0)).all(dim=2)
    # Open axes with fewer than 3 bins would reach the same bin twice; those steps are out of range anyway.
    wrap = wrap * pbc.to(torch.long)
    neighbour_bin = ((neighbour - wrap * bins) * strides).sum(dim=2)
    receiver_of = torch.arange(num_atoms, device=device).unsqueeze(1).expand(num_atoms, 27)[valid]
    bin_of = neighbour_bin[valid]
    shift_of = wrap[valid]
    members = counts[bin_of]
    source = torch.repeat_interleave(torch.arange(bin_of.numel(), device=device), members)
    local = torch.arange(source.numel(), device=device) - (torch.cumsum(members, 0) - members)[source]
    sender = order[starts[bin_of][source] + local]
    receiver = receiver_of[source]
    shifts = shift_of[source]
    keep = (receiver != sender) | (shifts != 0).any(dim=1)
    return torch.stack([receiver[keep], sender[keep]], dim=0), shifts[keep].to(wrapped.dtype)


def periodic_neighbor_pairs(
    positions: torch.Tensor,
    batch: torch.Tensor,
    num_structures: int,
    cutoff: float,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    cell_list_min_atoms: int = CELL_LIST_MIN_ATOMS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs closer than the cutoff in any periodic image, structure by structure.

    Args:
        positions: [N, 3] Angstrom.
        batch: [N] structure index of each atom, non-decreasing.
        num_structures: B.
        cutoff: Angstrom.
        cell: [B, 3, 3] Angstrom, rows the cell vectors (may carry a strain's gradient).
        pbc: [B, 3] bool.
        cell_list_min_atoms: structures with more atoms (and boxes >= 3 cutoffs wide) take the cell list.

    Returns:
        edge_index [2, E] (receiver, sender), shifts [E, 3] Angstrom (the lattice translation of
        the sender's image), vectors [E, 3] = r_sender - r_receiver + shift, distances [E], Angstrom.
    """
    counts = torch.bincount(batch, minlength=num_structures)
    indices: list[torch.Tensor] = []
    shift_vectors: list[torch.Tensor] = []
    start = 0
    for structure in range(num_structures):
        count = int(counts[structure])
        if count > 0:
            index, shifts = structure_periodic_pairs(
                positions[start : start + count], cell[structure], pbc[structure], cutoff, cell_list_min_atoms
            )
            indices.append(index + start)
            shift_vectors.append(shifts.to(cell.dtype) @ cell[structure])
        start += count
    if len(indices) == 0:
        edge_index = torch.zeros(2, 0, dtype=torch.long, device=positions.device)
        shift = torch.zeros(0, 3, dtype=positions.dtype, device=positions.device)
    else:
        edge_index = torch.cat(indices, dim=1)
        shift = torch.cat(shift_vectors, dim=0).to(positions.dtype)
    vectors = positions[edge_index[1]] - positions[edge_index[0]] + shift
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    return edge_index, shift, vectors, distances
