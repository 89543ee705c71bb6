"""Configs, losses, reference energies, the trainer, checkpoints and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import TINY_TRAINING_OVERRIDES, write_md17_npz

import mlff.training.trainer as trainer_module
from mlff.checkpoint import load_checkpoint
from mlff.data import Frames
from mlff.training import ConfigError, load_config, train
from mlff.training.references import fit_element_energies

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = [*TINY_TRAINING_OVERRIDES, "train.loss_weights.smoothness=0.01"]


def tiny_config(tmp_path, data, epochs=3, extra=()):
    overrides = TINY + [f"data.path={data}", f"output_dir={tmp_path / 'run'}", f"train.epochs={epochs}", *extra]
    return load_config(None, overrides)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_md17_npz(tmp_path_factory.mktemp("data") / "mol.npz", num_frames=40)


def test_unknown_key_and_bad_value_are_named(tmp_path):
    with pytest.raises(ConfigError, match="train.epoch"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="model.dtype"):
        load_config(None, ["model.dtype=float16"])
    (tmp_path / "c.yaml").write_text("data:\n  path: x.npz\n  splitt: 1\n")
    with pytest.raises(ConfigError, match="data.splitt"):
        load_config(tmp_path / "c.yaml")


def test_dotted_overrides_merge_into_sections():
    config = load_config(
        None, ["train.loss_weights.smoothness=0.5", "model.encoding_options.n_bins=12", "train.epochs=7"]
    )
    assert config.train.loss_weights == {"energy": 1.0, "forces": 100.0, "smoothness": 0.5}
    assert config.model.encoding_options == {"n_bins": 12}, "the encoding's own defaults fill the rest"
    assert config.train.epochs == 7


def test_a_loss_weights_mapping_in_a_file_is_the_whole_loss(tmp_path):
    """A file's loss_weights trains exactly the terms it names (stage 6's arm B trained forces 100 beside
    forces_mae when a file's mapping was merged into the default); an option mapping still merges."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "model:\n  backbone_options: {hidden: 32}\ntrain:\n  loss_weights: {energy: 1.0, forces_mae: 2.0}\n"
    )
    config = load_config(path)
    assert config.train.loss_weights == {"energy": 1.0, "forces_mae": 2.0}
    assert config.model.backbone_options == {"hidden": 32, "layers": 4}
    edited = load_config(path, ["train.loss_weights.zero_force=3", "train.loss_weights.energy=0"])
    assert edited.train.loss_weights == {"energy": 0.0, "forces_mae": 2.0, "zero_force": 3.0}
    path.write_text("train:\n  lr: 0.001\n")
    added = load_config(path, ["train.loss_weights.zero_force=3"])
    assert added.train.loss_weights == {"energy": 1.0, "forces": 100.0, "smoothness": 0.01, "zero_force": 3.0}
    assert load_config(path).train.loss_weights == {"energy": 1.0, "forces": 100.0, "smoothness": 0.01}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("rmd17_*.yaml")), ids=lambda p: p.stem)
def test_example_configs_are_valid(path):
    config = load_config(path)
    assert config.data.path.endswith(".npz") and config.model.encoding == "spline"


def test_example_configs_cover_the_eight_md17_molecules():
    names = {p.stem for p in EXAMPLES.glob("rmd17_*.yaml")}
    molecules = ["aspirin", "benzene", "ethanol", "malonaldehyde", "naphthalene", "salicylic", "toluene", "uracil"]
    assert {f"rmd17_{m}" for m in molecules} <= names


def test_element_energies_least_squares_and_minimum_norm():
    truth = {1: -13.6, 6: -1030.0, 8: -2040.0}
    compositions = [[1, 1, 6], [1, 1, 1, 1, 6], [8, 1, 1], [6, 8], [1, 6, 6, 8]]
    numbers = np.concatenate(compositions)
    frames = Frames(
        positions=np.zeros((len(numbers), 3)),
        atomic_numbers=numbers,
        n_atoms=[len(c) for c in compositions],
        energies=np.array([sum(truth[z] for z in c) for c in compositions]),
        forces=np.zeros((len(numbers), 3)),
    )
    fitted = fit_element_energies(frames, np.arange(5), [1, 6, 8])
    np.testing.assert_allclose(fitted, [truth[1], truth[6], truth[8]], rtol=1e-10)
    single = fit_element_energies(frames, np.array([0]), [1, 6, 8])
    counts = np.array([2.0, 1.0, 0.0])
    assert abs(counts @ single - frames.energies[0]) < 1e-9
    np.testing.assert_allclose(single, counts * frames.energies[0] / (counts @ counts), rtol=1e-10)


def test_training_writes_checkpoints_metrics_and_test_results(tmp_path, dataset):
    result = train(tiny_config(tmp_path, dataset, epochs=2), progress=False)
    run = tmp_path / "run"
    assert result.epochs_run == 2
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "val_force_mae_mev_per_a" in lines[0] and "smoothness" in lines[0]
    checkpoint = load_checkpoint(run / "best.pt")
    assert checkpoint["test_metrics"]["frames"] == 20
    assert checkpoint["reference"]["atomic_numbers"] == [6, 8, 1, 1, 1]
    assert (run / "results.json").is_file()
    with pytest.raises(ValueError, match="--resume"):
        train(tiny_config(tmp_path, dataset, epochs=2), progress=False)


def test_training_lowers_the_force_error(tmp_path, dataset):
    extra = ["train.lr=0.05", "train.batch_size=2", "train.ema_decay=0.0"]
    result = train(tiny_config(tmp_path, dataset, epochs=8, extra=extra), progress=False)
    history = load_checkpoint(tmp_path / "run" / "last.pt")["history"]
    assert result.best_val_force_mae < 0.7 * history[0]["val_force_mae_mev_per_a"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model_state"]


def test_crash_and_resume_equals_an_uninterrupted_run(tmp_path, dataset, monkeypatch):
    straight = tmp_path / "straight"
    train(tiny_config(straight, dataset, epochs=4), progress=False)

    crashed = tmp_path / "crashed"
    original = trainer_module._run_epoch

    def crash_at_third(state, data, split, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(state, data, split, epoch)

    monkeypatch.setattr(trainer_module, "_run_epoch", crash_at_third)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(crashed, dataset, epochs=4), progress=False)
    assert load_checkpoint(crashed / "run" / "last.pt")["epoch"] == 2
    monkeypatch.setattr(trainer_module, "_run_epoch", original)
    result = train(tiny_config(crashed, dataset, epochs=4), resume=True, progress=False)
    assert result.epochs_run == 4
    assert [h["epoch"] for h in load_checkpoint(crashed / "run" / "last.pt")["history"]] == [1, 2, 3, 4]
    for name, value in _weights(straight / "run").items():
        torch.testing.assert_close(_weights(crashed / "run")[name], value, rtol=0, atol=0)


def test_killed_training_process_resumes_from_its_last_checkpoint(tmp_path, dataset):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "mlff.cli.main", "--threads", "1", "train", "-", *TINY]
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    command[command.index("-")] = str(config)
    command += [f"data.path={dataset}", f"output_dir={run}", "train.epochs=40", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved_epoch = load_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= saved_epoch < 40
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    history = load_checkpoint(run / "last.pt")["history"]
    assert [h["epoch"] for h in history] == list(range(1, 41))


def test_any_encoding_can_be_named_with_its_own_default_options():
    from mlff.models import build_model
    from mlff.training.config import load_config

    for name in ("gaussian", "bessel", "mlp", "spline"):
        config = load_config(None, [f"model.encoding={name}", "model.encoding_options={}"])
        assert config.model.encoding_options == {}
        model = build_model(config.model, [1, 6], [0.0, 0.0], 1.0)
        assert type(model.backbone.encoding).__name__.lower().startswith(name[:4])


def _blow_up_at(epoch_to_break, original, times=1):
    """A _run_epoch that, the first `times` times it reaches `epoch_to_break`, wrecks the weights (as a
    diverging step does) and reports a validation error far above the best."""
    broken = []

    def run(state, data, split, epoch):
        record = original(state, data, split, epoch)
        if epoch == epoch_to_break and len(broken) < times:
            broken.append(epoch)
            with torch.no_grad():
                for parameter in state.model.parameters():
                    parameter.mul_(1e3)
            record["val_force_mae_mev_per_a"] = 1e9
        return record

    return run


def test_a_diverged_epoch_is_undone_with_the_learning_rate_halved(tmp_path, dataset, monkeypatch):
    straight = tmp_path / "straight"
    train(tiny_config(straight, dataset, epochs=4), progress=False)
    monkeypatch.setattr(trainer_module, "_run_epoch", _blow_up_at(3, trainer_module._run_epoch))
    rolled = tmp_path / "rolled"
    result = train(tiny_config(rolled, dataset, epochs=4), progress=False)
    assert result.epochs_run == 4 and result.stopped_because == "epochs"
    checkpoint = load_checkpoint(rolled / "run" / "last.pt")
    assert checkpoint["rollbacks"] == 1
    epochs = [(h["epoch"], h.get("rejected")) for h in checkpoint["history"]]
    # The run goes on from the best of epochs 1 and 2.
    best = min(checkpoint["history"][:2], key=lambda h: h["val_force_mae_mev_per_a"])["epoch"]
    assert [e for e, _ in epochs] == [1, 2, 3, *range(best + 1, 5)] and epochs[2][1] and "x best" in epochs[2][1]
    assert all(rejected is None for i, (_, rejected) in enumerate(epochs) if i != 2)
    straight_lr = {h["epoch"]: h["lr"] for h in load_checkpoint(straight / "run" / "last.pt")["history"]}
    kept = [h for h in checkpoint["history"] if not h.get("rejected")]
    for h in kept[2:]:
        assert h["lr"] == pytest.approx(0.5 * straight_lr[h["epoch"]], rel=1e-6)
    assert kept[1]["lr"] == pytest.approx(straight_lr[2], rel=1e-6), "epochs before the rollback keep their lr"
    assert all(torch.isfinite(v).all() for v in checkpoint["model_state"].values())
    straight_state = load_checkpoint(straight / "run" / "last.pt")["model_state"]
    for name, value in checkpoint["model_state"].items():
        if value.is_floating_point():
            limit = 10 * float(straight_state[name].abs().max()) + 1e-3
            assert float(value.abs().max()) < limit, f"{name}: the wrecked weights are gone"
    lines = (rolled / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(epochs) and '"rejected"' in lines[2]


def test_rollbacks_compound_and_return_to_the_best_epoch(tmp_path, dataset, monkeypatch):
    straight = tmp_path / "straight"
    train(tiny_config(straight, dataset, epochs=4), progress=False)
    straight_lr = {h["epoch"]: h["lr"] for h in load_checkpoint(straight / "run" / "last.pt")["history"]}
    blow_up = _blow_up_at(3, trainer_module._run_epoch, times=2)

    def run(state, data, split, epoch):
        record = blow_up(state, data, split, epoch)
        if epoch == 2:
            # Worse than epoch 1 yet under the factor: kept, but not the best.
            record["val_force_mae_mev_per_a"] = 2.0 * state.best_val
        return record

    monkeypatch.setattr(trainer_module, "_run_epoch", run)
    rolled = tmp_path / "rolled"
    train(tiny_config(rolled, dataset, epochs=4), progress=False)
    history = load_checkpoint(rolled / "run" / "last.pt")["history"]
    # Both rollbacks return to epoch 1 (the best), not to epoch 2 (the last kept before them).
    assert [(h["epoch"], bool(h.get("rejected"))) for h in history] == [
        (1, False),
        (2, False),
        (3, True),
        (2, False),
        (3, True),
        (2, False),
        (3, False),
        (4, False),
    ]
    for h, scale in zip(history[3:], [0.5, 0.5, 0.25, 0.25, 0.25]):
        assert h["lr"] == pytest.approx(scale * straight_lr[h["epoch"]], rel=1e-6)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_chooses_what_best_pt_holds(tmp_path, dataset, monkeypatch, keep):
    original = trainer_module._run_epoch

    def worsening(state, data, split, epoch):
        # Every epoch after the first validates worse (under the divergence factor): the best is epoch 1.
        record = original(state, data, split, epoch)
        if epoch > 1:
            record["val_force_mae_mev_per_a"] = 1.5 * state.best_val
        return record

    monkeypatch.setattr(trainer_module, "_run_epoch", worsening)
    train(tiny_config(tmp_path, dataset, epochs=3, extra=[f"train.keep={keep}"]), progress=False)
    run = tmp_path / "run"
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    summary = json.loads((run / "results.json").read_text())
    assert summary["best_epoch"] == 1 and summary["kept_epoch"] == best["epoch"] == {"best": 1, "last": 3}[keep]
    same = all(torch.equal(best["ema_state"][k], last["ema_state"][k]) for k in last["ema_state"])
    assert same == (keep == "last")
    with pytest.raises(ConfigError, match="train.keep"):
        tiny_config(tmp_path, dataset, extra=["train.keep=first"])


def test_divergence_past_max_rollbacks_stops_the_run_on_its_best_weights(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(trainer_module, "_run_epoch", _blow_up_at(3, trainer_module._run_epoch, times=5))
    result = train(tiny_config(tmp_path, dataset, epochs=4, extra=["train.max_rollbacks=1"]), progress=False)
    assert result.stopped_because.startswith("diverged") and result.epochs_run == 2
    assert np.isfinite(result.test_metrics["force_mae_mev_per_a"])
    with pytest.raises(ConfigError, match="divergence_factor"):
        tiny_config(tmp_path, dataset, extra=["train.divergence_factor=0.5"])
