"""Lazy imports of the optional labelling packages (tblite, pyscf, rdkit).

They are imported where a calculation needs them, never at module import, so that
`mlff` works without them; a missing one is an error naming the extra to install.
"""

import importlib
import importlib.util
from types import ModuleType

GENERATE_EXTRA = "generate"


class MissingDependencyError(ImportError):
    """An optional package needed for this operation is not installed (the message names the extra)."""


def import_optional(module: str, purpose: str) -> ModuleType:
    """Import `module` (e.g. "pyscf.dft"); MissingDependencyError naming `purpose` and the extra if it is absent."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        raise MissingDependencyError(
            f"{purpose} needs the package {package!r}, which is not installed ({error}); "
            f"install it with: pip install 'mlff[{GENERATE_EXTRA}]'"
        ) from error


def require(package: str, purpose: str) -> None:
    """MissingDependencyError (naming `purpose` and the extra) if top-level `package` is not installed.

    Finds the package without importing it: the generator checks in the parent process,
    before starting workers, so a missing package is one clear error, not one per molecule.
    """
    if importlib.util.find_spec(package) is None:
        raise MissingDependencyError(
            f"{purpose} needs the package {package!r}, which is not installed; "
            f"install it with: pip install 'mlff[{GENERATE_EXTRA}]'"
        )
