"""The levels of theory that label data (`mlff data generate|label|minimize --method`, `mlff learn`'s label.method).

One table, one line per method. It lives outside `mlff.data` and imports nothing heavy, so the
CLI can offer the names as choices while building its parser (which imports no numpy or ase);
`mlff.data.generate.make_calculator` builds the calculators from it.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """A level of theory.

    Attributes:
        name: the name given to --method and written to every labelled frame's `info["method"]`.
        package: the optional package its calculator needs ("tblite" or "pyscf"; the `generate` extra has both).
        theory: what that package is asked for: tblite's method name, or pyscf's exchange-correlation functional.
        basis: pyscf's basis set (None for the xTB methods, which have none).
    """

    name: str
    package: str
    theory: str
    basis: str | None = None


METHOD_TABLE: dict[str, Method] = {
    method.name: method
    for method in (
        Method("gfn2-xtb", "tblite", "GFN2-xTB"),
        Method("gfn1-xtb", "tblite", "GFN1-xTB"),
        Method("pbe/def2-svp", "pyscf", "pbe", "def2-svp"),
    )
}
METHODS: tuple[str, ...] = tuple(METHOD_TABLE)


def get_method(name: str) -> Method:
    """The table's entry for `name`; ValueError naming the known methods if there is none."""
    if name not in METHOD_TABLE:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHOD_TABLE[name]
