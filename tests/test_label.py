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

    def counted(index, *frame):
        calls.append(index)
        return single_point(index, *frame)

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


def test_gfn1_labels_a_water_molecule_in_ev_with_forces_minus_the_energy_gradient(tmp_path):
    from tblite.interface import Calculator as TBLiteInterface

    from mlff.data.generate import XTB_ACCURACY, make_calculator
    from mlff.units import ANGSTROM_TO_BOHR, HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, HARTREE_TO_EV

    water = molecule("H2O")
    water.positions += np.random.default_rng(1).normal(scale=0.05, size=water.positions.shape)
    ase.io.write(tmp_path / "water.extxyz", water, format="extxyz")
    output = tmp_path / "gfn1.extxyz"
    assert label_frames(tmp_path / "water.extxyz", output, method="gfn1-xtb").labelled == 1
    (frame,) = ase.io.read(output, ":")
    assert frame.info["method"] == "gfn1-xtb"
    energy, forces = frame.get_potential_energy(), frame.get_forces()

    # tblite's own interface, in Hartree and Hartree/Bohr: the label is GFN1-xTB converted to eV and eV/A
    # (to 1e-5 eV: tblite's ASE calculator converts with ASE's CODATA-2014 Hartree, mlff.units with 2018's).
    raw = TBLiteInterface("GFN1-xTB", water.numbers, water.positions * ANGSTROM_TO_BOHR)
    raw.set("accuracy", XTB_ACCURACY)
    raw.set("verbosity", 0)
    result = raw.singlepoint()
    assert energy == pytest.approx(result.get("energy") * HARTREE_TO_EV, abs=1e-5)
    np.testing.assert_allclose(forces, -result.get("gradient") * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, atol=1e-5)

    # forces = -dE/dx by central differences of the same calculator's energies.
    calculator, step = make_calculator("gfn1-xtb"), 1e-4
    numeric = np.zeros_like(forces)
    for atom in range(len(water)):
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                moved = water.copy()
                moved.positions[atom, axis] += sign * step
                moved.calc = calculator
                energies.append(moved.get_potential_energy())
            numeric[atom, axis] = -(energies[0] - energies[1]) / (2 * step)
    np.testing.assert_allclose(forces, numeric, atol=1e-4)
    assert np.abs(forces).max() > 0.1  # displaced from the minimum: the comparison is not of zeros

    # A GFN2 label of the same frame differs (the method is really GFN1), and is refused into this file.
    gfn2 = make_calculator("gfn2-xtb")
    water.calc = gfn2
    assert abs(water.get_potential_energy() - energy) > 1.0
    with pytest.raises(ValueError, match="holds labels of gfn1-xtb"):
        label_frames(tmp_path / "water.extxyz", output, method="gfn2-xtb")


def test_mlff_data_label_takes_gfn1_and_refuses_an_unknown_method_naming_the_known(frames_file, tmp_path, capsys):
    from mlff.learn.config import ConfigError, LabelSection
    from mlff.methods import METHODS

    assert {"gfn1-xtb", "gfn2-xtb", "pbe/def2-svp"} <= set(METHODS)
    output = tmp_path / "gfn1.extxyz"
    assert main(["data", "label", str(frames_file), "-o", str(output), "--method", "gfn1-xtb", "--quiet"]) == 0
    assert [frame.info["method"] for frame in ase.io.read(output, ":")] == ["gfn1-xtb"] * 3
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["data", "label", str(frames_file), "-o", str(tmp_path / "x.extxyz"), "--method", "b3lyp"])
    error = capsys.readouterr().err
    assert "b3lyp" in error and all(name in error for name in METHODS)
    with pytest.raises(ValueError, match="unknown method 'b3lyp'; known: gfn2-xtb, gfn1-xtb, pbe/def2-svp"):
        label_frames(frames_file, tmp_path / "x.extxyz", method="b3lyp")
    with pytest.raises(ConfigError, match="gfn1-xtb"):
        LabelSection(method="b3lyp")
    assert LabelSection(method="gfn1-xtb").method == "gfn1-xtb"


def test_a_periodic_frame_is_labelled_periodically_and_keeps_its_box(tmp_path):
    from mlff.data.generate import make_calculator

    # Two waters in a 4 A box: their images are within the interaction range, so the periodic
    # label differs from the isolated cluster's.
    box = molecule("H2O")
    other = molecule("H2O")
    other.positions += [2.0, 1.9, 0.3]
    box += other
    box.cell = np.diag([4.0, 4.2, 4.4])
    box.pbc = True
    ase.io.write(tmp_path / "box.extxyz", box, format="extxyz")
    output = tmp_path / "labelled.extxyz"
    assert label_frames(tmp_path / "box.extxyz", output, method="gfn1-xtb").labelled == 1
    (frame,) = ase.io.read(output, ":")
    assert frame.pbc.all()
    np.testing.assert_allclose(frame.cell.array, box.cell.array)
    periodic = box.copy()
    periodic.calc = make_calculator("gfn1-xtb")
    np.testing.assert_allclose(frame.get_forces(), periodic.get_forces(), atol=1e-6)
    cluster = box.copy()
    cluster.pbc = False
    cluster.calc = make_calculator("gfn1-xtb")
    assert np.abs(cluster.get_forces() - frame.get_forces()).max() > 1e-3, "the box changes the label"
