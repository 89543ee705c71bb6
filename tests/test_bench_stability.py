"""`mlff bench stability`: the table over potentials, reports, reuse of finished runs."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from synthetic import write_md17_npz

from mlff.bench.stability import shipped_targets
from mlff.cli.bench_stability import protocol_label
from mlff.cli.main import main
from mlff.data.fetch import MOLECULES
from mlff.export.card import write_model_card
from mlff.resources import potentials_dir, protocol_path

pytestmark = pytest.mark.usefixtures("single_thread")


def test_stability_bench_of_a_potential_with_its_dataset(potential_file, tmp_path, capsys):
    data = write_md17_npz(tmp_path / "mol.npz", num_frames=120)
    out = tmp_path / "stability"
    protocol = tmp_path / "cold.yaml"
    protocol.write_text("time: 10fs\ntimestep_fs: 0.5\ntemperature_k: 10.0\nthermostat: nose-hoover\nsave_every: 5\n")
    args = ["bench", "stability", "--potential", str(potential_file), "--data", str(data), "--seeds", "2"]
    args += ["--protocol", str(protocol)]
    assert main([*args, "--time", "20fs", "-o", str(out)]) == 0
    report = json.loads((out / "stability.json").read_text())
    (row,) = report["rows"]
    assert row["molecule"] == "tiny" and row["seeds"] == 2 and len(row["stable_time_ps"]) == 2
    assert row["force_mae_mev_per_a"] == 12.5 and row["hr_mae"] is not None and row["length_ps"] == 0.02
    assert report["settings"]["thermostat"] == "nose-hoover" and report["settings"]["temperature_k"] == 10.0
    assert row["collapsed_seeds"] == 0 and row["stable_time_ps"] == [0.02, 0.02]
    assert table_rows(out / "report.md")[1][:2] == ["tiny", "12.5"] and (out / "tiny" / "hr.png").is_file()
    summary = out / "tiny" / "summary.json"
    written = summary.stat().st_mtime_ns
    assert main([*args, "--time", "20fs", "-o", str(out)]) == 0, "a finished run is reused"
    assert summary.stat().st_mtime_ns == written
    assert main([*args, "--time", "40fs", "-o", str(out)]) == 0, "a longer run continues the shorter one"
    assert json.loads(summary.read_text())["throughput"]["steps"] == 80
    assert "| tiny " in capsys.readouterr().out


def test_the_compiled_engine_runs_the_protocol(potential_file, tmp_path, monkeypatch):
    """`--engine torch-compiled`: the same MD through the padded graph (traced only here: a real
    compile takes minutes), so its rows equal the torch engine's, and the row names its engine."""
    from mlff.dynamics.compiled import CompiledTorchEngine

    original = CompiledTorchEngine.__init__

    def traced_only(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "compile": False})

    monkeypatch.setattr(CompiledTorchEngine, "__init__", traced_only)
    data = write_md17_npz(tmp_path / "mol.npz", num_frames=120)
    protocol = tmp_path / "cold.yaml"
    protocol.write_text("time: 20fs\ntimestep_fs: 0.5\ntemperature_k: 10.0\nthermostat: nose-hoover\nsave_every: 5\n")
    args = ["bench", "stability", "--potential", str(potential_file), "--data", str(data), "--seeds", "2"]
    args += ["--protocol", str(protocol)]
    rows = {}
    for engine in ("torch", "torch-compiled"):
        assert main([*args, "--engine", engine, "-o", str(tmp_path / engine)]) == 0
        (rows[engine],) = json.loads((tmp_path / engine / "stability.json").read_text())["rows"]
    assert rows["torch-compiled"]["engine"] == "torch-compiled" and rows["torch"]["engine"] == "torch"
    assert rows["torch-compiled"]["hr_mae"] == pytest.approx(rows["torch"]["hr_mae"], rel=1e-9)
    assert rows["torch-compiled"]["stable_time_ps"] == rows["torch"]["stable_time_ps"]


def table_rows(path) -> list[list[str]]:
    """The cells of every Markdown table row in a file, header first."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_shipped_targets_pick_molecules(potential_file, tmp_path):
    for name in ("ethanol", "aspirin"):
        shutil.copy(potential_file, tmp_path / f"{name}.pt")
    assert [t.name for t in shipped_targets(tmp_path)] == ["aspirin", "ethanol"]
    assert [t.name for t in shipped_targets(tmp_path, ["ethanol"])] == ["ethanol"]
    with pytest.raises(ValueError, match="benzene"):
        shipped_targets(tmp_path, ["benzene"])
    with pytest.raises(ValueError, match="no potential files"):
        shipped_targets(tmp_path / "empty")


def test_update_cards_records_each_row_in_the_potentials_card(potential_file, tmp_path):
    directory = tmp_path / "potentials"
    directory.mkdir()
    potential = shutil.copy(potential_file, directory / "ethanol.pt")
    card_path = write_model_card(potential)
    before = yaml.safe_load(card_path.read_text())
    protocol = tmp_path / "cold.yaml"
    protocol.write_text("time: 10fs\ntimestep_fs: 0.5\ntemperature_k: 10.0\nthermostat: nose-hoover\nsave_every: 5\n")
    data = write_md17_npz(tmp_path / "mol.npz", num_frames=120)
    args = ["bench", "stability", "--potential", str(potential), "--data", str(data), "--seeds", "2"]
    args += ["--protocol", str(protocol)]
    assert main([*args, "--update-cards", "-o", str(tmp_path / "out")]) == 0
    card = yaml.safe_load(card_path.read_text())
    row = json.loads((tmp_path / "out" / "stability.json").read_text())["rows"][0]
    assert card["stability"]["protocol"] == str(protocol)
    assert card["stability"]["stable_time_ps"] == row["stable_time_ps"] == [0.01, 0.01]
    assert card["stability"]["steps_per_second"] == row["steps_per_second"]
    assert {key: value for key, value in card.items() if key != "stability"} == before


def test_defaults_are_the_shipped_potentials_and_protocol(tmp_path):
    """Found inside the package, labelled as in the source tree whatever the install."""
    assert [target.name for target in shipped_targets(potentials_dir())] == sorted(MOLECULES)
    assert protocol_label(protocol_path("md17-stability-cpu")) == "md/md17-stability-cpu.yaml"
    assert protocol_label(protocol_path("md/quick-500k.yaml")) == "md/quick-500k.yaml"
    other = tmp_path / "mine.yaml"
    other.write_text("steps: 10\n")
    assert protocol_label(protocol_path(other)) == str(other)
    shipped = "shipped: md17-stability, md17-stability-cpu, md17-stability-langevin, quick-500k"
    with pytest.raises(FileNotFoundError, match=shipped):
        protocol_path("quick-500")


def test_a_run_over_some_molecules_keeps_the_other_rows():
    from mlff.bench.stability import merged_rows

    def row(name, value):
        return {"molecule": name, "stable_time_ps_mean": value}

    settings = {"temperature_k": 500.0, "steps": 10}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stability.json"
        assert merged_rows(path, [row("b", 1.0)], settings, "p") == [row("b", 1.0)], "no file yet"
        path.write_text(json.dumps({"protocol": "p", "settings": settings, "rows": [row("a", 1.0), row("b", 2.0)]}))
        assert merged_rows(path, [row("b", 3.0), row("c", 4.0)], settings, "p") == [
            row("a", 1.0),
            row("b", 3.0),
            row("c", 4.0),
        ], "b replaced in place, c appended, a kept"
        assert merged_rows(path, [row("c", 4.0)], settings, "other") == [row("c", 4.0)], "another protocol"
        assert merged_rows(path, [row("c", 4.0)], {**settings, "steps": 20}, "p") == [row("c", 4.0)]
