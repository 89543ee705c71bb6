"""Files shipped inside the package: the potentials, their model cards, MD protocols, example configs.

In the source tree they keep their top-level folders (`potentials/`, `md/`, `examples/`); the
packaging (pyproject.toml, `package-dir`) installs them as the data packages `mlff.potentials`,
`mlff.protocols` and `mlff.examples`, so a wheel carries them and an editable install maps the
same names onto the checkout. They are found through `importlib.resources`, never through this
file's location.

    from mlff.resources import potential_path, protocol_path
    potential_path("ethanol")        # the shipped potentials/ethanol.pt
    potential_path("my/model.pt")    # a path is returned as given
    protocol_path("quick-500k")      # md/quick-500k.yaml
"""

import os
from importlib import resources
from pathlib import Path

POTENTIALS_PACKAGE = "mlff.potentials"
PROTOCOLS_PACKAGE = "mlff.protocols"
EXAMPLES_PACKAGE = "mlff.examples"


def _package_dir(package: str) -> Path:
    """The folder of a data package on disk (wheels and editable installs both install plain folders)."""
    return Path(str(resources.files(package)))


def potentials_dir() -> Path:
    """The folder of the shipped potentials (`<name>.pt`, card `<name>.yaml`, `configs/<name>.yaml`)."""
    return _package_dir(POTENTIALS_PACKAGE)


def protocols_dir() -> Path:
    """The folder of the shipped MD protocols (`<name>.yaml`)."""
    return _package_dir(PROTOCOLS_PACKAGE)


def examples_dir() -> Path:
    """The folder of the example training configs (`<name>.yaml`)."""
    return _package_dir(EXAMPLES_PACKAGE)


def _names(directory: Path, suffix: str) -> list[str]:
    """The stems of the files `*<suffix>` in a data package's folder, sorted."""
    return sorted(path.stem for path in directory.glob(f"*{suffix}"))


def shipped_potentials() -> list[str]:
    """Names of the shipped potentials (one per MD17 molecule), sorted."""
    return _names(potentials_dir(), ".pt")


def shipped_protocols() -> list[str]:
    """Names of the shipped MD protocols, sorted."""
    return _names(protocols_dir(), ".yaml")


def _existing_or_shipped(name_or_path: str | os.PathLike, name: str, directory: Path, suffix: str, kind: str) -> Path:
    """`name_or_path` if it is an existing file, else the shipped `<directory>/<name><suffix>`.

    Raises:
        FileNotFoundError: neither; the message lists the shipped names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    names = _names(directory, suffix)
    if name in names:
        return directory / f"{name}{suffix}"
    raise FileNotFoundError(
        f"no {kind} file {str(name_or_path)!r} and no shipped {kind} of that name; shipped: {', '.join(names)}"
    )


def potential_path(name_or_path: str | os.PathLike) -> Path:
    """The file of a potential given by shipped name ("ethanol") or by path.

    An existing file wins over a shipped name of the same spelling, so a local `ethanol` file is
    never shadowed.

    Raises:
        FileNotFoundError: neither an existing file nor a shipped name; the message lists the names.
    """
    return _existing_or_shipped(name_or_path, str(name_or_path), potentials_dir(), ".pt", "potential")


def protocol_path(name_or_path: str | os.PathLike) -> Path:
    """The YAML file of an MD protocol given by shipped name ("quick-500k", "md17-stability-cpu"),
    by shipped file name ("md/quick-500k.yaml", as the README writes it) or by path.

    Raises:
        FileNotFoundError: neither an existing file nor a shipped protocol; the message lists the names.
    """
    path = Path(name_or_path)
    stem = path.stem if path.suffix == ".yaml" and path.parent in (Path("."), Path("md")) else str(name_or_path)
    return _existing_or_shipped(name_or_path, stem, protocols_dir(), ".yaml", "protocol")


def example_config_path(name: str) -> Path:
    """A shipped example training config by file name ("rmd17_ethanol.yaml") or stem.

    Raises:
        FileNotFoundError: no such example config; the message lists them.
    """
    stem = name.removesuffix(".yaml")
    path = examples_dir() / f"{stem}.yaml"
    if path.is_file():
        return path
    raise FileNotFoundError(f"no example config {name!r}; shipped: {', '.join(_names(examples_dir(), '.yaml'))}")
