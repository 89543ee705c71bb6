"""Dataset readers, unit conversion, splits and corrupt-file errors."""

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from synthetic import make_frames, write_md17_npz

from mlff.data import DatasetError, make_split, read_frames
from mlff.units import KCAL_PER_MOL_TO_EV

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "md17"


def test_md17_layout_is_converted_from_kcal_per_mol(tmp_path):
    path = write_md17_npz(tmp_path / "mol.npz", num_frames=10)
    raw = np.load(path)
    frames = read_frames(path)
    assert frames.num_frames == 10
    np.testing.assert_allclose(frames.energies, raw["E"] * KCAL_PER_MOL_TO_EV)
    np.testing.assert_allclose(frames.forces, raw["F"].reshape(-1, 3) * KCAL_PER_MOL_TO_EV)
    np.testing.assert_allclose(frames.positions, raw["R"].reshape(-1, 3))
    assert abs(KCAL_PER_MOL_TO_EV - 0.0433641) < 1e-7


def test_official_rmd17_layout(tmp_path):
    positions, energies, forces = make_frames(6)
    np.savez(
        tmp_path / "rmd17.npz",
        nuclear_charges=np.array([6, 8, 1, 1, 1]),
        coords=positions,
        energies=energies,
        forces=forces,
        old_indices=np.arange(6),
    )
    frames = read_frames(tmp_path / "rmd17.npz")
    np.testing.assert_allclose(frames.energies, energies * KCAL_PER_MOL_TO_EV)
    assert frames.extra["old_indices"].tolist() == list(range(6))


def test_extxyz_is_read_in_ev(tmp_path):
    positions, energies, forces = make_frames(4)
    images = []
    for r, e, f in zip(positions, energies, forces):
        atoms = Atoms(numbers=[6, 8, 1, 1, 1], positions=r)
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        images.append(atoms)
    import ase.io

    ase.io.write(tmp_path / "frames.extxyz", images)
    frames = read_frames(tmp_path / "frames.extxyz")
    np.testing.assert_allclose(frames.energies, energies)
    np.testing.assert_allclose(frames.forces.reshape(4, 5, 3), forces)


def test_file_split_is_used_and_validation_comes_from_training(tmp_path):
    frames = read_frames(write_md17_npz(tmp_path / "mol.npz", num_frames=40))
    split = make_split(frames, split_index=0, n_val=5, seed=3)
    assert set(split.test) == set(frames.splits["split_test"][0])
    assert set(split.val) | set(split.train) == set(frames.splits["split_train"][0])
    assert not set(split.val) & set(split.train)
    assert make_split(frames, 0, 5, seed=3).val.tolist() == split.val.tolist()
    everything = make_split(frames, 0, 5, train_pool="all")
    assert len(everything.train) + len(everything.val) == 40 - len(split.test)


def test_seeded_split_without_file_split(tmp_path):
    frames = read_frames(write_md17_npz(tmp_path / "mol.npz", num_frames=30, with_splits=False))
    split = make_split(frames, n_val=3, n_test=10, seed=1)
    assert len(split.test) == 10 and len(split.val) == 3 and len(split.train) == 17
    assert not (set(split.test) & (set(split.train) | set(split.val)))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("F"), "missing key"),
        (lambda a: a.update(E=a["E"][:-1]), "frames"),
        (lambda a: a.update(z=a["z"][:-1]), "z has shape"),
        (lambda a: a.update(R=np.where(np.arange(5)[None, :, None] == 2, np.nan, a["R"])), "NaN"),
        (lambda a: a.update(F=a["F"][:, :, :2]), "F has shape"),
        (lambda a: a.update(split_test=np.array([[0, 999]])), "split"),
    ],
)
def test_inconsistent_files_are_errors_naming_the_problem(tmp_path, change, message):
    positions, energies, forces = make_frames(8)
    arrays = {"z": np.array([6, 8, 1, 1, 1]), "R": positions, "E": energies, "F": forces}
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=message):
        read_frames(tmp_path / "bad.npz")


def test_truncated_archive_is_an_error(tmp_path):
    path = write_md17_npz(tmp_path / "mol.npz", num_frames=20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_frames(path)


def test_unknown_layout_and_missing_file(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DatasetError, match="unknown npz layout"):
        read_frames(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        read_frames(tmp_path / "absent.npz")


@pytest.mark.skipif(not (SHARED / "rmd17_ethanol.npz").is_file(), reason="shared rMD17 data not present")
def test_real_rmd17_ethanol_split_zero():
    frames = read_frames(SHARED / "rmd17_ethanol.npz")
    split = make_split(frames, 0, 50)
    assert (len(split.train), len(split.val), len(split.test)) == (950, 50, 1000)
    assert frames.species() == [1, 6, 8]
    # rMD17 ethanol total energies are about -97,070 kcal/mol.
    assert abs(frames.energies.mean() / KCAL_PER_MOL_TO_EV + 97070) < 100
