"""Published numbers the ablation is compared with: Gao et al. 2022, Table 1.

"Learning Regularized Positional Encoding for Molecular Prediction": test force MAE in meV/A on
the original MD17 labels, 1000 training and 1000 test frames per molecule, as (mean, std); the
paper has no standard deviations for NequIP and no rows for the equivariant transformer (ET).
The numbers are for the original MD17 labels only: never compare them with rMD17 results.
"""

from mlff.data.fetch import MOLECULES

SOURCE = "Gao et al. 2022, Learning Regularized Positional Encoding for Molecular Prediction, Table 1"

# The paper's three rows per backbone: the raw distance ("baseline"), the learned positional
# encoding without smoothness ("posenc", +PosEnc) and with it ("smooth", +Smooth).
ROWS: tuple[str, ...] = ("baseline", "posenc", "smooth")

# backbone -> row -> (means, stds), each in the order of MOLECULES; meV/A.
_TABLE1: dict[str, dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "transformer": {
        "baseline": ((49.7, 36.8, 51.0, 53.0, 50.4, 53.2, 47.6, 54.5), (0.9, 0.6, 1.3, 1.5, 1.5, 1.6, 1.5, 1.9)),
        "posenc": ((24.6, 3.3, 13.8, 24.2, 11.6, 22.5, 15.2, 17.7), (0.8, 0.2, 0.3, 0.7, 0.5, 0.9, 0.5, 0.8)),
        "smooth": ((12.3, 1.9, 6.2, 13.8, 5.4, 8.3, 5.7, 10.1), (0.5, 0.2, 0.5, 0.8, 0.4, 0.7, 0.2, 0.2)),
    },
    "egnn": {
        "baseline": ((51.9, 36.9, 50.1, 53.5, 50.5, 53.3, 47.6, 54.6), (1.1, 0.4, 1.3, 1.8, 1.2, 0.9, 0.4, 0.6)),
        "posenc": ((9.3, 1.5, 4.9, 8.8, 4.9, 7.8, 7.7, 7.4), (0.8, 0.2, 0.3, 0.7, 0.4, 0.8, 0.5, 0.6)),
        "smooth": ((6.7, 1.3, 3.5, 7.0, 3.0, 6.5, 4.1, 6.2), (0.5, 0.2, 0.3, 0.8, 0.3, 0.5, 0.4, 0.4)),
    },
}

# The backbones the paper has rows for.
BACKBONES: tuple[str, ...] = tuple(_TABLE1)

# NequIP as the paper quotes it (reference only, no standard deviations); meV/A.
_NEQUIP: tuple[float, ...] = (15.1, 2.3, 9.0, 14.6, 4.2, 10.3, 4.4, 7.5)


def paper_force_mae(backbone: str, row: str, molecule: str) -> tuple[float, float] | None:
    """The paper's test force MAE (mean, std) in meV/A, or None where the paper has no number.

    Args:
        backbone: "egnn" or "transformer" (any other backbone, such as "et", has no rows).
        row: one of ROWS.
        molecule: one of MOLECULES.
    """
    if row not in ROWS:
        raise ValueError(f"unknown paper row {row!r}; known: {list(ROWS)}")
    if molecule not in MOLECULES:
        raise ValueError(f"unknown MD17 molecule {molecule!r}; known: {list(MOLECULES)}")
    rows = _TABLE1.get(backbone)
    if rows is None:
        return None
    means, stds = rows[row]
    index = MOLECULES.index(molecule)
    return means[index], stds[index]


def nequip_force_mae(molecule: str) -> float:
    """NequIP's test force MAE in meV/A as the paper quotes it (reference only)."""
    if molecule not in MOLECULES:
        raise ValueError(f"unknown MD17 molecule {molecule!r}; known: {list(MOLECULES)}")
    return _NEQUIP[MOLECULES.index(molecule)]
