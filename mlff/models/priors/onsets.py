"""Where a short-range repulsion starts, for every pair of a model's elements: never an error.

The repulsion priors (`CubicRepulsion`, `ZBLRepulsion`) act only on pairs closer than their
element pair's onset r0, so that they are zero on every frame the model learnt from. The rule:

* a pair of elements that comes within the cutoff in the training frames: r0 = the shortest
  distance seen (`mlff.data.reference.shortest_pair_distances`); the data say nothing closer
  than that, and the prior adds nothing to any training frame;
* any other pair (its atoms never within the cutoff of each other, as rMD17 paracetamol's two
  oxygens, 5.69 A apart at the closest; or an element absent from the frames): a floor from
  covalent radii, r0 = RADII_FACTOR (r_a + r_b) (Cordero et al. 2008, `ase.data.covalent_radii`);
* every r0 at most MAX_ONSET_FRACTION x cutoff: the priors see only pairs within the cutoff, so an
  onset at or beyond it would switch the prior on for pairs it cannot see. Lowering an onset only
  makes the prior zero on more geometries, so the clamp keeps it zero on the training frames.

Why RADII_FACTOR = 0.6: the sum of covalent radii is about a single bond's length; the shortest
bonds of ordinary chemistry (triple bonds, C-O in carbon monoxide) are 0.77-0.80 of it and H2's
bond is 1.19 of it. For H, C, N, O the floor is thus at most 0.78 of the shortest bond between
the two elements (C-C: 0.91 A vs 1.20 A in acetylene; C-O 0.85 vs 1.13; O-O 0.79 vs 1.21; O-H
0.58 vs 0.96; H-H 0.37 vs 0.74): a compression that costs tens of k_B T at 500 K in any real
bond, so the floor never touches real chemistry, while still guarding the core.
"""

from dataclasses import dataclass

import numpy as np

RADII_FACTOR = 0.6
MAX_ONSET_FRACTION = 0.99
SEEN, RADII = "seen", "radii"


@dataclass(frozen=True)
class PairOnsets:
    """The onsets of every species pair and where each came from.

    Attributes:
        species: the model's atomic numbers (sorted, unique), S of them.
        onsets_a: [S, S] symmetric, Angstrom, each in (0, MAX_ONSET_FRACTION x cutoff].
        seen: [S, S] bool, True where the onset is the shortest distance seen in the frames (possibly
            clamped), False where it is the covalent-radii floor.
        radii_factor: the factor of the floor.
        max_onset_a: the clamp, Angstrom.
    """

    species: list[int]
    onsets_a: np.ndarray
    seen: np.ndarray
    radii_factor: float
    max_onset_a: float

    def describe(self) -> dict:
        """JSON-able metadata: onsets [S, S], their sources [S, S] ("seen" or "radii") and the rule."""
        return {
            "species": list(self.species),
            "onsets_a": self.onsets_a.round(6).tolist(),
            "onset_sources": np.where(self.seen, SEEN, RADII).tolist(),
            "onset_rule": (
                f"shortest distance seen within the cutoff in the training frames; else {self.radii_factor} x the "
                f"sum of covalent radii (ase.data.covalent_radii); at most {self.max_onset_a:.6g} A"
            ),
        }


def covalent_floor(species: list[int], radii_factor: float = RADII_FACTOR) -> np.ndarray:
    """[S, S] Angstrom: radii_factor x (r_a + r_b), covalent radii of ASE (Cordero et al. 2008)."""
    from ase.data import covalent_radii

    radii = np.asarray(covalent_radii, dtype=np.float64)[np.asarray(species, dtype=np.int64)]
    return radii_factor * (radii[:, None] + radii[None, :])


def pair_onsets(
    shortest_a: np.ndarray, species: list[int], cutoff_a: float, radii_factor: float = RADII_FACTOR
) -> PairOnsets:
    """The onset of every species pair from the shortest distances seen (module docstring).

    Args:
        shortest_a: [S, S] Angstrom, the shortest distance of each species pair over the training
            frames (`shortest_pair_distances`); 0, inf or anything at or beyond the cutoff means the
            pair never came within the cutoff.
        species: the model's atomic numbers, S of them, in the order of `shortest_a`.
        cutoff_a: the model's cutoff, Angstrom.
        radii_factor: the floor's factor on the sum of covalent radii, in (0, 1].
    """
    shortest = np.asarray(shortest_a, dtype=np.float64)
    count = len(species)
    if shortest.shape != (count, count):
        raise ValueError(f"shortest distances must have shape [{count}, {count}], got {list(shortest.shape)}")
    if not np.array_equal(shortest, shortest.T, equal_nan=True):
        raise ValueError("shortest distances must be symmetric")
    if not 0.0 < radii_factor <= 1.0:
        raise ValueError(f"radii_factor must lie in (0, 1], got {radii_factor}")
    if cutoff_a <= 0:
        raise ValueError(f"the cutoff must be > 0 Angstrom, got {cutoff_a}")
    seen = np.isfinite(shortest) & (shortest > 0.0) & (shortest < cutoff_a)
    max_onset = MAX_ONSET_FRACTION * float(cutoff_a)
    onsets = np.minimum(np.where(seen, shortest, covalent_floor(species, radii_factor)), max_onset)
    return PairOnsets(
        species=[int(z) for z in species],
        onsets_a=onsets,
        seen=seen,
        radii_factor=float(radii_factor),
        max_onset_a=max_onset,
    )
