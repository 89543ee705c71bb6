"""`mlff export`, `mlff info` and `mlff eval`, called in-process (one subprocess for `python -m`)."""

import dataclasses
import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import build_tiny_model, tiny_config
from synthetic import write_md17_npz

from mlff._version import __version__
from mlff.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, atomic_torch_save
from mlff.cli.main import main
from mlff.data import make_split, read_frames
from mlff.data.batch import FrameTensors
from mlff.evaluate import evaluate
from mlff.export import load_potential, read_metadata
from mlff.export.card import check_frames, write_model_card

pytestmark = pytest.mark.usefixtures("single_thread")

DATA_CONFIG = {"split": 0, "n_val": 5, "n_train": None, "n_test": None, "seed": 0, "train_pool": "split"}
TEST_METRICS = {"energy_mae_mev": 3.5, "force_mae_mev_per_a": 40.0}


@pytest.fixture
def dataset(tmp_path):
    """60 frames of a C, O, 3 H molecule with the file's own split (30 train / 30 test)."""
    return write_md17_npz(tmp_path / "mol.npz", num_frames=60)


@pytest.fixture
def checkpoint(tmp_path, dataset):
    """A training checkpoint written by hand after mlff.checkpoint's layout: raw = seed 0, EMA = seed 1."""
    raw, ema = build_tiny_model(seed=0), build_tiny_model(seed=1)
    contents = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "mlff_version": __version__,
        "config": {"model": dataclasses.asdict(tiny_config()), "data": {"path": str(dataset), **DATA_CONFIG}},
        "species": raw.species,
        "element_energies_ev": raw.element_energies()[raw.species].tolist(),
        "energy_scale_ev": float(raw.energy_scale),
        "model_state": raw.state_dict(),
        "ema_state": ema.state_dict(),
        "optimizer_state": None,
        "scheduler_state": None,
        "epoch": 3,
        "command": "mlff train tiny.yaml train.epochs=3",
        "best_val_force_mae": 41.0,
        "cpu_seconds": 5400.0,
        "history": [],
        "data_summary": {"source": str(dataset), "frames": 60},
        "test_metrics": TEST_METRICS,
        "reference": {"numbers": np.array([6, 8, 1, 1, 1])},
    }
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save(contents, path)
    return path


def energies_of(model, dataset):
    frames = read_frames(dataset)
    batch = FrameTensors(frames, torch.float64).batch(np.arange(4))
    energy, forces = model(batch.positions, batch.atomic_numbers, batch.batch, batch.cell, batch.pbc)
    return energy.detach(), forces.detach()


def test_export_writes_the_ema_weights_with_training_metadata(tmp_path, checkpoint, dataset, capsys):
    output = tmp_path / "out" / "potential.pt"
    assert main(["export", str(checkpoint), "-o", str(output)]) == 0
    assert "wrote" in capsys.readouterr().out
    potential = load_potential(output)
    expected = energies_of(build_tiny_model(seed=1).eval(), dataset)
    for actual, wanted in zip(energies_of(potential, dataset), expected):
        torch.testing.assert_close(actual, wanted, rtol=1e-6, atol=1e-12)
    metadata = potential.metadata
    assert metadata["dtype"] == "float64" and metadata["model"]["config"] == dataclasses.asdict(tiny_config())
    assert metadata["training"]["epoch"] == 3 and metadata["training"]["weights"] == "ema"
    assert metadata["training"]["config"]["data"]["n_val"] == 5
    assert metadata["test_metrics"] == TEST_METRICS
    assert metadata["training_data"]["frames"] == 60 and metadata["reference"] == {"numbers": [6, 8, 1, 1, 1]}
    card = yaml.safe_load(output.with_suffix(".yaml").read_text())
    assert card["training"]["command"] == "mlff train tiny.yaml train.epochs=3"
    assert metadata["training"]["cpu_seconds"] == 5400.0 and card["training"]["cpu_hours"] == 1.5
    assert card["test_metrics"] == TEST_METRICS and card["data"]["file"] == str(dataset)
    assert card["sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()


def test_export_raw_weights_as_float32(tmp_path, checkpoint, dataset):
    output = tmp_path / "raw32.pt"
    assert main(["export", str(checkpoint), "-o", str(output), "--weights", "raw", "--dtype", "float32"]) == 0
    metadata = read_metadata(output)
    assert metadata["dtype"] == "float32" and metadata["training"]["weights"] == "raw"
    energy, forces = energies_of(load_potential(output), dataset)
    expected_energy, expected_forces = energies_of(build_tiny_model(seed=0).eval(), dataset)
    torch.testing.assert_close(energy, expected_energy, rtol=0.0, atol=1e-5)
    torch.testing.assert_close(forces.double(), expected_forces, rtol=1e-4, atol=1e-8)


def test_export_of_a_missing_checkpoint_fails_cleanly(tmp_path, capsys):
    assert main(["export", str(tmp_path / "absent.pt"), "-o", str(tmp_path / "p.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "p.pt").exists()


def test_info_prints_metadata_readably_and_as_json(potential_file, capsys):
    assert main(["info", str(potential_file)]) == 0
    text = capsys.readouterr().out
    assert "H C O (Z = 1, 6, 8)" in text and "5.0 Angstrom" in text and "egnn backbone" in text
    assert "test_metrics.force_mae_mev_per_a" in text
    assert main(["info", str(potential_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == read_metadata(potential_file)


def test_info_on_a_checkpoint_says_what_to_do(checkpoint, capsys):
    assert main(["info", str(checkpoint)]) == 2
    assert "mlff export" in capsys.readouterr().err


def test_eval_potential_and_checkpoint_use_the_training_split(tmp_path, checkpoint, dataset, capsys):
    potential = tmp_path / "potential.pt"
    assert main(["export", str(checkpoint), "-o", str(potential)]) == 0
    results = {}
    for name, model in (("potential", potential), ("checkpoint", checkpoint)):
        out = tmp_path / f"{name}.json"
        assert main(["eval", str(model), str(dataset), "--json", str(out), "--batch-size", "7"]) == 0
        assert "force" in capsys.readouterr().out
        results[name] = json.loads(out.read_text())
    assert results["potential"]["kind"] == "potential" and results["checkpoint"]["kind"] == "checkpoint"
    frames = read_frames(dataset)
    split = make_split(frames, **{"split_index" if k == "split" else k: v for k, v in DATA_CONFIG.items()})
    expected = evaluate(load_potential(potential), FrameTensors(frames, torch.float64), split.test)
    for result in results.values():
        assert result["frames"] == 30 and result["split"] == "test"
        for key in ("energy_mae_mev", "force_mae_mev_per_a", "force_rmse_mev_per_a"):
            assert result[key] == pytest.approx(expected[key], rel=1e-6)


@pytest.mark.parametrize(("split", "frames"), [("all", 60), ("val", 5), ("train", 25)])
def test_eval_other_splits(checkpoint, dataset, split, frames, tmp_path):
    out = tmp_path / "result.json"
    assert main(["eval", str(checkpoint), str(dataset), "--split", split, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["frames"] == frames


def test_eval_errors_name_the_problem(tmp_path, dataset, checkpoint, capsys):
    assert main(["eval", str(tmp_path / "absent.pt"), str(dataset)]) == 2
    assert "no potential file" in capsys.readouterr().err
    assert main(["eval", str(dataset), str(dataset)]) == 2
    assert "neither a potential file nor a training checkpoint" in capsys.readouterr().err
    assert main(["eval", str(checkpoint), str(dataset), "--split-index", "3"]) == 2
    assert "split 3 requested" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli(potential_file):
    completed = subprocess.run(
        [sys.executable, "-m", "mlff.cli.main", "info", str(potential_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "mlff-potential v2" in completed.stdout


def test_check_data_records_errors_on_fixed_test_frames_kept_while_the_file_is_unchanged(
    tmp_path, checkpoint, dataset, capsys
):
    output = tmp_path / "potential.pt"
    assert main(["export", str(checkpoint), "-o", str(output), "--check-data", str(dataset)]) == 0
    check = yaml.safe_load(output.with_suffix(".yaml").read_text())["check"]
    frames = read_frames(dataset)
    test_split = make_split(frames, split_index=0, n_val=5).test
    assert check["frame_indices"] == sorted(test_split.tolist()) and check["data"] == dataset.name
    expected = evaluate(load_potential(output), FrameTensors(frames, torch.float64), np.array(check["frame_indices"]))
    assert check["force_mae_mev_per_a"] == pytest.approx(expected["force_mae_mev_per_a"], rel=1e-12)
    assert check["energy_mae_mev"] == pytest.approx(expected["energy_mae_mev"], rel=1e-12)

    card_path = write_model_card(output)
    assert yaml.safe_load(card_path.read_text())["check"] == check, "re-writing the card keeps the measured check"
    assert main(["export", str(checkpoint), "-o", str(output), "--weights", "raw"]) == 0
    assert "check" not in yaml.safe_load(card_path.read_text()), "a new file drops the old file's check"
    assert main(["export", str(checkpoint), "-o", str(output), "--check-data", str(dataset), "--no-card"]) != 0
    assert "cannot go with --no-card" in capsys.readouterr().err


def test_check_frames_spread_evenly_over_the_test_split():
    chosen = check_frames(np.arange(300, 100, -1), 50)
    assert chosen.size == 50 and np.unique(chosen).size == 50
    assert chosen[0] == 101 and chosen[-1] == 300 and np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(check_frames(np.array([7, 3, 5]), 50), [3, 5, 7])


def test_overrides_after_a_flag_join_the_command_and_other_strays_are_refused(monkeypatch, capsys):
    import mlff.cli.learn
    import mlff.cli.train

    seen = {}
    monkeypatch.setattr(mlff.cli.train, "run", lambda args: seen.update(train=(args.overrides, args.resume)))
    monkeypatch.setattr(mlff.cli.learn, "run", lambda args: seen.update(learn=(args.overrides, args.resume)))
    assert main(["train", "c.yaml", "train.epochs=3", "--resume", "train.lr=0.1", "data.n_val=4"]) == 0
    assert seen["train"] == (["train.epochs=3", "train.lr=0.1", "data.n_val=4"], True)
    assert main(["learn", "c.yaml", "--resume", "md.time=2ps"]) == 0
    assert seen["learn"] == (["md.time=2ps"], True)
    with pytest.raises(SystemExit):
        main(["train", "c.yaml", "--resume", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["info", "ethanol", "key=value"])


def test_sigterm_reaches_a_command_as_ctrl_c_and_the_handler_is_restored(monkeypatch, capsys):
    import os
    import signal

    import mlff.cli.info

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises long before this returns
        return 0

    monkeypatch.setattr(mlff.cli.info, "run", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["info", "ethanol"]) == 130
    assert "mlff info: interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before
