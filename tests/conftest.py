"""Shared fixtures: a tiny energy model, its exported potential file, small molecules.

Fixture names are specific (tiny_*, potential_file, methanol, water) so test
modules can keep their own module-level fixtures without clashes.
"""

import importlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from mlff.encodings import build_encoding
from mlff.export import export_model
from mlff.models import Backbone, EnergyModel, ModelConfig, build_model
from mlff.models.neighbors import Edges

# The shared rMD17 files (9,633 frames each: the published splits) for tests that read whole
# datasets; tests skip when they are absent, so pass only where the data really is.
SHARED_MD17 = Path(__file__).resolve().parents[2] / "shared" / "data" / "md17"

TINY_SPECIES = [1, 6, 8]


def running_in_ci() -> bool:
    """True when the environment says CI=true (as GitHub Actions and most CI services set it)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require_module(name: str) -> ModuleType:
    """The module `name`; skips the test (or module) when it is not installed, except under CI=true,
    where a missing optional dependency (openmm-torch, tblite, pyscf, rdkit) fails instead: CI
    installs `.[test]`, so a skip there would hide a broken install."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        if running_in_ci():
            pytest.fail(f"CI=true and {name} cannot be imported ({error}): install mlff[test]", pytrace=False)
        pytest.skip(f"{name} is not installed ({error})")


def load_script(path: Path, name: str) -> ModuleType:
    """A script of the repository (examples/, scripts/: not packages) imported as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Not representable in float32: a float32 reference energy would show up as ~1e-4 eV errors.
TINY_ELEMENT_ENERGIES_EV = [-13.6057, -1029.8765, -2041.2345]
TINY_ENERGY_SCALE_EV = 0.5


# Tiny sizes of every backbone: hidden 16, 2 layers (and 2 heads where it has heads).
TINY_BACKBONE_OPTIONS = {
    "egnn": {"hidden": 16, "layers": 2},
    "transformer": {"hidden": 16, "heads": 2, "layers": 2},
    "et": {"hidden": 16, "heads": 2, "layers": 2},
}


def tiny_config(dtype: str = "float64", backbone: str = "egnn") -> ModelConfig:
    """A small `backbone` + spline architecture (EGNN: about 4k parameters)."""
    return ModelConfig(
        backbone=backbone,
        backbone_options=dict(TINY_BACKBONE_OPTIONS[backbone]),
        encoding_size=8,
        encoding_options={"n_bins": 16},
        dtype=dtype,
    )


def build_tiny_model(dtype: str = "float64", seed: int = 0, backbone: str = "egnn") -> EnergyModel:
    """The tiny model with weights drawn from `seed` (global RNG state left untouched)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        config = tiny_config(dtype, backbone)
        return build_model(config, TINY_SPECIES, TINY_ELEMENT_ENERGIES_EV, TINY_ENERGY_SCALE_EV)


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """torch on one CPU thread for a test module: tiny models run ~10x faster on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_model() -> EnergyModel:
    """A fresh float64 tiny model (seed 0), in eval mode."""
    return build_tiny_model().eval()


@pytest.fixture(scope="session")
def potential_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed-0 tiny model exported as a float64 potential file (do not modify)."""
    path = tmp_path_factory.mktemp("potential") / "tiny.pt"
    return export_model(build_tiny_model(), path, {"test_metrics": {"force_mae_mev_per_a": 12.5}}, config=tiny_config())


@pytest.fixture
def methanol() -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers [6] and positions [6, 3] Angstrom of a methanol-like molecule."""
    numbers = np.array([6, 8, 1, 1, 1, 1])
    positions = np.array(
        [
            [0.0, 0.0, 0.0],
            [1.43, 0.0, 0.0],
            [-0.36, 1.03, 0.0],
            [-0.36, -0.51, 0.89],
            [-0.36, -0.51, -0.89],
            [1.75, 0.90, 0.05],
        ]
    )
    return numbers, positions


@pytest.fixture
def water() -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers [3] and positions [3, 3] Angstrom of a water molecule."""
    return np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.1], [0.76, 0.0, -0.47], [-0.76, 0.0, -0.47]])


class SpringBackbone(Backbone):
    """Harmonic springs of rest length r0 between every pair in the cutoff: a potential with a known minimum."""

    def __init__(self, num_species: int, encoding, stiffness_ev_per_a2: float = 20.0, rest_length_a: float = 1.2):
        super().__init__(num_species, encoding)
        self.stiffness = float(stiffness_ev_per_a2)
        self.rest_length = float(rest_length_a)

    def forward(self, species: torch.Tensor, edges: Edges) -> torch.Tensor:
        # Each unordered pair appears twice (i->j, j->i): 0.25 k dr^2 each.
        pair_energy = 0.25 * self.stiffness * (edges.distances - self.rest_length) ** 2
        return torch.zeros(species.size(0), dtype=pair_energy.dtype, device=pair_energy.device).index_add(
            0, edges.index[0], pair_energy
        )


@pytest.fixture(scope="session")
def spring_potential_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A potential of H atoms joined by 1.2 A springs (a known minimum), float64."""
    backbone = SpringBackbone(1, build_encoding("gaussian", 4, 5.0))
    model = EnergyModel(backbone, [1], [-13.6], 1.0).to(torch.float64)
    return export_model(model, tmp_path_factory.mktemp("spring") / "spring.pt")
