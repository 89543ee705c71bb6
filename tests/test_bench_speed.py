"""`mlff bench speed`: rows per potential and structure, ratios, JSON."""

import json

import pytest
from ase import Atoms
from ase.io import write

from mlff.bench.speed import speed_benchmark
from mlff.cli.main import main

pytestmark = pytest.mark.usefixtures("single_thread")


def test_rows_and_ratios(potential_file, spring_potential_file, methanol):
    numbers, positions = methanol
    structures = {"methanol": Atoms(numbers=numbers, positions=positions)}
    rows = speed_benchmark([potential_file, potential_file], structures, calls=5)
    assert [row["structure"] for row in rows] == ["methanol", "methanol"]
    assert all(row["calls_per_second"] > 0 and row["atoms"] == 6 for row in rows)
    assert rows[0]["ratio_to_first"] == 1.0 and rows[1]["ratio_to_first"] > 0
    assert rows[0]["backbone"] == "egnn" and rows[0]["encoding"] == "spline"


def test_command_writes_json(spring_potential_file, tmp_path, capsys):
    write(tmp_path / "h3.xyz", Atoms("H3", positions=[[0, 0, 0], [1.2, 0, 0], [0.6, 1.0, 0]]))
    output = tmp_path / "speed.json"
    code = main(
        ["bench", "speed", str(spring_potential_file), "--structure", f"h3={tmp_path / 'h3.xyz'}", "--calls", "3"]
        + ["-o", str(output)]
    )
    assert code == 0 and "calls/s" in capsys.readouterr().out
    rows = json.loads(output.read_text())
    assert rows[0]["structure"] == "h3" and rows[0]["atoms"] == 3
    assert main(["bench", "speed", str(spring_potential_file), "--structure", "nonsense"]) == 2
