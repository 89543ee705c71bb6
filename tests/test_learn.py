"""`mlff learn`: train a committee, run MD, select, label with GFN2-xTB, append, retrain; resumable."""

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase.build import molecule
from synthetic import TINY_TRAINING_OVERRIDES, write_md17_npz

from mlff.checkpoint import load_checkpoint
from mlff.cli.main import main
from mlff.export.load import read_metadata
from mlff.learn import learn, load_learn_config
from mlff.learn import run as learn_run
from mlff.training import load_config
from mlff.training.config import ConfigError
from mlff.training.dataset import load_training_data

pytest.importorskip("tblite")


@pytest.fixture(scope="module")
def water_data(tmp_path_factory):
    """24 perturbed water molecules labelled with GFN2-xTB."""
    from mlff.data.label import label_frames

    root = tmp_path_factory.mktemp("water")
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(24):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(scale=0.015, size=atoms.positions.shape)
        frames.append(atoms)
    ase.io.write(root / "frames.extxyz", frames, format="extxyz")
    label_frames(root / "frames.extxyz", root / "water.extxyz")
    return root / "water.extxyz"


def learn_yaml(path, data, output, max_iterations):
    config = {
        "output_dir": str(output),
        "training": {
            "inline": {"data": {"path": str(data)}},
            "overrides": [*TINY_TRAINING_OVERRIDES, "train.epochs=1", "train.warmup_epochs=0"],
            "committee": 2,
        },
        # A one-epoch model of water at 500 K loses a bond within 50 fs, and every frame passes this
        # spread threshold: both iterations collapse and select frames.
        "md": {
            "protocol": "quick-500k",
            "replicas": 2,
            "settings": {"steps": 100, "save_every": 2, "max_bond_deviation_a": 0.1},
        },
        # The prior a shipped potential carries; the loop's MD runs with it.
        "export": {"core_repulsion": 10.0},
        "selection": {"spread_threshold_ev_per_a": 1.0e-9, "max_frames": 4, "bond_deviation_a": 0.02},
        "label": {"method": "gfn2-xtb"},
        "budget": {"max_iterations": max_iterations, "max_labels": 100},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_learn_runs_two_iterations_and_resumes_where_it_stopped(water_data, tmp_path, monkeypatch, capsys):
    output = tmp_path / "learn"
    first = learn(load_learn_config(learn_yaml(tmp_path / "one.yaml", water_data, output, 1)))
    assert first["iterations_run"] == 1 and first["finished"].startswith("iteration budget spent")
    iteration0 = first["iterations"][0]
    assert iteration0["step"] == "done" and not iteration0["stable"]
    assert 0 < iteration0["labelled"] == iteration0["selected"] <= 4
    # The committee's error on the frames it chose, against their new labels, beside its spread there.
    assert iteration0["labelled_force_mae_mev_per_a"] > 0 and iteration0["labelled_spread_mean_mev_per_a"] > 0
    assert len(ase.io.read(output / "iter_000" / "labelled.extxyz", ":")) == iteration0["labelled"]
    prior = read_metadata(output / "iter_000" / "committee.pt")["core_repulsion"]
    assert prior["kind"] == "cubic" and prior["strength_ev_per_a3"] == 10.0
    best0 = output / "iter_000" / "train" / "member_0" / "best.pt"
    stamp0 = best0.stat().st_mtime_ns

    # A crash in iteration 1's MD (after its training and export): the state stops at "md".
    config2 = learn_yaml(tmp_path / "two.yaml", water_data, output, 2)

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setitem(learn_run._STEP_FUNCTIONS, "md", crash)
    with pytest.raises(RuntimeError, match="killed"):
        learn(load_learn_config(config2), resume=True)
    state = json.loads((output / "learn_state.json").read_text())
    assert [record["step"] for record in state["iterations"]] == ["done", "md"]
    best1 = output / "iter_001" / "train" / "member_1" / "best.pt"
    stamp1 = best1.stat().st_mtime_ns
    monkeypatch.undo()

    # Ctrl-C (or SIGTERM) mid-step: the command says how to continue and exits 130, keeping the state.
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(learn_run._STEP_FUNCTIONS, "md", interrupt)
    assert main(["learn", str(config2), "--resume"]) == 130
    assert "continue with: mlff learn" in capsys.readouterr().out
    monkeypatch.undo()
    # A run whose saved config predates a section (here `export`) resumes with that section's defaults.
    saved = (output / "learn_state.json").read_text()
    state = json.loads(saved)
    del state["config"]["export"]
    (output / "learn_state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"changed config \['export.core_repulsion'\]"):
        learn(load_learn_config(config2), resume=True)
    (output / "learn_state.json").write_text(saved)

    # Resume through the CLI: iteration 0 and iteration 1's training are not redone.
    labelled = []
    original = learn_run._STEP_FUNCTIONS["label"]
    monkeypatch.setitem(
        learn_run._STEP_FUNCTIONS,
        "label",
        lambda c, b, s, record, *rest: labelled.append(record["index"]) or original(c, b, s, record, *rest),
    )
    assert main(["learn", str(config2), "--resume"]) == 0
    assert labelled == [1]
    assert best0.stat().st_mtime_ns == stamp0 and best1.stat().st_mtime_ns == stamp1
    summary = json.loads((output / "summary.json").read_text())
    assert summary["iterations_run"] == 2 and summary["finished"].startswith("iteration budget spent")
    assert summary["frames_labelled"] == sum(row["labelled"] for row in summary["iterations"])
    # CPU time per step, summed into the run's CPU-hours.
    assert set(summary["iterations"][0]["cpu_seconds"]) == {"train", "export", "md", "select", "label"}
    assert all(seconds > 0.0 for seconds in summary["iterations"][0]["cpu_seconds"].values())
    total = sum(sum(row["cpu_seconds"].values()) for row in summary["iterations"])
    assert summary["cpu_hours"] == pytest.approx(total / 3600.0)
    assert (output / "learn.png").stat().st_size > 0
    assert (output / "iter_001" / "md" / "summary.json").is_file()
    # Iteration 1 fine-tuned each member from iteration 0's, on the frames labelled there (training only).
    member = load_checkpoint(best1)
    assert member["config"]["init_from"] == str(output / "iter_000" / "train" / "member_1" / "best.pt")
    extra = str(output / "iter_000" / "labelled.extxyz")
    assert member["config"]["data"]["extra_train_paths"] == [extra]
    # ... and kept its last epoch (training.finetune_keep), where iteration 0 kept its best one.
    assert member["config"]["train"]["keep"] == "last"
    assert load_checkpoint(best0)["config"]["train"]["keep"] == "best"
    assert extra in member["data_summary"]["extra_train_paths"]
    # A finished run resumes to nothing new; a changed config is refused.
    assert learn(load_learn_config(config2), resume=True)["iterations_run"] == 2
    # The MD engine may change on resume (it changes no physics).
    assert learn(load_learn_config(config2, ["md.engine=torch-compiled"]), resume=True)["iterations_run"] == 2
    with pytest.raises(ValueError, match="changed config"):
        learn(load_learn_config(config2, ["selection.max_frames=7"]), resume=True)
    with pytest.raises(ValueError, match="already holds"):
        learn(load_learn_config(config2))


def test_extra_train_paths_join_training_only_with_or_without_their_energies(tmp_path):
    base = write_md17_npz(tmp_path / "mol.npz", num_frames=30)
    plain = load_training_data(load_config(None, [f"data.path={base}", "data.n_val=4"]).data)
    frames = [molecule("CH3OH") for _ in range(3)]
    extra_frames = []
    for atoms in frames:
        atoms = atoms[[0, 1, 2, 3, 4]]
        atoms.calc = None
        atoms.info["energy"] = -1.0
        atoms.arrays["forces"] = np.zeros((len(atoms), 3))
        extra_frames.append(atoms)
    ase.io.write(tmp_path / "extra.extxyz", extra_frames, format="extxyz")
    overrides = [f"data.path={base}", "data.n_val=4", f"data.extra_train_paths=[{tmp_path / 'extra.extxyz'}]"]
    config = load_config(None, overrides)
    data = load_training_data(config.data)
    assert data.frames.num_frames == 33
    np.testing.assert_array_equal(data.split.val, plain.split.val)
    np.testing.assert_array_equal(data.split.test, plain.split.test)
    np.testing.assert_array_equal(data.split.train, np.concatenate([plain.split.train, [30, 31, 32]]))
    assert list(data.summary(config.data)["extra_train_paths"]) == [str(tmp_path / "extra.extxyz")]
    assert data.frames.has_energy[30:].all()
    forces_only = load_training_data(load_config(None, [*overrides, "data.extra_energies=false"]).data)
    assert not forces_only.frames.has_energy[30:].any()
    np.testing.assert_array_equal(forces_only.frames.has_energy[:30], data.frames.has_energy[:30])
    np.testing.assert_array_equal(forces_only.frames.forces, data.frames.forces)
    thrice = load_training_data(load_config(None, [*overrides, "data.extra_repeat=3"]).data)
    np.testing.assert_array_equal(thrice.split.train, np.concatenate([plain.split.train, [30, 31, 32] * 3]))
    np.testing.assert_array_equal(thrice.split.val, plain.split.val)
    with pytest.raises(ConfigError, match="extra_repeat"):
        load_config(None, [*overrides, "data.extra_repeat=0"])


@pytest.mark.parametrize(
    ("name", "data_file"),
    [
        ("xtb_ethanol", "xtb_ethanol.npz"),
        ("pbe_ethanol", "rmd17_ethanol.npz"),
        ("pbe_toluene", "rmd17_toluene.npz"),
        ("pbe_naphthalene", "rmd17_naphthalene.npz"),
        ("pbe_malonaldehyde", "rmd17_malonaldehyde.npz"),
        ("pbe_aspirin", "rmd17_aspirin.npz"),
    ],
)
def test_the_reported_learn_configs_load_with_their_training_configs(name, data_file, monkeypatch):
    # Their training.config paths are relative to the repository root, where the commands run.
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    config = load_learn_config(root / "examples" / "learn" / f"{name}.yaml")
    training = config.training_config()
    assert training.model.backbone == "egnn" and Path(training.data.path).name == data_file
    assert all(Path(path).is_file() for path in training.data.extra_train_paths)  # seed labels are in git
    start = config.training.init_from or ""
    # A start in potentials/ is a file in git (a run folder's checkpoint is not).
    assert not start.startswith("potentials/") or Path(start).is_file()


def test_learn_config_is_validated(tmp_path):
    config = load_learn_config(None, ["training.committee=3", "md.time=2ps", "md.temperature_k=400"])
    assert config.training.committee == 3 and config.md.time == "2ps"
    assert learn_run.md_settings(config).steps == 4000 and learn_run.md_settings(config).temperature_k == 400
    with pytest.raises(ConfigError, match="committee"):
        load_learn_config(None, ["training.committee=1"])
    with pytest.raises(ConfigError, match="selection.max_frame"):
        load_learn_config(None, ["selection.max_frame=3"])
    with pytest.raises(ConfigError, match="selection.spread_ceiling_factor must be > 1"):
        load_learn_config(None, ["selection.spread_ceiling_factor=1"])
    with pytest.raises(ConfigError, match="label.method"):
        load_learn_config(None, ["label.method=b3lyp"])
    with pytest.raises(ConfigError, match="training.finetune_keep"):
        load_learn_config(None, ["training.finetune_keep=first"])
    with pytest.raises(ConfigError, match="export.core_repulsion"):
        load_learn_config(None, ["export.core_repulsion=-1"])
    with pytest.raises(ConfigError, match="repulsion must be one of"):
        load_learn_config(None, ["export.repulsion=morse"])
    assert load_learn_config(None, ["md.engine=torch-compiled"]).md.engine == "torch-compiled"
    with pytest.raises(ConfigError, match="md.engine must be one of"):
        load_learn_config(None, ["md.engine=openmm"])
