"""The packed (chunked HDF5) corpus: same frames as its sources, lazy reads, streaming fits, bad files."""

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from synthetic import TINY_TRAINING_OVERRIDES, write_md17_npz

from mlff.checkpoint import load_checkpoint
from mlff.cli.main import main
from mlff.data import DatasetError, make_split, read_frames
from mlff.data.batch import FrameTensors
from mlff.data.packed import (
    PackedFrames,
    PackedTensors,
    epoch_order,
    pack,
    streaming_reference_fit,
)
from mlff.training import load_config, train
from mlff.training.references import fit_element_energies, force_rms

pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_md17_npz(tmp_path_factory.mktemp("packed") / "mol.npz", num_frames=50)


def _mixed_extxyz(path, seed=0):
    """Frames of three molecules (so that the element energies are determined), one of them an
    equilibrium frame without an energy, with method/molecule info."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, (numbers, energy) in enumerate([([1, 1, 8], -10.0), ([6, 1, 1, 1, 1], -20.0), ([6, 8], -15.0)] * 4):
        atoms = Atoms(numbers=numbers, positions=rng.normal(scale=1.0, size=(len(numbers), 3)))
        equilibrium = k == 5
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=None if equilibrium else energy + rng.normal(scale=0.1),
            forces=np.zeros((len(numbers), 3)) if equilibrium else rng.normal(size=(len(numbers), 3)),
        )
        atoms.info.update(equilibrium=equilibrium, method="gfn2-xtb", molecule=atoms.get_chemical_formula())
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return path


def _assert_same_frames(a, b):
    for name in ("positions", "atomic_numbers", "n_atoms", "energies", "forces", "equilibrium", "has_energy"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert sorted(a.extra) == sorted(b.extra)
    for key in a.extra:
        np.testing.assert_array_equal(a.extra[key], b.extra[key])


def test_packed_corpus_returns_the_frames_of_its_sources_in_order(tmp_path, npz):
    extxyz = _mixed_extxyz(tmp_path / "mixed.extxyz")
    single = pack([npz], tmp_path / "one.h5", chunk_frames=7)
    both = pack([npz, extxyz], tmp_path / "both.h5", chunk_frames=7)
    source = read_frames(npz)
    with PackedFrames(single) as packed:
        assert packed.num_chunks == 8
        _assert_same_frames(packed.to_frames(), source)
        for name, split in source.splits.items():
            np.testing.assert_array_equal(packed.splits[name], split)
        # read_frames of a .h5 is the whole corpus in memory; make_split sees the same split.
        np.testing.assert_array_equal(make_split(packed, n_val=5).test, make_split(source, n_val=5).test)
        np.testing.assert_array_equal(make_split(packed, n_val=5).val, make_split(source, n_val=5).val)
        # Batches gathered across chunks, in a scrambled order, equal the in-memory ones.
        order = np.array([49, 0, 13, 14, 6, 7, 30])
        lazy, eager = PackedTensors(packed).batch(order), FrameTensors(source).batch(order)
        for name in ("positions", "atomic_numbers", "batch", "energies", "forces", "n_atoms", "has_energy"):
            assert bool((getattr(lazy, name) == getattr(eager, name)).all()), name
    _assert_same_frames(read_frames(single), source)
    with PackedFrames(both) as packed:
        mixed = read_frames(extxyz)
        assert packed.splits == {}, "splits of one input do not index a corpus of several"
        _assert_same_frames(packed.subset(np.arange(50, 62)), mixed)
        # The npz frames have no method: "" where a frame lacks a text key, as the readers do.
        assert set(packed.extra["method"][:50]) == {""} and set(packed.extra["method"][50:]) == {"gfn2-xtb"}


def test_epoch_order_shuffles_chunks_then_within_a_buffer():
    train = np.setdiff1d(np.arange(100), [3, 40, 41])
    order = epoch_order(10, train, seed=1, epoch=2, buffer_chunks=2)
    assert sorted(order.tolist()) == train.tolist()
    np.testing.assert_array_equal(order, epoch_order(10, train, seed=1, epoch=2, buffer_chunks=2))
    assert not np.array_equal(order, epoch_order(10, train, seed=1, epoch=3, buffer_chunks=2))
    # Each run of two chunks' frames is contiguous in the order: a buffer of 2 chunks is read at a time.
    chunks = order // 10
    buffers = [set(chunks[k : k + n].tolist()) for k, n in ((0, 20), (20, 18))]
    assert all(len(b) == 2 for b in buffers) and not buffers[0] & buffers[1]
    assert not np.array_equal(order, np.sort(order))


def test_streaming_reference_fit_equals_the_in_memory_fit(tmp_path, npz):
    extxyz = _mixed_extxyz(tmp_path / "mixed.extxyz", seed=3)
    for inputs, chunk in (([extxyz], 5), ([npz], 8), ([npz, extxyz], 16)):
        path = pack(inputs, tmp_path / "c.h5", chunk_frames=chunk)
        frames = read_frames(path)
        with PackedFrames(path) as packed:
            species = packed.species()
            indices = np.arange(1, packed.num_frames, 2)
            energies, rms = streaming_reference_fit(packed, indices, species)
        expected = fit_element_energies(frames, indices, species)
        np.testing.assert_allclose(energies, expected, rtol=1e-9, atol=1e-9)
        assert rms == pytest.approx(force_rms(frames, indices), rel=1e-12)


def test_training_reads_a_packed_corpus_lazily(tmp_path, npz):
    path = pack([npz], tmp_path / "mol.h5", chunk_frames=8)
    overrides = [*TINY_TRAINING_OVERRIDES, f"data.path={path}", f"output_dir={tmp_path / 'run'}", "train.epochs=2"]
    result = train(load_config(None, overrides), progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")
    assert result.epochs_run == 2 and checkpoint["test_metrics"]["frames"] == 25
    assert checkpoint["data_summary"]["packed"] is True and checkpoint["reference"] is None
    # The model's reference energies are the in-memory fit on the same training frames.
    config = load_config(None, [*TINY_TRAINING_OVERRIDES, f"data.path={npz}"])
    split = make_split(read_frames(npz), n_val=config.data.n_val)
    expected = fit_element_energies(read_frames(npz), np.unique(split.train), [1, 6, 8])
    np.testing.assert_allclose(checkpoint["element_energies_ev"], expected, rtol=1e-9)


def test_bad_packed_files_are_named(tmp_path, npz):
    import h5py

    path = pack([npz], tmp_path / "good.h5", chunk_frames=8)
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cut.h5"):
        PackedFrames(tmp_path / "cut.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        read_frames(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["x"] = [1, 2]
    with pytest.raises(DatasetError, match="not an mlff packed corpus"):
        PackedFrames(tmp_path / "other.h5")
    newer = tmp_path / "newer.h5"
    newer.write_bytes(data)
    with h5py.File(newer, "a") as handle:
        handle.attrs["format_version"] = 99
    with pytest.raises(DatasetError, match="version 99"):
        PackedFrames(newer)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(data)
    with h5py.File(broken, "a") as handle:
        handle["n_atoms"][0] = 4
    with pytest.raises(DatasetError, match="n_atoms sum"):
        PackedFrames(broken)
    with pytest.raises(DatasetError, match="trained alone"):
        overrides = [f"data.path=[{path}, {npz}]", f"output_dir={tmp_path / 'r'}"]
        train(load_config(None, overrides), progress=False)
    assert not list(tmp_path.glob(".*.partial")), "no temporary file is left behind"


def test_pack_command(tmp_path, npz, capsys):
    output = tmp_path / "out.h5"
    assert main(["data", "pack", str(npz), str(npz), "-o", str(output), "--chunk-frames", "16"]) == 0
    assert "packed 100 frames of 2 file(s)" in capsys.readouterr().out
    with PackedFrames(output) as packed:
        assert packed.num_frames == 100 and packed.chunk_frames == 16
    assert main(["data", "pack", str(npz), "-o", str(tmp_path / "out.npz")]) == 2
