"""Every command that takes a potential file also takes a shipped potential's name (`mlff.resources`)."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import require_module

from mlff.cli.main import main
from mlff.export import PotentialError, PotentialNotFoundError, load_potential, read_metadata, resolve_potential
from mlff.resources import potential_path, shipped_potentials

pytestmark = pytest.mark.usefixtures("single_thread")

CHECK_FRAMES = Path(__file__).parent / "data" / "check_frames" / "ethanol.npz"


def test_load_potential_and_read_metadata_take_a_shipped_name():
    shipped = potential_path("ethanol")
    assert resolve_potential("ethanol") == shipped
    assert read_metadata("ethanol") == read_metadata(shipped)
    potential = load_potential("ethanol")
    assert potential.metadata == read_metadata(shipped)
    assert sorted(potential.species) == [1, 6, 8]


def test_an_existing_path_wins_over_a_shipped_name(potential_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(potential_file, tmp_path / "ethanol")
    assert resolve_potential("ethanol") == Path("ethanol")
    assert read_metadata("ethanol") == read_metadata(potential_file), "the local file, not the shipped ethanol"


def test_an_unknown_name_lists_the_shipped_ones(capsys):
    names = ", ".join(shipped_potentials())
    with pytest.raises(PotentialNotFoundError, match=f"shipped: {names}") as raised:
        load_potential("ethanoll")
    assert isinstance(raised.value, PotentialError) and isinstance(raised.value, FileNotFoundError)
    assert main(["info", "ethanoll"]) == 2
    assert f"shipped: {names}" in capsys.readouterr().err


def test_info_of_a_shipped_name_prints_its_metadata(capsys):
    assert main(["info", "ethanol"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == str(potential_path("ethanol"))
    assert "H C O (Z = 1, 6, 8)" in text and "test_metrics.force_mae_mev_per_a" in text
    assert main(["info", "ethanol", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == read_metadata(potential_path("ethanol"))


def test_eval_of_a_shipped_name(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "ethanol", str(CHECK_FRAMES), "--split", "all", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["kind"] == "potential" and result["frames"] == 50
    card = read_metadata("ethanol")["test_metrics"]["force_mae_mev_per_a"]
    assert 0 < result["force_mae_mev_per_a"] < 3 * card, "the shipped ethanol potential on its check frames"


def test_bench_speed_and_md_of_a_shipped_name(tmp_path):
    speed = tmp_path / "speed.json"
    assert main(["bench", "speed", "ethanol", "--calls", "2", "-o", str(speed)]) == 0
    (row,) = json.loads(speed.read_text())
    assert row["atoms"] == 9 and row["calls_per_second"] > 0
    md = tmp_path / "md.json"
    args = ["bench", "md", "ethanol", "--engines", "torch:1", "--steps", "2", "--rounds", "1", "--warmup", "1"]
    assert main([*args, "-o", str(md)]) == 0
    (row,) = json.loads(md.read_text())
    assert row["atoms"] == 9 and row["steps_per_second"] > 0


def test_bench_openmm_of_a_shipped_name(tmp_path):
    require_module("openmmtorch")
    out = tmp_path / "openmm.json"
    args = ["bench", "openmm", "ethanol", "--steps", "2", "--warmup", "1", "--rounds", "1", "-o", str(out)]
    assert main(args) == 0
    rows = json.loads(out.read_text())
    assert [row["engine"] for row in rows] == ["torchforce", "pythonforce", "ase"]
    assert all(row["atoms"] == 9 for row in rows)


def test_inspect_of_a_shipped_name(tmp_path, capsys):
    out = tmp_path / "inspect"
    assert main(["inspect", "ethanol", "--points", "20", "-o", str(out)]) == 0
    assert "ethanol" in capsys.readouterr().out
    assert (out / "metrics.json").is_file()
