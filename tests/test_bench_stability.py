"""`mlff bench stability`: the table over potentials, reports, reuse of finished runs."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from synthetic import write_md17_npz

from mlff.bench.stability import seed_ranges, shipped_targets
from mlff.cli.bench_stability import parse_part, protocol_label
from mlff.cli.main import main
from mlff.data.fetch import MOLECULES
from mlff.dynamics import load_protocol
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


def test_seeds_run_as_parts_give_the_one_batch_row(potential_file, tmp_path):
    """`--part 1/2` and `--part 2/2` (two processes' worth of seeds) merge into the row one batch
    gives: each seed starts from its own frame with its own seed whatever process runs it."""
    import h5py

    from mlff.dynamics.runner import can_resume, merge_runs

    data = write_md17_npz(tmp_path / "mol.npz", num_frames=120)
    protocol = tmp_path / "warm.yaml"
    protocol.write_text("time: 20fs\ntimestep_fs: 0.5\ntemperature_k: 300.0\nthermostat: nose-hoover\nsave_every: 5\n")
    args = ["bench", "stability", "--potential", str(potential_file), "--data", str(data), "--seeds", "3"]
    args += ["--protocol", str(protocol)]
    assert main([*args, "-o", str(tmp_path / "batch")]) == 0
    parts = tmp_path / "parts"
    assert main([*args, "--part", "1/2", "-o", str(parts)]) == 0
    assert not (parts / "stability.json").exists(), "no row until every part has run"
    with pytest.raises(ValueError, match="do not follow on"):
        merge_runs([parts / "tiny" / "part1of2", tmp_path / "batch" / "tiny"], tmp_path / "bad")
    assert main([*args, "--part", "2/2", "-o", str(parts)]) == 0
    (batch,) = json.loads((tmp_path / "batch" / "stability.json").read_text())["rows"]
    (merged,) = json.loads((parts / "stability.json").read_text())["rows"]
    assert merged["seeds"] == 3 and merged["processes"] == 2
    assert merged["stable_time_ps"] == batch["stable_time_ps"]
    assert merged["hr_mae"] == pytest.approx(batch["hr_mae"], rel=1e-6)
    one, two = (json.loads((d / "tiny" / "summary.json").read_text()) for d in (tmp_path / "batch", parts))
    deviations = [[e["largest_bond_deviation_a"] for e in s["stability"]["per_replica"]] for s in (one, two)]
    assert deviations[1] == pytest.approx(deviations[0], rel=1e-6) and len(set(deviations[0])) == 3
    with (
        h5py.File(parts / "tiny" / "part2of2" / "replica_0.h5") as a,
        h5py.File(tmp_path / "batch" / "tiny" / "replica_2.h5") as b,
    ):
        assert a["coordinates"][:] == pytest.approx(b["coordinates"][:], abs=1e-5)
    assert (parts / "tiny" / "bond_deviation.png").is_file() and (parts / "tiny" / "hr.png").is_file()
    settings = load_protocol(protocol, replicas=1)
    assert can_resume(parts / "tiny" / "part2of2", "torch", settings, potential_file, 2)
    assert not can_resume(parts / "tiny" / "part2of2", "torch", settings, potential_file, 0)


def test_seed_ranges_split_contiguously():
    assert seed_ranges(5, 2) == [(0, 3), (3, 2)] and seed_ranges(4, 4) == [(0, 1), (1, 1), (2, 1), (3, 1)]
    with pytest.raises(ValueError, match="cannot split 2 seeds into 3"):
        seed_ranges(2, 3)
    with pytest.raises(ValueError, match="expected I/N"):
        parse_part("2of3")


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
