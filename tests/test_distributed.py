"""Data-parallel training (gloo, 2 CPU processes): same parameters as one process, resume, refusals.

Ranks are spawned with torch.multiprocessing (one thread each) or started by torchrun through the
`mlff` command; the model is float64 so that the only difference from one process, the order in
which the ranks' gradient contributions are summed, stays at rounding level.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from synthetic import TINY_TRAINING_OVERRIDES, write_md17_npz

import mlff.training.trainer as trainer_module
from mlff.checkpoint import load_checkpoint
from mlff.training import load_config, train

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch without gloo")

# batch 6 over 2 ranks with 19 training frames: the last global batch (1 frame) leaves rank 1 idle.
OVERRIDES = [
    *TINY_TRAINING_OVERRIDES,
    "model.dtype=float64",
    "train.batch_size=6",
    "data.n_val=5",
    "train.loss_weights.smoothness=0.01",
    "train.epochs=4",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_md17_npz(tmp_path_factory.mktemp("ddp") / "mol.npz", num_frames=48)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(rank: int, world: int, port: int, overrides: list[str], resume: bool, fail_at: int) -> None:
    """One rank: the launcher's environment, then `train(distributed=True)`; rank 1 may fail at an epoch."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    if fail_at and rank == 1:
        original = trainer_module._run_epoch

        def failing(state, data, split, epoch):
            if epoch == fail_at:
                raise RuntimeError("rank 1 fails")
            return original(state, data, split, epoch)

        trainer_module._run_epoch = failing
    train(load_config(None, overrides), resume=resume, progress=False, distributed=True)


def _spawn(world: int, overrides: list[str], resume: bool = False, fail_at: int = 0) -> None:
    mp.spawn(_rank, args=(world, _free_port(), overrides, resume, fail_at), nprocs=world, join=True)


def _params(run) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model_state"]


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-9, atol=1e-11, msg=name)


def test_two_ranks_train_the_parameters_of_one_process(tmp_path, dataset):
    one = tmp_path / "one"
    train(load_config(None, [*OVERRIDES, f"data.path={dataset}", f"output_dir={one}"]), progress=False)
    two = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "mlff.cli.main", "--threads", "1", "train", str(tmp_path / "c.yaml"), *OVERRIDES]
    command += [f"data.path={dataset}", f"output_dir={two}", "--no-progress"]
    (tmp_path / "c.yaml").write_text("{}\n")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best validation force MAE") == 1, "rank 0 alone prints"
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 4, "rank 0 alone logs"
    _assert_close(_params(two), _params(one))
    single, double = load_checkpoint(one / "last.pt"), load_checkpoint(two / "last.pt")
    for a, b in zip(single["history"], double["history"]):
        for key in ("loss", "forces", "energy", "smoothness", "val_force_mae_mev_per_a", "val_energy_mae_mev"):
            assert b[key] == pytest.approx(a[key], rel=1e-9), key
    assert double["test_metrics"] == pytest.approx(single["test_metrics"], rel=1e-9)


def test_a_failed_rank_ends_the_run_and_it_resumes_on_another_number_of_ranks(tmp_path, dataset, monkeypatch):
    base = [*OVERRIDES, f"data.path={dataset}"]
    crashed = tmp_path / "crashed"
    with pytest.raises(Exception, match="rank 1 fails"):
        _spawn(2, [*base, f"output_dir={crashed}"], fail_at=3)
    assert load_checkpoint(crashed / "last.pt")["epoch"] == 2, "the last completed epoch's checkpoint is intact"
    # Resumed on one rank (a group of one, in this process) ...
    port = _free_port()
    for name, value in dict(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)).items():
        monkeypatch.setenv(name, value)
    train(load_config(None, [*base, f"output_dir={crashed}"]), resume=True, progress=False, distributed=True)
    history = load_checkpoint(crashed / "last.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    # ... it ends where an uninterrupted run ends (one process: the same steps as 2 ranks, test above).
    straight = tmp_path / "straight"
    train(load_config(None, [*base, f"output_dir={straight}"]), progress=False)
    _assert_close(_params(crashed), _params(straight))


def test_a_time_cap_stops_every_rank_after_the_same_epoch(tmp_path, dataset):
    # A CPU cap crossed in the first epoch: rank 0 decides and broadcasts; a rank that went on
    # alone would wait for the others in its next collective and the spawn would not return.
    run = tmp_path / "capped"
    _spawn(2, [*OVERRIDES, f"data.path={dataset}", f"output_dir={run}", "train.max_cpu_minutes=0.0001"])
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint["epoch"] == 1 and len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert "CPU-time cap" in (run / "results.json").read_text()


def test_distributed_refusals(tmp_path, dataset, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    config = load_config(None, [*OVERRIDES, f"data.path={dataset}", f"output_dir={tmp_path / 'r'}"])
    with pytest.raises(ValueError, match="torchrun"):
        train(config, progress=False, distributed=True)
    committee = load_config(None, [*OVERRIDES, f"data.path={dataset}", "train.committee=2"])
    with pytest.raises(ValueError, match="committee"):
        train(committee, progress=False, distributed=True)


@pytest.fixture(scope="module")
def dask_cluster():
    """A one-worker, one-thread LocalCluster of separate processes (no shared memory with this one)."""
    pytest.importorskip("tblite")
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, env={"OMP_NUM_THREADS": "1"}
    ) as cluster:
        yield cluster.scheduler_address


def test_labelling_on_a_dask_cluster_gives_the_corpus_of_the_process_pool(tmp_path, dask_cluster):
    import ase.io
    import numpy as np
    from ase.build import molecule

    from mlff.data.generate import GenerateConfig, generate
    from mlff.data.label import label_frames
    from mlff.data.molecules import structure_file_molecules

    ase.io.write(tmp_path / "H2O.xyz", molecule("H2O"), format="xyz")
    specs = structure_file_molecules([tmp_path / "H2O.xyz"])
    config = GenerateConfig(
        method="gfn2-xtb", conformers=1, temperatures_k=(300.0,), md_frames=2, equilibration_steps=4, sample_every=2
    )
    pool = generate(specs, config, tmp_path / "pool" / "corpus.extxyz", progress=False)
    dask = generate(specs, config, tmp_path / "dask" / "corpus.extxyz", progress=False, scheduler=dask_cluster)
    assert pool.output.read_text() == dask.output.read_text() and not dask.failed
    # The client wrote the resumable parts: a rerun computes nothing.
    rerun = generate(specs, config, tmp_path / "dask" / "corpus.extxyz", progress=False, scheduler=dask_cluster)
    assert all(result.resumed for result in rerun.results)
    # A packed corpus straight from the generator holds the same frames.
    packed = generate(specs, config, tmp_path / "dask" / "corpus.h5", progress=False, scheduler=dask_cluster)
    from mlff.data import read_frames

    np.testing.assert_array_equal(read_frames(packed.output).forces, read_frames(pool.output).forces)

    frames = [molecule(name) for name in ("H2O", "NH3", "CH4")]
    ase.io.write(tmp_path / "frames.extxyz", frames, format="extxyz")
    local = label_frames(tmp_path / "frames.extxyz", tmp_path / "local.extxyz")
    remote = label_frames(tmp_path / "frames.extxyz", tmp_path / "remote.extxyz", scheduler=dask_cluster)
    assert (local.labelled, remote.labelled, remote.failed) == (3, 3, {})
    by_index = {frame.info["frame_index"]: frame for frame in ase.io.read(tmp_path / "remote.extxyz", ":")}
    for frame in ase.io.read(tmp_path / "local.extxyz", ":"):
        other = by_index[frame.info["frame_index"]]
        assert other.info == frame.info
        np.testing.assert_allclose(other.get_forces(), frame.get_forces(), rtol=0, atol=1e-10)
        assert other.get_potential_energy() == pytest.approx(frame.get_potential_energy(), abs=1e-10)
