"""The potentials shipped in potentials/: loadable, described by their cards, accurate, stable."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlff.dynamics import MDSettings, run_md
from mlff.evaluate import evaluate_file
from mlff.export import load_potential

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
POTENTIALS = sorted((ROOT / "potentials").glob("*.pt"))
SHARED_MD17 = ROOT.parent / "shared" / "data" / "md17"


@pytest.mark.parametrize("path", POTENTIALS, ids=lambda p: p.stem)
def test_card_describes_the_file(path):
    card = yaml.safe_load(path.with_suffix(".yaml").read_text())
    metadata = load_potential(path).metadata
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["test_metrics"] == metadata["test_metrics"]
    assert card["training"]["command"].startswith("mlff train ")
    assert path.stat().st_size < 5 * 2**20
    assert metadata["reference"]["start_positions"], "a shipped potential carries its start frames"


@pytest.mark.parametrize("path", POTENTIALS, ids=lambda p: p.stem)
def test_test_split_error_matches_the_card(path):
    card = yaml.safe_load(path.with_suffix(".yaml").read_text())
    data = SHARED_MD17 / Path(card["data"]["file"]).name
    if not data.is_file():
        pytest.skip(f"{data} not present")
    result = evaluate_file(path, data, split="test")
    assert result["frames"] == card["test_metrics"]["frames"]
    assert result["force_mae_mev_per_a"] == pytest.approx(card["test_metrics"]["force_mae_mev_per_a"], rel=0.02)
    assert result["energy_mae_mev"] == pytest.approx(card["test_metrics"]["energy_mae_mev"], rel=0.05)


@pytest.mark.parametrize("path", POTENTIALS, ids=lambda p: p.stem)
def test_short_md_at_500k_stays_bonded(path):
    settings = MDSettings(steps=200, timestep_fs=0.5, temperature_k=500.0, thermostat="langevin", save_every=20)
    summary = run_md(path, None, settings)
    assert not summary["stability"]["collapsed"]
    assert np.isfinite(summary["stability"]["mean_temperature_k"])
    assert summary["stability"]["hr_mae"] is not None, "a shipped potential carries the dataset h(r)"
