"""The wheel, not the checkout: built from the sources, installed with --no-deps into a fresh virtual
environment, it runs the README's main job and a by-name `MLFFCalculator` from an unrelated directory.

The new environment sees the installed dependencies (torch is not downloaded again) through
`--system-site-packages` and, when the tests themselves run in a virtual environment (as CI's
.ci/run does), through a .pth line naming that environment's site-packages. A .pth line adds a
plain path entry, so the editable install of mlff living there (its own .pth and import hook) is
never activated: the only mlff the new environment can import is the wheel's, which the test checks.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from conftest import require_module

from mlff import MLFFCalculator

ROOT = Path(__file__).resolve().parents[1]
# What a source distribution of mlff holds: the package and the data folders it installs.
SOURCES = ("pyproject.toml", "README.md", "mlff", "potentials", "md", "examples")

BY_NAME = r"""
import json, sys
import mlff, mlff.resources
from ase import Atoms
from mlff import MLFFCalculator

calculator = MLFFCalculator("ethanol")
reference = calculator.potential.metadata["reference"]
atoms = Atoms(numbers=reference["atomic_numbers"], positions=reference["start_positions"][0])
atoms.calc = calculator
print(json.dumps({
    "mlff": mlff.__file__,
    "potential": str(mlff.resources.potential_path("ethanol")),
    "energy": atoms.get_potential_energy(),
    "forces": atoms.get_forces().tolist(),
}))
"""


def run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `command` in `cwd` without PYTHONPATH (nothing may lead back to the checkout); fail with its output."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, f"{command} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed


def build_wheel(destination: Path) -> Path:
    """The wheel built from a copy of the sources (the checkout's build/ and egg-info stay untouched)."""
    source = destination / "source"
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name)
    dist = destination / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)]
    run([*command, str(source)], destination)
    (wheel,) = dist.glob("mlff-*.whl")
    return wheel


def make_environment(directory: Path) -> Path:
    """A virtual environment without pip that sees this one's packages; returns its python."""
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(directory)], directory.parent)
    python = directory / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], directory)
    ours = [path for path in site.getsitepackages() if Path(path).is_dir()]
    if sys.prefix != sys.base_prefix:
        Path(purelib.stdout.strip(), "parent_environment.pth").write_text("\n".join(ours) + "\n")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(wheel, the new environment's python, an empty working directory outside the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(root)
    python = make_environment(root / "venv")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q"]
    run([*install, str(wheel)], root)
    work = root / "work"
    work.mkdir()
    return wheel, python, work


def test_the_wheel_ships_every_package_and_the_data(installed):
    wheel = installed[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(path.parent.relative_to(ROOT).as_posix() for path in (ROOT / "mlff").rglob("__init__.py"))
    missing = [package for package in packages if f"{package}/__init__.py" not in names]
    assert not missing, f"packages missing from the wheel (add them to pyproject.toml's packages): {missing}"
    for potential in sorted((ROOT / "potentials").glob("*.pt")):
        for suffix in (".pt", ".yaml"):
            assert f"mlff/potentials/{potential.stem}{suffix}" in names
        assert f"mlff/potentials/configs/{potential.stem}.yaml" in names
    for protocol in sorted((ROOT / "md").glob("*.yaml")):
        assert f"mlff/protocols/{protocol.name}" in names
    assert "mlff/examples/rmd17_ethanol.yaml" in names
    assert not any(name.startswith(("potentials/", "md/", "examples/", "tests/")) for name in names)


def test_by_name_calculator_from_the_wheel(installed):
    _, python, work = installed
    result = json.loads(run([str(python), "-c", BY_NAME], work).stdout.splitlines()[-1])
    environment = python.parent.parent
    assert Path(result["mlff"]).is_relative_to(environment), f"imported {result['mlff']}, not the wheel's mlff"
    assert Path(result["potential"]).is_relative_to(environment)
    here = MLFFCalculator("ethanol")
    reference = here.potential.metadata["reference"]
    atoms = Atoms(numbers=reference["atomic_numbers"], positions=reference["start_positions"][0])
    atoms.calc = here
    assert result["energy"] == pytest.approx(atoms.get_potential_energy(), rel=1e-6)
    np.testing.assert_allclose(result["forces"], atoms.get_forces(), rtol=1e-4, atol=1e-5)


def test_quick_stability_job_from_the_wheel(installed):
    """The README's main command (`mlff bench stability --quick --molecules ethanol`), shortened to 100 fs,
    and `mlff md` of a shipped potential with a shipped protocol, both by name."""
    _, python, work = installed
    mlff = str(python.parent / "mlff")
    bench = run([mlff, "bench", "stability", "--quick", "--molecules", "ethanol", "--time", "100fs"], work)
    assert "| ethanol " in bench.stdout
    report = json.loads((work / "runs" / "stability" / "stability.json").read_text())
    (row,) = report["rows"]
    assert report["protocol"] == "md/md17-stability-cpu.yaml (100fs)"
    assert Path(row["potential"]).is_relative_to(python.parent.parent), "the wheel's own ethanol potential"
    assert row["seeds"] == 5 and row["collapsed_seeds"] == 0
    md = run([mlff, "md", "ethanol", "--protocol", "quick-500k", "--steps", "100", "--no-progress"], work)
    assert "stability: stable" in md.stdout


def test_ci_fails_where_a_missing_optional_dependency_would_skip(monkeypatch):
    """What .ci/run relies on: with CI=true, require_module fails the test instead of skipping it."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and mlff_no_such_module cannot be imported"):
        require_module("mlff_no_such_module")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="mlff_no_such_module is not installed"):
        require_module("mlff_no_such_module")
    assert require_module("numpy") is np
