"""Files written by an older mlff (tests/data/legacy, see its README) still work with this one.

A training checkpoint of commit 6915afd resumes, fine-tunes (init_from) and exports to the very
potential that commit exported; that commit's potential file loads and gives its energies and forces.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mlff.checkpoint import load_checkpoint, model_from_checkpoint
from mlff.cli.main import main
from mlff.export import load_potential, read_metadata
from mlff.training import load_config, train

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def legacy_folder(tmp_path, monkeypatch):
    """A copy of the fixture folder as the working directory (the checkpoint's paths are relative to it)."""
    folder = tmp_path / "legacy"
    shutil.copytree(LEGACY, folder)
    monkeypatch.chdir(folder)
    return folder


def energies_and_forces(potential) -> tuple[torch.Tensor, torch.Tensor]:
    """The potential on expected.json's two structures: energy [2] eV, forces [10, 3] eV/A."""
    positions = torch.tensor(EXPECTED["positions_a"], dtype=torch.float64)
    numbers = torch.tensor(EXPECTED["atomic_numbers"])
    batch = torch.tensor(EXPECTED["batch"])
    cell, pbc = torch.zeros(2, 3, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.bool)
    energy, forces = potential(positions, numbers, batch, cell, pbc)
    return energy.detach(), forces.detach()


def assert_expected(potential, rtol: float = 1e-12) -> None:
    energy, forces = energies_and_forces(potential)
    np.testing.assert_allclose(energy.numpy(), EXPECTED["energy_ev"], rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(forces.numpy(), EXPECTED["forces_ev_per_a"], rtol=rtol, atol=1e-9)


def test_the_old_potential_loads_and_gives_its_energies_and_forces():
    potential = load_potential(LEGACY / "potential.pt")
    assert potential.metadata["core_repulsion"]["strength_ev_per_a3"] == 50.0
    assert_expected(potential)
    # The second structure's hydrogens sit inside the core repulsion: the fixture exercises it.
    assert EXPECTED["energy_ev"][1] > EXPECTED["energy_ev"][0]
    # Under a caller's torch.no_grad() the old file alone gives zero forces; through mlff, its forces.
    with torch.no_grad():
        assert_expected(potential)
        assert not energies_and_forces(potential.module)[1].any()


def test_the_old_checkpoint_exports_to_the_same_potential(legacy_folder, capsys):
    output = legacy_folder / "again.pt"
    assert main(["export", "run/best.pt", "-o", str(output), "--core-repulsion", "50", "--no-card"]) == 0
    assert_expected(load_potential(output), rtol=1e-9)
    old, new = read_metadata(LEGACY / "potential.pt"), read_metadata(output)
    # The pairs the old file had onsets for keep them; those it left off (one C, one O: C-C and O-O
    # never meet, onset 0) now have the covalent-radii floor, and no fixture structure reaches it.
    new_onsets, old_onsets = np.array(new["core_repulsion"]["onsets_a"]), np.array(old["core_repulsion"]["onsets_a"])
    seen = np.array(new["core_repulsion"]["onset_sources"]) == "seen"
    np.testing.assert_array_equal(seen, old_onsets > 0)
    np.testing.assert_array_equal(new_onsets[seen], old_onsets[seen])
    assert (new_onsets[~seen] > 0).all()
    assert new["species"] == old["species"] and new["reference"] == old["reference"]


def test_the_old_checkpoint_rebuilds_its_model(legacy_folder):
    checkpoint = load_checkpoint("run/best.pt")
    for weights in ("ema", "raw"):
        model = model_from_checkpoint(checkpoint, weights)
        assert float(model.priors["core_repulsion"].strength) == 0.0
        assert torch.isfinite(energies_and_forces(model.double())[0]).all()


def test_the_old_checkpoint_resumes_training(legacy_folder):
    shutil.copy("run/best.pt", "run/last.pt")
    config = load_config("run/config.yaml", ["train.epochs=2"])
    result = train(config, resume=True, progress=False)
    assert result.epochs_run == 2
    assert [entry["epoch"] for entry in load_checkpoint("run/last.pt")["history"]] == [1, 2]


def test_the_old_checkpoint_is_a_starting_point_for_fine_tuning(legacy_folder):
    config = load_config("run/config.yaml", ["output_dir=finetuned", "init_from=run/best.pt", "train.epochs=1"])
    train(config, progress=False)
    tuned = load_checkpoint("finetuned/best.pt")
    old = load_checkpoint("run/best.pt")
    assert tuned["data_summary"]["init_from"] == "run/best.pt"
    assert set(tuned["model_state"]) == set(old["model_state"])
