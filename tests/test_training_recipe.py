"""The training-recipe features: CPU-time cap, learning curve, auto spline range, several files, bench train."""

import json
import math

import numpy as np
import pytest
import torch
from synthetic import TINY_TRAINING_OVERRIDES, write_md17_npz

import mlff.training.trainer as trainer_module
from mlff.bench.train import PHASES, TrainBenchSettings, train_benchmark
from mlff.checkpoint import load_checkpoint, model_from_checkpoint
from mlff.data import read_frames
from mlff.data.batch import FrameTensors
from mlff.evaluate import evaluate
from mlff.training import ConfigError, load_config, train
from mlff.training.curves import read_learning_curve
from mlff.training.encoding_range import fitted_options, pair_distance_range

TINY = [*TINY_TRAINING_OVERRIDES, "train.loss_weights.smoothness=0.01"]


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    return None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_md17_npz(tmp_path_factory.mktemp("data") / "mol.npz", num_frames=40)


@pytest.fixture(scope="module")
def second_dataset(tmp_path_factory):
    return write_md17_npz(tmp_path_factory.mktemp("data2") / "other.npz", num_frames=30, seed=7)


def config(tmp_path, data, *extra, name="run"):
    return load_config(None, [*TINY, f"data.path={data}", f"output_dir={tmp_path / name}", *extra])


class FakeCPU:
    """A process clock that advances one second per reading: the cap falls at a fixed step count."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_cpu_time_cap_stops_the_run_and_counts_across_a_resume(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(trainer_module.time, "process_time", FakeCPU())
    first = train(config(tmp_path, dataset, "train.epochs=1000", "train.max_cpu_minutes=0.5"), progress=False)
    assert first.stopped_because.startswith("CPU-time cap of 0.5 minutes")
    assert first.epochs_run < 1000
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    spent = history[-1]["cpu_seconds_total"]
    assert 25.0 < spent < 60.0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["cpu_seconds"] == pytest.approx(spent, abs=2.0)
    # The schedule annealed to the cap: the last epoch ran at the floor learning rate.
    peak = load_config(None, TINY).train.lr
    assert history[-1]["lr"] < 0.02 * peak < history[0]["lr"]

    monkeypatch.setattr(trainer_module.time, "process_time", FakeCPU())  # a new process starts its clock anew
    resumed = train(
        config(tmp_path, dataset, "train.epochs=1000", "train.max_cpu_minutes=1"), resume=True, progress=False
    )
    assert resumed.stopped_because.startswith("CPU-time cap of 1 minutes")
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    totals = [record["cpu_seconds_total"] for record in history]
    assert totals == sorted(totals), "CPU time counted across the resume never goes back"
    assert [r["epoch"] for r in history] == list(range(1, resumed.epochs_run + 1))
    assert 55.0 < totals[-1] < 90.0


def test_resuming_a_run_whose_cap_is_spent_trains_no_further_epoch(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(trainer_module.time, "process_time", FakeCPU())
    capped = config(tmp_path, dataset, "train.epochs=1000", "train.max_cpu_minutes=0.5")
    first = train(capped, progress=False)
    best = (tmp_path / "run" / "best.pt").read_bytes()
    monkeypatch.setattr(trainer_module.time, "process_time", FakeCPU())
    again = train(capped, resume=True, progress=False)
    assert again.epochs_run == first.epochs_run and again.stopped_because.startswith("CPU-time cap of 0.5 minutes")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == first.epochs_run and (tmp_path / "run" / "best.pt").read_bytes() == best
    assert again.test_metrics == first.test_metrics


def test_negative_caps_are_refused():
    with pytest.raises(ConfigError, match="train.max_cpu_minutes"):
        load_config(None, ["train.max_cpu_minutes=-1"])


def test_learning_curve_holds_the_logged_values(tmp_path, dataset):
    train(config(tmp_path, dataset, "train.epochs=3"), progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    curve = read_learning_curve(tmp_path / "run" / "curve.png")
    assert curve["epoch"] == [1, 2, 3]
    assert curve["val_force_mae_mev_per_a"] == [r["val_force_mae_mev_per_a"] for r in history]
    assert [s for s, _ in curve["steps"]] == [r["steps"] for r in history]
    assert [h for h, _ in curve["cpu_hours"]] == pytest.approx([r["cpu_seconds_total"] / 3600 for r in history])
    assert history[-1]["steps"] == 3 * math.ceil(history[-1]["steps"] / 3)


def test_auto_spline_range_is_fitted_stored_and_reloaded(tmp_path, dataset):
    run = config(
        tmp_path, dataset, "train.epochs=2", "model.encoding_options.r_min=auto", "model.encoding_options.r_max=auto"
    )
    train(run, progress=False)
    frames = read_frames(dataset)
    shortest, longest = pair_distance_range(frames, np.arange(frames.num_frames), 5.0)
    options = load_checkpoint(tmp_path / "run" / "last.pt")["config"]["model"]["encoding_options"]
    assert 0.0 < options["r_min"] < shortest and longest < options["r_max"] <= 5.0
    assert shortest - options["r_min"] < 0.2 and options["r_max"] - longest < 0.2
    # --resume with the config still saying auto keeps the recorded numbers.
    resumed = config(
        tmp_path, dataset, "train.epochs=3", "model.encoding_options.r_min=auto", "model.encoding_options.r_max=auto"
    )
    train(resumed, resume=True, progress=False)
    again = load_checkpoint(tmp_path / "run" / "last.pt")
    assert again["config"]["model"]["encoding_options"] == options
    model = model_from_checkpoint(again)
    assert model.backbone.encoding.r_min == options["r_min"]
    # A potential exported from it carries the numbers too.
    from mlff.export import export_checkpoint, read_metadata

    path = export_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "p.pt")
    assert read_metadata(path)["model"]["config"]["encoding_options"] == options


def test_auto_is_only_for_the_range_and_never_reaches_an_encoding():
    with pytest.raises(ConfigError, match="n_bins"):
        fitted_options({"n_bins": "auto"}, 1.0, 3.0, 5.0)
    from mlff.encodings import build_encoding

    with pytest.raises(ValueError, match="auto"):
        build_encoding("spline", 4, 5.0, r_min="auto")
    assert fitted_options({"r_min": "auto", "r_max": "auto", "n_bins": 8}, 0.95, 4.99, 5.0) == {
        "r_min": 0.85,
        "r_max": 5.0,
        "n_bins": 8,
    }


def _weights(run):
    return load_checkpoint(run / "last.pt")["model_state"]


def test_a_list_of_one_file_equals_the_one_file_run(tmp_path, dataset):
    single = train(config(tmp_path, dataset, "train.epochs=2", name="single"), progress=False)
    listed_config = load_config(
        None, [*TINY, f"data.path=[{dataset}]", f"output_dir={tmp_path / 'listed'}", "train.epochs=2"]
    )
    assert listed_config.data.path == [str(dataset)]
    listed = train(listed_config, progress=False)
    assert single.test_metrics == listed.test_metrics
    for key, value in _weights(tmp_path / "single").items():
        assert torch.equal(value, _weights(tmp_path / "listed")[key]), key


def test_two_files_report_per_file_and_overall_errors(tmp_path, dataset, second_dataset):
    run = load_config(
        None, [*TINY, f"data.path=[{dataset}, {second_dataset}]", f"output_dir={tmp_path / 'two'}", "train.epochs=2"]
    )
    result = train(run, progress=False)
    summary = json.loads((tmp_path / "two" / "results.json").read_text())
    per_file = summary["test_per_file"]
    assert set(per_file) == {"mol", "other"}
    assert per_file["mol"]["frames"] == 20 and per_file["other"]["frames"] == 15
    history = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert {"val_mol/force_mae_mev_per_a", "val_other/force_mae_mev_per_a"} <= set(history[-1])
    # The combined figures equal one evaluation over the union of the files' test frames.
    from mlff.data import Frames

    checkpoint = load_checkpoint(tmp_path / "two" / "best.pt")
    model = model_from_checkpoint(checkpoint).eval()
    frames = Frames.concatenate([read_frames(dataset), read_frames(second_dataset)])
    from mlff.training.dataset import load_training_data

    split = load_training_data(run.data).split
    union = evaluate(model, FrameTensors(frames), split.test, 100)
    for key in ("force_mae_mev_per_a", "force_rmse_mev_per_a", "energy_mae_mev", "energy_rmse_mev"):
        assert result.test_metrics[key] == pytest.approx(union[key], rel=1e-9), key
    assert checkpoint["data_summary"]["files"]["other"]["test"] == 15


def test_a_file_named_twice_is_refused(dataset):
    with pytest.raises(ConfigError, match="more than once"):
        load_config(None, [f"data.path=[{dataset}, {dataset}]"])


def test_bench_train_breakdown_sums_to_the_measured_step(tmp_path, dataset):
    path = tmp_path / "tiny.yaml"
    import yaml

    raw = {}
    from mlff.training.config import apply_override

    for override in [*TINY, f"data.path={dataset}"]:
        apply_override(raw, override)
    path.write_text(yaml.safe_dump(raw))
    rows = train_benchmark([str(path), str(path)], TrainBenchSettings(steps=2, rounds=3, warmup=1))
    assert len(rows) == 2
    for row in rows:
        parts = row["breakdown_ms"]
        assert set(parts) == set(PHASES)
        assert all(value >= 0.0 for value in parts.values())
        assert sum(parts.values()) == pytest.approx(row["ms_per_step"], rel=1e-9)
        assert row["frames_per_s"] == pytest.approx(8 / (row["ms_per_step"] / 1000.0))
        assert parts["forward"] > 0 and parts["param_backward"] > 0


def test_a_pinned_sha256_refuses_other_bytes_and_the_hash_is_recorded(tmp_path, dataset, second_dataset):
    from mlff.data import DatasetError
    from mlff.utils import sha256_of

    good = sha256_of(dataset)
    with pytest.raises(DatasetError, match="SHA-256"):
        train(config(tmp_path, second_dataset, "train.epochs=1", f"data.sha256={good}", name="bad"), progress=False)
    assert not (tmp_path / "bad" / "last.pt").exists()
    train(config(tmp_path, dataset, "train.epochs=1", f"data.sha256={good}", name="good"), progress=False)
    assert load_checkpoint(tmp_path / "good" / "last.pt")["data_summary"]["sha256"] == good
    with pytest.raises(ConfigError, match="data.sha256 gives 1"):
        load_config(None, [f"data.path=[{dataset}, {second_dataset}]", f"data.sha256={good}"])
