"""`mlff data label`: single points of given frames, appended as they finish, resumable."""

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from mlff.cli.main import main
from mlff.data import label as label_module
from mlff.data.label import label_frames, positions_hash

pytest.importorskip("tblite")


@pytest.fixture
def frames_file(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for name in ("H2O", "NH3", "CH4"):
        atoms = molecule(name)
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        atoms.info["reason"] = "spread"
        frames.append(atoms)
    path = tmp_path / "candidates.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def test_label_resumes_without_relabelling(frames_file, tmp_path, monkeypatch):
    calls = []
    single_point = label_module._single_point

    def counted(index, numbers, positions):
        calls.append(index)
        return single_point(index, numbers, positions)

    monkeypatch.setattr(label_module, "_single_point", counted)
    output = tmp_path / "labelled.extxyz"
    first = label_frames(frames_file, output)
    assert (first.labelled, first.skipped, calls) == (3, 0, [0, 1, 2])
    labelled = ase.io.read(output, ":")
    inputs = ase.io.read(frames_file, ":")
    assert [frame.info["frame_index"] for frame in labelled] == [0, 1, 2]
    assert labelled[1].info["method"] == "gfn2-xtb" and labelled[1].info["reason"] == "spread"
    assert labelled[2].info["positions_sha256"] == positions_hash(inputs[2].numbers, inputs[2].positions)
    assert labelled[0].get_forces().shape == (3, 3) and labelled[0].get_potential_energy() < 0

    # A kill in the middle of writing frame 2: its half is dropped and only frame 2 is computed again.
    text = output.read_text()
    output.write_text(text[: text.rindex("\n", 0, len(text) - 40)])
    calls.clear()
    again = label_frames(frames_file, output)
    assert (again.labelled, again.skipped, calls) == (1, 2, [2])
    relabelled = ase.io.read(output, ":")
    assert [frame.info["frame_index"] for frame in relabelled] == [0, 1, 2]
    np.testing.assert_allclose(relabelled[2].get_forces(), labelled[2].get_forces(), atol=1e-6)

    # Everything labelled: nothing computed; a changed frame (same index, new positions) is computed.
    calls.clear()
    assert label_frames(frames_file, output).skipped == 3 and calls == []
    inputs[0].positions += 0.01
    ase.io.write(frames_file, inputs, format="extxyz")
    assert label_frames(frames_file, output).labelled == 1 and calls == [0]
    with pytest.raises(ValueError, match="holds labels of gfn2-xtb"):
        label_frames(frames_file, output, method="pbe/def2-svp", basis="sto-3g")


def test_mlff_data_label_in_parallel_workers(frames_file, tmp_path, capsys):
    output = tmp_path / "parallel.extxyz"
    assert main(["data", "label", str(frames_file), "-o", str(output), "--workers", "2", "--quiet"]) == 0
    assert "3 frame(s) labelled" in capsys.readouterr().out
    assert sorted(frame.info["frame_index"] for frame in ase.io.read(output, ":")) == [0, 1, 2]
