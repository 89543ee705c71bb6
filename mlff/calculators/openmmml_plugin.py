"""openmm-ml plugin: `MLPotential('mlff', modelPath='ethanol')` (a shipped potential) or a file path.

Registered under the `openmmml.potentials` entry-point group as `mlff`. openmm-ml
imports this module and instantiates its factory whenever `openmmml` is imported,
so it imports nothing but the standard library at module level (not torch, not
even openmmml, which would import this module again mid-import) and cannot raise
at import. The factory is duck-typed (openmm-ml calls only `createImpl`); the
implementation, an `MLPotentialImpl` subclass, lives in
`mlff.calculators.openmmml_impl` and is imported on first use.

    from openmmml import MLPotential
    potential = MLPotential("mlff", modelPath="ethanol")       # or modelPath="my/potential.pt"
    system = potential.createSystem(topology, precision="single")
    mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)

Arguments of `MLPotential(...)`: `modelPath` (required: a shipped potential's name, as
`mlff.resources.shipped_potentials()` lists them, or a potential file) and `precision`
("single", "double" or None for the file's dtype); `createSystem` and `createMixedSystem` take
`precision` too, overriding the constructor's. (A `name=` keyword cannot exist: `MLPotential`'s
own first argument is called `name`.)
"""

from typing import Any

PRECISIONS = ("single", "double")


class MLFFPotentialImplFactory:
    """Creates `MLFFPotentialImpl` objects for the potential name "mlff" (an openmm-ml MLPotentialImplFactory)."""

    def createImpl(self, name: str, modelPath: str | None = None, precision: str | None = None, **args: Any) -> Any:  # noqa: N802, N803
        """The openmmml `MLPotentialImpl` for a shipped potential's name or a potential file.

        Raises:
            ValueError: no modelPath, an unknown precision, or an unknown argument.
            FileNotFoundError: modelPath is neither a file nor a shipped name (the message lists them).
        """
        if modelPath is None:
            raise ValueError("MLPotential('mlff') needs modelPath=<shipped potential name or potential file .pt>")
        if args:
            unknown = sorted(args)
            raise ValueError(f"MLPotential('mlff') got unknown argument(s) {unknown}; it takes modelPath, precision")
        check_precision(precision)
        from mlff.calculators.openmmml_impl import MLFFPotentialImpl
        from mlff.resources import potential_path

        return MLFFPotentialImpl(str(potential_path(modelPath)), precision)


def check_precision(precision: str | None) -> None:
    """Raise ValueError unless precision is "single", "double" or None."""
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be 'single' or 'double' (or None for the file's dtype), got {precision!r}")
