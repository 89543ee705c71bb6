"""`mlff bench threads`: the measurement behind mlff.threads.SECOND_THREAD_MIN_ATOMS."""

import json

import pytest
import torch

from mlff.bench.threads import thread_benchmark
from mlff.cli.main import main


def test_rows_per_size_with_both_thread_counts_and_threads_restored(tmp_path):
    before = torch.get_num_threads()
    rows = thread_benchmark("ethanol", [1, 3], (1, 2), rounds=1)
    assert torch.get_num_threads() == before
    assert [row["atoms"] for row in rows] == [9, 27]
    for row in rows:
        assert row["wall_ms_1t"] > 0 and row["cpu_ms_2t"] > 0
        assert row["ratio_1t_to_1t"] == pytest.approx(1.0)
        assert row["ratio_2t_to_1t"] > 0


def test_cli_writes_json_and_refuses_bad_sizes(tmp_path, capsys):
    output = tmp_path / "threads.json"
    assert main(["bench", "threads", "ethanol", "--replicas", "1", "--rounds", "1", "-o", str(output)]) == 0
    assert json.loads(output.read_text())[0]["replicas"] == 1
    assert main(["bench", "threads", "ethanol", "--replicas", "0", "-o", str(output)]) == 2
    assert "replica" in capsys.readouterr().err
