"""Compare the two core repulsions on dimers: the cubic k (r0 - r)^3 and the switched ZBL.

    python examples/compare_repulsion.py                   # H-H, C-H, O-O with ethanol's onsets, k = 50
    python examples/compare_repulsion.py --strength 30 --distances 0.2 0.5 0.8

The onsets are those `mlff export` gives the shipped ethanol potential (`mlff.models.priors.
onsets.pair_onsets`): H-H and C-H at their shortest distance in the rMD17 training frames,
O-O (ethanol has one oxygen) from covalent radii, 0.6 x (0.66 + 0.66) A. Each energy is that of
one dimer at distance r through the prior itself (eV); 0 at and beyond the pair's onset.
"""

import argparse
from collections.abc import Sequence

import numpy as np
import torch

from mlff.models.neighbors import Edges, neighbor_pairs
from mlff.models.priors import CubicRepulsion, Prior, ZBLRepulsion, pair_onsets
from mlff.utils import element_symbol, format_table

SPECIES = [1, 6, 8]
CUTOFF_A = 5.0
# The shortest distance of each element pair (H, C, O) in the shipped ethanol potential's training
# frames (its card), A; 0: the pair never meets (one oxygen), so pair_onsets takes the radii floor.
ETHANOL_SHORTEST_A = np.array(
    [[1.444051, 0.958467, 0.875786], [0.958467, 1.383414, 1.298965], [0.875786, 1.298965, 0.0]]
)
PAIRS = ((1, 1), (6, 1), (8, 8))
DISTANCES_A = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4)


def dimer_energies(prior: Prior, z_a: int, z_b: int, distances_a: Sequence[float]) -> np.ndarray:
    """Energy [D] eV of the prior alone on dimers z_a - z_b at each distance (Angstrom), one structure each."""
    count = len(distances_a)
    positions = torch.zeros(2 * count, 3, dtype=torch.float64)
    positions[1::2, 0] = torch.as_tensor(distances_a, dtype=torch.float64)
    numbers = torch.tensor([z_a, z_b] * count)
    batch = torch.arange(count).repeat_interleave(2)
    index, vectors, distances = neighbor_pairs(positions, batch, count, prior.cutoff)
    # The repulsions read only the pairs and distances: no encoding, no envelope.
    edges = Edges(index, vectors, distances, torch.zeros(distances.shape[0], 0), torch.ones_like(distances))
    species = torch.as_tensor([prior.species.index(int(z)) for z in numbers.tolist()])
    return prior(numbers, species, batch, edges, count).detach().numpy()


def compare(strength_ev_per_a3: float = 50.0, distances_a: Sequence[float] = DISTANCES_A) -> list[list]:
    """Rows (pair, onset A, r A, cubic eV, ZBL eV) for H-H, C-H and O-O below their onsets."""
    onsets = pair_onsets(ETHANOL_SHORTEST_A, SPECIES, CUTOFF_A)
    table = torch.as_tensor(onsets.onsets_a)
    cubic = CubicRepulsion(SPECIES, CUTOFF_A).double()
    cubic.set(table, strength_ev_per_a3)
    zbl = ZBLRepulsion(SPECIES, CUTOFF_A).double()
    zbl.set(table)
    rows = []
    for z_a, z_b in PAIRS:
        a, b = SPECIES.index(z_a), SPECIES.index(z_b)
        onset = float(onsets.onsets_a[a, b])
        source = "seen" if onsets.seen[a, b] else "radii"
        name = f"{element_symbol(z_a)}-{element_symbol(z_b)}"
        shown = [r for r in distances_a if r < onset] + [onset]
        cubic_ev = dimer_energies(cubic, z_a, z_b, shown)
        zbl_ev = dimer_energies(zbl, z_a, z_b, shown)
        rows += [[name, f"{onset:.3f} ({source})", r, c, e] for r, c, e in zip(shown, cubic_ev, zbl_ev)]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strength", type=float, default=50.0, help="the cubic's k, eV/A^3 (default 50)")
    parser.add_argument("--distances", type=float, nargs="+", default=list(DISTANCES_A), help="distances, A")
    args = parser.parse_args(argv)
    rows = compare(args.strength, args.distances)
    headers = ["pair", "onset r0 (A)", "r (A)", f"cubic k={args.strength:g} (eV)", "ZBL switched (eV)"]
    print(format_table(rows, headers, floatfmt=("", "", ".3f", ".4g", ".4g")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
