"""The potentials shipped in potentials/: one per MD17 molecule, loadable without mlff, described by
their cards, reproducing the cards' errors, stable.

The cards' check frames (50 test frames per molecule) live in tests/data/check_frames/<molecule>.npz,
copied from the rMD17 files of ../shared/data/md17, so the errors are checked wherever the tests run.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SHARED_MD17

from mlff.data.fetch import MOLECULES
from mlff.dynamics import MDSettings, run_md
from mlff.export import load_potential
from mlff.resources import potentials_dir
from mlff.training import load_config

pytestmark = pytest.mark.usefixtures("single_thread")

POTENTIALS = sorted(potentials_dir().glob("*.pt"))
CHECK_FRAMES = Path(__file__).parent / "data" / "check_frames"

# Run in a fresh interpreter where `import mlff` fails: the file must need torch alone. Prints the
# file's metadata and, given the data file, the errors on the card's check frames.
WITHOUT_MLFF = r"""
import json, sys
sys.modules["mlff"] = None
import numpy as np, torch
from ase.units import kcal, mol

path, data_path, indices = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
extra = {"mlff_metadata.json": ""}
module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
metadata = json.loads(extra["mlff_metadata.json"])
result = {"metadata": metadata}
if data_path:
    data = np.load(data_path)
    dtype = {"float32": torch.float32, "float64": torch.float64}[metadata["dtype"]]
    numbers = torch.as_tensor(data["z"], dtype=torch.long)
    frames, atoms = len(indices), numbers.numel()
    energy, forces = module(
        torch.as_tensor(data["R"][indices].reshape(-1, 3), dtype=dtype),
        numbers.repeat(frames),
        torch.arange(frames).repeat_interleave(atoms),
        torch.zeros(frames, 3, 3, dtype=dtype),
        torch.zeros(frames, 3, dtype=torch.bool),
    )
    kcal_per_mol_ev = kcal / mol
    force_error = forces.double().detach().numpy().reshape(frames, atoms, 3) - data["F"][indices] * kcal_per_mol_ev
    energy_error = energy.double().detach().numpy() - data["E"][indices] * kcal_per_mol_ev
    result["force_mae_mev_per_a"] = float(np.abs(force_error).mean() * 1000.0)
    result["energy_mae_mev"] = float(np.abs(energy_error).mean() * 1000.0)
print(json.dumps(result))
"""


def card_of(path: Path) -> dict:
    return yaml.safe_load(path.with_suffix(".yaml").read_text())


def check_frames_of(path: Path) -> Path:
    """tests/data/check_frames/<molecule>.npz: z, R, E, F of the card's check frames (kcal/mol, A),
    frame_indices into the rMD17 file, source (its name) and source_sha256."""
    return CHECK_FRAMES / f"{path.stem}.npz"


def run_without_mlff(path: Path, data: Path | None, indices: list[int]) -> dict:
    """WITHOUT_MLFF's output for one potential file, run from outside the repository."""
    completed = subprocess.run(
        [sys.executable, "-c", WITHOUT_MLFF, str(path), str(data or ""), json.dumps(indices)],
        capture_output=True,
        text=True,
        cwd=path.anchor,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def test_one_potential_per_md17_molecule_with_its_training_config():
    assert sorted(path.stem for path in POTENTIALS) == sorted(MOLECULES)
    for path in POTENTIALS:
        config = potentials_dir() / "configs" / f"{path.stem}.yaml"
        assert config.is_file(), f"{path.name} has no training config {config}"
        # The config reproduces the card's run: its model, training and split settings are the card's
        # (keys the card's older mlff did not have are left out), whatever command started the run.
        card = card_of(path)
        assert card["training"]["command"].split()[:1] == ["mlff"], card["training"]["command"]
        resolved = load_config(config, [f"data.path=rmd17_{path.stem}.npz"]).to_dict()
        for section, recorded in (("model", card["architecture"]["config"]), ("train", card["training"]["config"])):
            for key, value in recorded.items():
                assert resolved[section][key] == value, f"{config.name}: {section}.{key}"
        for key in ("split", "n_val", "n_train", "n_test", "seed", "train_pool"):
            assert resolved["data"][key] == card["data"]["split"][key], f"{config.name}: data.{key}"
        raw = yaml.safe_load(config.read_text())
        assert Path(raw["data"]["path"]).name == f"rmd17_{path.stem}.npz"
        assert raw["data"]["train_pool"] == "all", "a shipped potential trains on every frame outside the test split"
        # The config pins the dataset it was trained on: the file the check frames were taken from.
        with np.load(CHECK_FRAMES / f"{path.stem}.npz") as check:
            assert raw["data"]["sha256"] == str(check["source_sha256"])


@pytest.mark.parametrize("path", POTENTIALS, ids=lambda p: p.stem)
def test_card_describes_the_file(path):
    card = card_of(path)
    metadata = load_potential(path).metadata
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["test_metrics"] == metadata["test_metrics"]
    assert card["test_metrics"]["frames"] == 1000
    assert path.stat().st_size < 5 * 2**20
    assert metadata["reference"]["start_positions"], "a shipped potential carries its start frames"
    assert len(card["check"]["frame_indices"]) == 50
    with np.load(check_frames_of(path)) as frames:
        assert frames["frame_indices"].tolist() == card["check"]["frame_indices"]
        assert str(frames["source"]) == card["check"]["data"]
        assert frames["R"].shape == frames["F"].shape == (50, len(frames["z"]), 3) and frames["E"].shape == (50,)
    stability = card["stability"]
    assert stability["seeds"] == len(stability["stable_time_ps"]) >= 5
    assert stability["length_ps"] >= 50.0


@pytest.mark.skipif(not SHARED_MD17.is_dir(), reason=f"{SHARED_MD17} not present")
@pytest.mark.parametrize("path", POTENTIALS, ids=lambda p: p.stem)
def test_check_frames_are_the_cards_test_frames_of_the_shared_data(path):
    """The stored check frames are copies of the card's frames of the rMD17 file, all from its test split."""
    card = card_of(path)
    source = SHARED_MD17 / card["check"]["data"]
    indices = card["check"]["frame_indices"]
    with np.load(source) as data, np.load(check_frames_of(path)) as frames:
        assert set(indices) <= set(data["split_test"][0].tolist()), "check frames come from the test split"
        assert str(frames["source_sha256"]) == hashlib.sha256(source.read_bytes()).hexdigest()
        for key in ("R", "F"):
            np.testing.assert_array_equal(frames[key], data[key][indices])
        np.testing.assert_array_equal(frames["E"], data["E"][indices].reshape(-1))
        np.testing.assert_array_equal(frames["z"], data["z"])


@pytest.mark.parametrize("path", POTENTIALS, ids=lambda p: p.stem)
def test_plain_torch_jit_load_reproduces_the_card(path):
    """In a process that cannot import mlff: the file loads, its metadata is the card's, and its
    errors on the card's check frames (stored in tests/data) are the card's."""
    card = card_of(path)
    data = check_frames_of(path)
    assert data.is_file(), f"{data} is missing: the card's check frames belong in the repository"
    result = run_without_mlff(path, data, list(range(len(card["check"]["frame_indices"]))))
    metadata = result["metadata"]
    for card_key, metadata_key in (
        ("species", "species"),
        ("cutoff_angstrom", "cutoff"),
        ("dtype", "dtype"),
        ("mlff_version", "mlff_version"),
        ("format_version", "format_version"),
        ("units", "units"),
        ("architecture", "model"),
        ("core_repulsion", "core_repulsion"),
        ("test_metrics", "test_metrics"),
    ):
        assert card[card_key] == metadata[metadata_key], card_key
    assert card["training"]["command"] == metadata["training"]["command"]
    assert result["force_mae_mev_per_a"] == pytest.approx(card["check"]["force_mae_mev_per_a"], rel=1e-3)
    assert result["energy_mae_mev"] == pytest.approx(card["check"]["energy_mae_mev"], rel=1e-2, abs=0.05)


@pytest.mark.parametrize("path", POTENTIALS, ids=lambda p: p.stem)
def test_short_md_at_500k_stays_bonded(path):
    settings = MDSettings(steps=200, timestep_fs=0.5, temperature_k=500.0, thermostat="langevin", save_every=20)
    summary = run_md(path, None, settings)
    assert not summary["stability"]["collapsed"]
    assert np.isfinite(summary["stability"]["mean_temperature_k"])
    assert summary["stability"]["hr_mae"] is not None, "a shipped potential carries the dataset h(r)"
