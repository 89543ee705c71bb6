"""The potentials shipped in potentials/: one per MD17 molecule, loadable without mlff, described by
their cards, reproducing the cards' errors, stable."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlff.data.fetch import MOLECULES
from mlff.dynamics import MDSettings, run_md
from mlff.export import load_potential

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
POTENTIALS = sorted((ROOT / "potentials").glob("*.pt"))
SHARED_MD17 = ROOT.parent / "shared" / "data" / "md17"

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
        config = ROOT / "potentials" / "configs" / f"{path.stem}.yaml"
        assert config.is_file(), f"{path.name} has no training config {config}"
        assert card_of(path)["training"]["command"] == f"mlff train potentials/configs/{path.stem}.yaml"
        raw = yaml.safe_load(config.read_text())
        assert Path(raw["data"]["path"]).name == f"rmd17_{path.stem}.npz"
        assert raw["data"]["train_pool"] == "all", "a shipped potential trains on every frame outside the test split"


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
    split = np.load(SHARED_MD17 / card["check"]["data"])["split_test"][0] if SHARED_MD17.is_dir() else None
    if split is not None:
        assert set(card["check"]["frame_indices"]) <= set(split.tolist()), "check frames come from the test split"
    stability = card["stability"]
    assert stability["seeds"] == len(stability["stable_time_ps"]) >= 5
    assert stability["length_ps"] >= 50.0


@pytest.mark.parametrize("path", POTENTIALS, ids=lambda p: p.stem)
def test_plain_torch_jit_load_reproduces_the_card(path):
    """In a process that cannot import mlff: the file loads, its metadata is the card's, and its
    errors on the card's check frames are the card's."""
    card = card_of(path)
    data = SHARED_MD17 / card["check"]["data"]
    result = run_without_mlff(path, data if data.is_file() else None, card["check"]["frame_indices"])
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
    if not data.is_file():
        pytest.skip(f"{data} not present: metadata checked, errors not")
    assert result["force_mae_mev_per_a"] == pytest.approx(card["check"]["force_mae_mev_per_a"], rel=1e-3)
    assert result["energy_mae_mev"] == pytest.approx(card["check"]["energy_mae_mev"], rel=1e-2, abs=0.05)


@pytest.mark.parametrize("path", POTENTIALS, ids=lambda p: p.stem)
def test_short_md_at_500k_stays_bonded(path):
    settings = MDSettings(steps=200, timestep_fs=0.5, temperature_k=500.0, thermostat="langevin", save_every=20)
    summary = run_md(path, None, settings)
    assert not summary["stability"]["collapsed"]
    assert np.isfinite(summary["stability"]["mean_temperature_k"])
    assert summary["stability"]["hr_mae"] is not None, "a shipped potential carries the dataset h(r)"
