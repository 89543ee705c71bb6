"""The study and retraining scripts carry their state across machines: a run folder does not outlive
the machine it ran on, the committed report and the shipped potential do."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
RUN_STUDY = load_script(ROOT / "examples" / "recipe" / "run_study.py", "run_study_script")
RETRAIN = load_script(ROOT / "scripts" / "retrain_potentials.py", "retrain_potentials_script")

STUDY = {
    "datasets": {"ethanol": {"file": "{md17}/e.npz", "sha256": "0"}},
    "compare": {"molecules": ["ethanol"], "arms": {"plain_s0": [], "polar_s0": ["x=1"], "empp_s0": ["y=1"]}},
}


def row(arm: str, finished: bool, test: float | None) -> dict:
    return {"molecule": "ethanol", "arm": arm, "finished": finished, "test_force_mae": test}


def test_a_report_keeps_the_finished_arms_of_the_earlier_report_whose_runs_are_gone(tmp_path):
    earlier = tmp_path / "compare.json"
    earlier.write_text(
        json.dumps([row("plain_s0", True, 20.0), row("polar_s0", True, 14.0), row("empp_s0", False, None)])
    )
    fresh = [row("empp_s0", True, 19.9), row("polar_s0", True, 13.5)]
    rows = RUN_STUDY.with_earlier(fresh, earlier, STUDY, "compare")
    # The study's order; a fresh row replaces the earlier one; plain_s0 survives from the earlier report.
    assert [(r["arm"], r["test_force_mae"]) for r in rows] == [
        ("plain_s0", 20.0),
        ("polar_s0", 13.5),
        ("empp_s0", 19.9),
    ]
    # An unfinished earlier arm is not kept when its run is gone (its numbers were of a run in progress).
    assert [r["arm"] for r in RUN_STUDY.with_earlier([], earlier, STUDY, "compare")] == ["plain_s0", "polar_s0"]
    assert RUN_STUDY.with_earlier(fresh, tmp_path / "absent.json", STUDY, "compare") == fresh


@pytest.fixture
def retrain_root(tmp_path, monkeypatch):
    """A repository of one molecule: its config, and a shipped card that records the config's training."""
    configs = tmp_path / "potentials" / "configs"
    configs.mkdir(parents=True)
    train = {"epochs": 100000, "batch_size": 32, "lr": 5.0e-3, "max_cpu_minutes": 100}
    config = {"data": {}, "model": {}, "train": train, "output_dir": "runs/potentials/toluene"}
    (configs / "toluene.yaml").write_text(yaml.safe_dump(config))
    recorded = {**train, "lr": 0.005, "max_cpu_minutes": 100.0, "warmup_epochs": 2}
    card = {"training": {"command": "mlff train potentials/configs/toluene.yaml data.path=X", "config": recorded}}
    (tmp_path / "potentials" / "toluene.yaml").write_text(yaml.safe_dump(card))
    monkeypatch.setattr(RETRAIN, "ROOT", tmp_path)
    monkeypatch.setattr(RETRAIN, "CONFIGS", configs)
    return tmp_path


def test_the_learn_loop_starts_from_the_shipped_file_only_when_its_card_records_the_config(retrain_root):
    config = retrain_root / "potentials" / "configs" / "toluene.yaml"
    assert RETRAIN.learn_start("toluene", config) == retrain_root / "potentials" / "toluene.pt"
    # The finished run's own best.pt comes first.
    run = retrain_root / "runs" / "potentials" / "toluene"
    run.mkdir(parents=True)
    (run / "results.json").write_text("{}")
    assert RETRAIN.learn_start("toluene", config) == run / "best.pt"
    (run / "results.json").unlink()
    # A config changed since the file was shipped (another learning rate) is not the file's.
    text = yaml.safe_load(config.read_text())
    text["train"]["lr"] = 1.0e-2
    config.write_text(yaml.safe_dump(text))
    assert RETRAIN.learn_start("toluene", config) is None


def test_learn_passes_a_molecules_own_learn_config_with_its_data_path(retrain_root, monkeypatch):
    from mlff.learn import load_learn_config

    own = retrain_root / "examples" / "learn" / "pbe_toluene.yaml"
    own.parent.mkdir(parents=True)
    overrides = ["data.path=~/x.npz", "train.keep=last", "data.extra_train_paths=[a.extxyz, b.extxyz]"]
    own.write_text(yaml.safe_dump({"output_dir": "runs/learn/pbe_toluene", "training": {"overrides": overrides}}))
    commands = []
    monkeypatch.setattr(RETRAIN, "run", commands.append)
    RETRAIN.learn(RETRAIN.argparse.Namespace(only=["toluene"], md17_dir="/data"))
    (command,) = commands
    assert command[:5] == ["mlff", "--threads", "1", "learn", "examples/learn/pbe_toluene.yaml"]
    # The command line's list replaces the config's: it must parse back to every entry, data.path set.
    passed = load_learn_config(own, [command[5]]).training.overrides
    assert passed == ["data.path=/data/rmd17_toluene.npz", *overrides[1:]]


@pytest.mark.parametrize("energies", [True, False])
def test_the_last_stage_trains_the_loops_seed_labels_and_its_energy_choice(retrain_root, energies):
    base = yaml.safe_load((retrain_root / "potentials" / "configs" / "toluene.yaml").read_text())
    base["train"]["loss_weights"] = {"energy": 1.0, "forces": 100.0}
    labels = [retrain_root / "examples" / "learn" / "results" / "pbe_toluene_labels" / "iter_000.extxyz"]
    text = RETRAIN.final_config("toluene", base, 2, labels, ["seed.extxyz"], energies)
    config = yaml.safe_load(text)
    labels_path = "examples/learn/results/pbe_toluene_labels/iter_000.extxyz"
    assert config["data"]["extra_train_paths"] == ["seed.extxyz", labels_path]
    assert config["data"]["extra_energies"] is energies
    assert config["train"].get("keep", "best") == ("last" if energies else "best")
    assert config["init_from"] == "runs/learn/pbe_toluene/iter_002/train/member_0/best.pt"
