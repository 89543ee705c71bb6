"""openmm-ml's `MLPotentialImpl` for mlff potential files (see mlff.calculators.openmmml_plugin)."""

from collections.abc import Iterable
from typing import Any

from openmmml.mlpotential import MLPotentialImpl

from mlff.calculators.openmmml_plugin import check_precision


class MLFFPotentialImpl(MLPotentialImpl):
    """An mlff potential file added to a System as an `openmmtorch.TorchForce`.

    Args:
        model_path: the potential file (.pt), or a shipped potential's name. A periodic topology or
            system (`createSystem` on a topology with box vectors, `createMixedSystem` with PME) needs a
            format v2 file: the TorchForce then uses periodic boundary conditions.
        precision: default network precision, "single", "double" or None (the file's dtype).
    """

    def __init__(self, model_path: str, precision: str | None = None) -> None:
        self.model_path = model_path
        self.precision = precision

    def addForces(  # noqa: N802
        self,
        topology: Any,
        system: Any,
        atoms: Iterable[int] | None,
        forceGroup: int,  # noqa: N803
        **args: Any,
    ) -> None:
        """Add the TorchForce for `atoms` (None: all) to `system` in force group `forceGroup`.

        `precision` in args overrides the constructor's; other args (embedding
        options openmm-ml passes along) are ignored.

        Raises:
            ValueError: periodic topology or system with a format v1 file, or an element the
                potential does not know.
        """
        from mlff.calculators.openmm import add_ml_force

        precision = args.get("precision", self.precision)
        check_precision(precision)
        ml_atoms = None if atoms is None else list(atoms)
        add_ml_force(system, topology, self.model_path, ml_atoms, precision, forceGroup)

    def getMLLongRange(self) -> bool:  # noqa: N802
        """mlff potentials are local: every interaction lies within the cutoff."""
        return False
