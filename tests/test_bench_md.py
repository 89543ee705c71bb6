"""`mlff bench md`: every engine configuration timed, JSON and table written."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from mlff.bench.md import parse_configuration
from mlff.cli.main import main

pytestmark = pytest.mark.usefixtures("single_thread")


def test_bench_md_times_each_engine_and_replica_count(spring_potential_file, tmp_path, capsys):
    tetrahedron = 1.2 / np.sqrt(8.0) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
    write(tmp_path / "h4.xyz", Atoms("H4", positions=tetrahedron))
    out = tmp_path / "bench.json"
    args = ["bench", "md", str(spring_potential_file), "--structure", f"h4={tmp_path / 'h4.xyz'}", "--engines"]
    code = main([*args, "torch:1", "torch:4", "openmm", "ase", "--steps", "20", "--rounds", "2", "-o", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [(row["engine"], row["replicas"]) for row in rows] == [("torch", 1), ("torch", 4), ("openmm", 1), ("ase", 1)]
    for row in rows:
        assert row["steps_per_second"] > 0 and len(row["round_seconds"]) == 2
        assert row["ns_per_day"] == pytest.approx(row["ns_per_day_per_replica"] * row["replicas"])
        assert row["atom_steps_per_second"] == pytest.approx(row["steps_per_second"] * 4 * row["replicas"])
    assert rows[0]["ns_per_day_ratio_to_first"] == 1.0
    assert rows[2]["potential_time_fraction"] is None and 0 < rows[1]["potential_time_fraction"] <= 1
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in capsys.readouterr().out.splitlines()]
    assert table[0][:3] == ["structure (atoms)", "engine", "replicas"]
    configurations = [("torch", "1"), ("torch", "4"), ("openmm", "1"), ("ase", "1")]
    assert [row[:3] for row in table[2:6]] == [["h4 (4)", engine, replicas] for engine, replicas in configurations]
    assert table[4][6] == "-" and table[3][6].endswith("%")


def test_engine_configurations_parse():
    assert parse_configuration("torch:64") == ("torch", 64)
    assert parse_configuration("ase") == ("ase", 1)
    with pytest.raises(ValueError, match="ENGINE:REPLICAS"):
        parse_configuration("torch:many")
