"""The study and retraining scripts carry their state across machines: a run folder does not outlive
the machine it ran on, the committed report and the shipped potential do."""

import json
import subprocess
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


def commit_all(root: Path) -> str:
    """Make `root` a git repository holding its files in one commit; returns the commit's short hash."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "shipped"], check=True)
    return subprocess.run([*git, "log", "-1", "--format=%h"], capture_output=True, text=True).stdout.strip()


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
    RETRAIN.learn(RETRAIN.argparse.Namespace(only=["toluene"], md17_dir="/data", round=1))
    (command,) = commands
    assert command[:5] == ["mlff", "--threads", "1", "learn", "examples/learn/pbe_toluene.yaml"]
    # The command line's list replaces the config's: it must parse back to every entry, data.path set.
    passed = load_learn_config(own, [command[5]]).training.overrides
    assert passed == ["data.path=/data/rmd17_toluene.npz", *overrides[1:]]


@pytest.mark.parametrize("energies", [True, False])
def test_the_last_stage_trains_the_loops_seed_labels_and_its_energy_choice(retrain_root, energies):
    base = yaml.safe_load((retrain_root / "potentials" / "configs" / "toluene.yaml").read_text())
    base["train"]["loss_weights"] = {"energy": 1.0, "forces": 100.0}
    base["train"]["batch_size"] = 256  # stage 1 on a GPU; the loop and stage 3 run at the CPU's batch
    labels = [retrain_root / "examples" / "learn" / "results" / "pbe_toluene_labels" / "iter_000.extxyz"]
    text = RETRAIN.final_config("toluene", base, 2, labels, ["seed.extxyz"], energies, 32)
    config = yaml.safe_load(text)
    labels_path = "examples/learn/results/pbe_toluene_labels/iter_000.extxyz"
    assert config["data"]["extra_train_paths"] == ["seed.extxyz", labels_path]
    assert config["data"]["extra_energies"] is energies
    assert config["train"].get("keep", "best") == ("last" if energies else "best")
    assert config["init_from"] == "runs/learn/pbe_toluene/iter_002/train/member_0/best.pt"
    assert config["train"]["batch_size"] == 32 and config["train"]["compile"] is True
    assert config["train"]["epochs"] == 60 and config["output_dir"] == "runs/potentials/toluene_learned"
    longer = yaml.safe_load(RETRAIN.final_config("toluene", base, 2, labels, ["seed.extxyz"], energies, 32, 240))
    assert longer["train"]["epochs"] == 240 and longer["output_dir"] == "runs/potentials/toluene_learned_240ep"
    assert {**longer, "train": config["train"], "output_dir": None} == {**config, "output_dir": None}


def card(force: float, collapsed: int | None) -> dict:
    stability = {} if collapsed is None else {"stability": {"collapsed_seeds": collapsed, "seeds": 5}}
    return {"test_metrics": {"force_mae_mev_per_a": force}, **stability}


def test_a_second_round_starts_from_the_shipped_file_and_keeps_its_labels(retrain_root, monkeypatch):
    """`learn --round 2` of a molecule shipped after a loop: the shipped file as the start, stage 1's
    config, the labels the shipped stage trained on, a longer MD, its own folder; `final --round 2`
    writes the last stage from that folder, with both rounds' labels, into its own run folder."""
    from mlff.learn import load_learn_config

    configs = retrain_root / "potentials" / "configs"
    stage_1 = yaml.safe_load((configs / "toluene.yaml").read_text())
    stage_1["train"]["loss_weights"] = {"energy": 1.0, "forces": 100.0}
    (configs / "toluene_base.yaml").write_text(yaml.safe_dump(stage_1))
    stage_3 = yaml.safe_load((configs / "toluene.yaml").read_text())
    first_labels = "examples/learn/results/pbe_toluene_labels/iter_000.extxyz"
    stage_3["data"] = {"extra_train_paths": [first_labels], "extra_energies": True}
    (configs / "toluene.yaml").write_text(yaml.safe_dump(stage_3))
    (retrain_root / "potentials" / "toluene.pt").write_bytes(b"shipped")
    commit = commit_all(retrain_root)
    commands = []
    monkeypatch.setattr(RETRAIN, "run", commands.append)
    RETRAIN.learn(RETRAIN.argparse.Namespace(only=["toluene"], md17_dir="/data", round=1))
    assert commands == [], "round 1 of a shipped last stage is done"
    RETRAIN.learn(RETRAIN.argparse.Namespace(only=["toluene"], md17_dir="/data", round=2))
    (command,) = commands
    assert "output_dir=runs/learn/pbe_toluene_r2" in command
    # The start is the shipped file kept under the commit that shipped it (it stays when another is shipped).
    start = f"potentials/starts/toluene_{commit}.pt"
    assert f"training.init_from={start}" in command
    assert (retrain_root / start).read_bytes() == b"shipped"
    assert "training.config=potentials/configs/toluene_base.yaml" in command
    assert {"md.replicas=10", "md.time=100ps"} <= set(command)
    example = Path(__file__).resolve().parents[1] / "examples" / "learn" / "pbe_ethanol.yaml"
    passed = load_learn_config(example, [command[-1]]).training.overrides
    assert "data.path=/data/rmd17_toluene.npz" in passed and "data.extra_energies=true" in passed
    assert f"data.extra_train_paths=[{first_labels}]" in passed

    loop = retrain_root / "runs" / "learn" / "pbe_toluene_r2"
    (loop / "iter_000").mkdir(parents=True)
    (loop / "iter_000" / "labelled.extxyz").write_text("round 2\n")
    iterations = [{"index": 0, "stable": False, "labelled": 40}, {"index": 1, "stable": True, "labelled": 0}]
    (loop / "summary.json").write_text(json.dumps({"iterations": iterations}))
    training = {
        "config": "potentials/configs/toluene_base.yaml",
        "init_from": start,
        "overrides": ["train.keep=last", f"data.extra_train_paths=[{first_labels}]"],
    }
    (loop / "learn_state.json").write_text(json.dumps({"config": {"output_dir": str(loop), "training": training}}))
    # Resumed after another file is shipped: the start the run recorded.
    (retrain_root / "potentials" / "toluene.pt").write_bytes(b"shipped later")
    RETRAIN.learn(RETRAIN.argparse.Namespace(only=["toluene"], md17_dir="/data", round=2))
    assert f"training.init_from={start}" in commands[-1] and commands[-1][-1] == "--resume"
    base_text = (configs / "toluene_base.yaml").read_text()
    RETRAIN.final(RETRAIN.argparse.Namespace(only=["toluene"], epochs=200, again=False, round=2))
    assert (configs / "toluene_base.yaml").read_text() == base_text
    written = yaml.safe_load((configs / "toluene.yaml").read_text())
    second_labels = "examples/learn/results/pbe_toluene_r2_labels/iter_000.extxyz"
    assert (retrain_root / second_labels).read_text() == "round 2\n"
    assert written["data"]["extra_train_paths"] == [first_labels, second_labels]
    assert written["init_from"] == "runs/learn/pbe_toluene_r2/iter_001/train/member_0/best.pt"
    assert written["output_dir"] == "runs/potentials/toluene_learned_200ep_r2"
    header = (configs / "toluene.yaml").read_text()
    assert "--round 2" in header and "examples/learn/results/pbe_toluene_r2_labels/" in header
    assert f"from the\n#    file shipped at {commit} ({start}, its card beside it)" in header
    # Resumed after `final` put the round's labels into the last stage: the round's own command again.
    RETRAIN.learn(RETRAIN.argparse.Namespace(only=["toluene"], md17_dir="/data", round=2))
    passed = load_learn_config(example, [commands[-1][-2]]).training.overrides
    assert passed == training["overrides"] and commands[-1][-1] == "--resume"
    assert "iteration 1 held 10 of 10" in header, "a later round runs 10 replicas"


def test_a_new_potential_replaces_the_shipped_one_only_when_no_less_stable_and_better():
    assert RETRAIN.replaces(card(12.0, 0), card(10.9, 3))  # more stable, less accurate: the MD counts first
    assert RETRAIN.replaces(card(6.0, 1), card(17.5, 1))  # as stable, more accurate
    assert not RETRAIN.replaces(card(6.0, 3), card(17.5, 1))  # more accurate, less stable
    assert not RETRAIN.replaces(card(18.0, 1), card(17.5, 1))  # as stable, less accurate
    assert RETRAIN.replaces(card(18.0, 1), None)  # nothing shipped yet
    assert not RETRAIN.replaces(card(6.0, None), card(17.5, 1))  # not benchmarked: it has shown nothing


def test_ship_stages_a_less_stable_potential_and_restores_the_committed_one(retrain_root, monkeypatch):
    molecule, root = "toluene", retrain_root
    stability = root / "potentials" / "stability-cpu"

    def shipped_state(force: float, collapsed: int, tag: str) -> None:
        (root / "potentials" / f"{molecule}.pt").write_bytes(tag.encode())
        old = yaml.safe_load((root / "potentials" / f"{molecule}.yaml").read_text())
        (root / "potentials" / f"{molecule}.yaml").write_text(yaml.safe_dump({**old, **card(force, collapsed)}))
        (stability / molecule).mkdir(parents=True, exist_ok=True)
        row = {"molecule": molecule, "collapsed_seeds": collapsed, "tag": tag}
        (stability / "stability.json").write_text(json.dumps({"rows": [row]}))
        (stability / "report.md").write_text(tag)
        for name in ("summary.json", "hr.png", "bond_deviation.png"):
            (stability / molecule / name).write_text(tag)

    shipped_state(17.5, 1, "shipped")
    committed_config = (root / "potentials" / "configs" / f"{molecule}.yaml").read_text()
    commit_all(root)
    # The stage's config and finished run, then an export and benchmark (faked) that lose more seeds.
    run_dir = root / "runs" / "potentials" / molecule
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text("{}")
    (root / "potentials" / "configs" / f"{molecule}.yaml").write_text(
        "# stage 1\ntrain: {lr: 0.005}\noutput_dir: runs/potentials/toluene\n"
    )
    monkeypatch.setattr(RETRAIN, "run", lambda command: None)
    shipped_state(6.0, 3, "new")
    (stability / molecule / "replica_0.h5").write_text("md")
    args = type("Args", (), {"only": [molecule], "md17_dir": "DIR", "accept": False})()
    RETRAIN.ship(args)

    staged = root / "potentials" / "stages" / molecule
    assert (staged / f"{molecule}.pt").read_bytes() == b"new"
    assert yaml.safe_load((staged / f"{molecule}.yaml").read_text())["stability"]["collapsed_seeds"] == 3
    assert json.loads((staged / "stability" / "row.json").read_text())["tag"] == "new"
    assert (staged / "stability" / "hr.png").read_text() == "new"
    assert "not shipped" in (staged / "config.yaml").read_text()
    assert yaml.safe_load((staged / "config.yaml").read_text())["output_dir"] == "runs/potentials/toluene"
    # The shipped file, card, rows and config as committed; the stage's MD where --recorded reads it.
    assert (root / "potentials" / f"{molecule}.pt").read_bytes() == b"shipped"
    assert yaml.safe_load((root / "potentials" / f"{molecule}.yaml").read_text())["stability"]["collapsed_seeds"] == 1
    assert json.loads((stability / "stability.json").read_text())["rows"][0]["tag"] == "shipped"
    assert (stability / molecule / "summary.json").read_text() == "shipped"
    assert (root / "potentials" / "configs" / f"{molecule}.yaml").read_text() == committed_config
    recorded = root / "runs" / "stages" / molecule / "stability" / molecule
    assert (recorded / "replica_0.h5").read_text() == "md" and not (stability / molecule / "replica_0.h5").exists()
    assert (recorded / "summary.json").read_text() == "new"

    # With that stage committed (configs and docs point at it), the next candidate that loses is
    # staged under its run folder's name (here the molecule's own, taken: with a number); the
    # committed stage stays as it is.
    commit_all(root)
    stage_config = "train: {}\noutput_dir: runs/potentials/toluene\n"
    (root / "potentials" / "configs" / f"{molecule}.yaml").write_text(stage_config)
    shipped_state(7.0, 2, "next")
    RETRAIN.ship(args)
    assert (staged / f"{molecule}.pt").read_bytes() == b"new"
    next_stage = root / "potentials" / "stages" / f"{run_dir.name}_1"
    assert (next_stage / f"{molecule}.pt").read_bytes() == b"next"
    assert f"potentials/stages/{run_dir.name}_1/config.yaml" in (next_stage / "config.yaml").read_text()
    recorded = root / "runs" / "stages" / f"{run_dir.name}_1" / "stability" / molecule
    assert (recorded / "summary.json").read_text() == "next"
    assert (root / "potentials" / f"{molecule}.pt").read_bytes() == b"shipped"

    # --accept ships a file the gate would stage (a judgement it cannot make: longer runs held).
    (root / "potentials" / "configs" / f"{molecule}.yaml").write_text(stage_config)
    shipped_state(8.0, 2, "accepted")
    RETRAIN.ship(type("Args", (), {"only": [molecule], "md17_dir": "DIR", "accept": True})())
    assert (root / "potentials" / f"{molecule}.pt").read_bytes() == b"accepted"
    assert not (root / "potentials" / "stages" / f"{run_dir.name}_2").exists()
    commit_all(root)
    shipped_state(17.5, 1, "shipped")
    commit_all(root)

    # A better one (as stable, more accurate) stays where the export put it.
    (root / "potentials" / "configs" / f"{molecule}.yaml").write_text(stage_config)
    shipped_state(9.0, 1, "better")
    RETRAIN.ship(args)
    assert (root / "potentials" / f"{molecule}.pt").read_bytes() == b"better"
    assert (stability / molecule / "summary.json").read_text() == "better"


def test_the_gpu_physics_checks_pass_on_the_cpu_and_record_each_check(tmp_path):
    """scripts/gpu_physics.py is what a GPU session runs on CUDA; here it runs on the CPU, where every
    check must pass too, and its JSON names each check with its value and tolerance."""
    physics = load_script(ROOT / "scripts" / "gpu_physics.py", "gpu_physics_script")
    output = tmp_path / "physics.json"
    assert physics.main(["--device", "cpu", "--molecules", "ethanol", "--no-compiled", "-o", str(output)]) == 0
    summary = json.loads(output.read_text())
    assert summary["failed"] == [] and len(summary["checks"]) == 9
    assert all(abs(check["value"]) <= check["tolerance"] for check in summary["checks"])


def test_the_aoti_call_profile_prints_each_stage_of_each_file(capsys):
    """scripts/aoti_calls.py (the GPU session's AOTI diagnosis) on a TorchScript file here: load, first
    calls and the steady median are each printed, with positive times."""
    calls = load_script(ROOT / "scripts" / "aoti_calls.py", "aoti_calls_script")
    assert calls.main([str(ROOT / "potentials" / "ethanol.pt"), "--calls", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].split()[0] for line in lines] == ["loaded", "first", "median"]
    assert float(lines[-1].split()[-2]) > 0.0


def test_stage_one_of_a_loop_started_from_a_staged_candidate_is_the_candidates_config():
    staged = """# Stage 1 of the naphthalene retraining, not shipped (potentials/stages/README.md): EGNN 64x4 +
# learned spline encoding.
#   mlff --threads 1 train potentials/stages/naphthalene/config.yaml data.path=DIR/rmd17_naphthalene.npz [--resume]
# (its card records the same run as potentials/configs/naphthalene.yaml, the name it was trained under)
data: {split: 0}
train: {lr: 0.005, max_cpu_minutes: 120}
"""
    text = RETRAIN.base_config("naphthalene", staged)
    lines = text.splitlines()
    assert lines[0].startswith("# Stage 1 of the shipped naphthalene potential (potentials/configs/naphthalene.yaml")
    assert lines[0].endswith(" EGNN 64x4 +")
    assert "potentials/stages" not in text and "its card records" not in text
    assert "#   mlff --threads 1 train potentials/configs/naphthalene_base.yaml" in text
    assert yaml.safe_load(text) == yaml.safe_load(staged)


def test_stage_one_of_an_old_style_shipped_config_keeps_its_description_only():
    """A config of the first shipped files (benzene, aspirin: "Retrain:", then an export block over
    several lines and a stability line) keeps none of those commands as stage 1: they are stage 3's."""
    shipped = """# The shipped potential potentials/benzene.pt: EGNN + learned spline encoding + smoothness loss,
# trained on every rMD17 benzene frame outside split_test[0] (the test set), float32.
# Retrain: mlff train potentials/configs/benzene.yaml   (add --resume to continue a stopped run)
# Export (core repulsion below the shortest training distance of each element pair, reference
# statistics for MD, the card's check frames):
#   mlff export runs/potentials/benzene/best.pt -o potentials/benzene.pt --dtype float32 \\
#     --reference-data DIR/rmd17_benzene.npz --check-data DIR/rmd17_benzene.npz
# Stability, recorded in the card: mlff bench stability --molecules benzene --update-cards
data:
  # Give the file with data.path=DIR/rmd17_benzene.npz.
  split: 0
train: {lr: 0.005, max_minutes: 12}
"""
    lines = RETRAIN.base_config("benzene", shipped).splitlines()
    assert lines[0].startswith("# Stage 1 of the shipped benzene potential (potentials/configs/benzene.yaml")
    assert lines[1] == "# trained on every rMD17 benzene frame outside split_test[0] (the test set), float32."
    assert lines[2].startswith("#   mlff --threads 1 train potentials/configs/benzene_base.yaml")
    assert lines[3:5] == ["data:", "  # Give the file with data.path=DIR/rmd17_benzene.npz."]
    assert yaml.safe_load("\n".join(lines)) == yaml.safe_load(shipped)


def test_final_writes_the_last_stage_and_again_rewrites_it_longer(retrain_root):
    """`final` from a stable learn run: stage 1 kept as <m>_base.yaml, the labels copied, the last
    stage written; `--again --epochs N` rewrites only the last stage, reading stage 1 from the base
    file (the loop's training config may be <m>.yaml itself, by then the last stage)."""
    loop = retrain_root / "runs" / "learn" / "pbe_toluene"
    (loop / "iter_000").mkdir(parents=True)
    (loop / "iter_000" / "labelled.extxyz").write_text("frames\n")
    iterations = [{"index": 0, "stable": False, "labelled": 40}, {"index": 1, "stable": True, "labelled": 0}]
    (loop / "summary.json").write_text(json.dumps({"iterations": iterations}))
    training = {"config": "potentials/configs/toluene.yaml", "overrides": ["train.keep=last"]}
    (loop / "learn_state.json").write_text(json.dumps({"config": {"output_dir": str(loop), "training": training}}))
    config_path = retrain_root / "potentials" / "configs" / "toluene.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["train"]["loss_weights"] = {"energy": 1.0, "forces": 100.0}
    config_path.write_text(yaml.safe_dump(config))
    stage_1 = config_path.read_text()

    def final(*extra: str) -> dict:
        args = RETRAIN.argparse.Namespace(only=["toluene"], epochs=RETRAIN.FINAL_EPOCHS, again=False, round=1)
        for option in extra:
            key, _, value = option.partition("=")
            setattr(args, key, int(value) if value else True)
        RETRAIN.final(args)
        return yaml.safe_load((retrain_root / "potentials" / "configs" / "toluene.yaml").read_text())

    first = final()
    base = retrain_root / "potentials" / "configs" / "toluene_base.yaml"
    assert yaml.safe_load(base.read_text()) == yaml.safe_load(stage_1)
    copied = retrain_root / "examples" / "learn" / "results" / "pbe_toluene_labels" / "iter_000.extxyz"
    assert copied.read_text() == "frames\n"
    assert first["train"]["epochs"] == RETRAIN.FINAL_EPOCHS and first["train"]["compile"] is True
    assert first["init_from"] == "runs/learn/pbe_toluene/iter_001/train/member_0/best.pt"
    assert final() == first, "without --again the last stage stays"
    base_text = base.read_text()
    longer = final("again", "epochs=240")
    assert base.read_text() == base_text
    assert longer["train"]["epochs"] == 240 and longer["output_dir"] == "runs/potentials/toluene_learned_240ep"
    assert {**longer, "train": None, "output_dir": None} == {**first, "train": None, "output_dir": None}


def test_extend_keeps_the_shipped_file_as_the_start_of_one_more_stage(retrain_root):
    """`extend`: the committed shipped file is copied (with its card) to potentials/starts/ and the
    config becomes one more stage fine-tuning it; the earlier stages' description is kept."""
    root, configs = retrain_root, retrain_root / "potentials" / "configs"
    (configs / "toluene_base.yaml").write_text("train: {}\n")
    header = [
        "# The shipped potential potentials/toluene.pt, in three stages (issue: potentials that hold):",
        "# 1. potentials/configs/toluene_base.yaml.",
        "# 3. This config: member 0 fine-tuned for 60 epochs.",
        "# Retrain stage 3: python scripts/retrain_potentials.py train --md17-dir DIR --only toluene",
    ]
    config = configs / "toluene.yaml"
    config.write_text("\n".join(header) + "\n" + config.read_text())
    (root / "potentials" / "toluene.pt").write_bytes(b"weights")
    commit = commit_all(root)
    before = yaml.safe_load(config.read_text())

    RETRAIN.extend(
        RETRAIN.argparse.Namespace(only=["toluene"], epochs=120, lr=RETRAIN.EXTEND_LR, batch_size=None, extra_labels=[])
    )
    start = root / "potentials" / "starts" / f"toluene_{commit}.pt"
    assert start.read_bytes() == b"weights"
    assert start.with_suffix(".yaml").read_text() == (root / "potentials" / "toluene.yaml").read_text()
    after = yaml.safe_load(config.read_text())
    assert after["init_from"] == f"potentials/starts/toluene_{commit}.pt"
    assert after["output_dir"] == f"runs/potentials/toluene_extended_{commit}_120ep"
    # The earlier stage's time cap is dropped: the new stage runs its epochs.
    assert after["train"] == {
        **{key: value for key, value in before["train"].items() if key != "max_cpu_minutes"},
        "epochs": 120,
        "lr": 5.0e-4,
        "warmup_epochs": 1,
        "compile": True,
        "keep": "last",
    }
    assert {**after, "init_from": None, "train": None, "output_dir": None} == {
        **before,
        "init_from": None,
        "train": None,
        "output_dir": None,
    }
    lines = config.read_text().splitlines()
    assert lines[0].endswith("in four stages (issue: potentials that hold):")
    assert lines[2] == "# 3. member 0 fine-tuned for 60 epochs."
    assert lines[3].startswith(f"# 4. This config: stage 3's file as shipped at {commit}")
    assert any(line.startswith("# Retrain stage 4: python scripts/retrain_potentials.py train") for line in lines)

    # A shipped file that differs from the last commit's (a new one not yet committed) is not a start.
    (root / "potentials" / "toluene.pt").write_bytes(b"uncommitted")
    config.write_text(config.read_text().replace(f"toluene_extended_{commit}_120ep", "x"))
    text = config.read_text()
    RETRAIN.extend(
        RETRAIN.argparse.Namespace(only=["toluene"], epochs=60, lr=RETRAIN.EXTEND_LR, batch_size=None, extra_labels=[])
    )
    assert config.read_text() == text


def test_extend_with_extra_labels_trains_on_them_beside_the_last_stage_frames(retrain_root):
    """`extend --extra-labels`: the files join the config's extra training frames (kept, not
    repeated) and the header names them; a missing file is refused before anything is written."""
    root, config = retrain_root, retrain_root / "potentials" / "configs" / "toluene.yaml"
    labels = root / "examples" / "labels"
    labels.mkdir(parents=True)
    (labels / "old.extxyz").write_text("x")
    (labels / "new.extxyz").write_text("x")
    before = yaml.safe_load(config.read_text())
    before["data"]["extra_train_paths"] = ["examples/labels/old.extxyz"]
    config.write_text("# The shipped potential potentials/toluene.pt.\n" + yaml.safe_dump(before, sort_keys=False))
    (root / "potentials" / "toluene.pt").write_bytes(b"weights")
    commit = commit_all(root)
    text = config.read_text()

    arguments = {"only": ["toluene"], "epochs": 40, "lr": 2.0e-4, "batch_size": None}
    with pytest.raises(SystemExit, match="examples/labels/gone.extxyz"):
        RETRAIN.extend(RETRAIN.argparse.Namespace(**arguments, extra_labels=["examples/labels/gone.extxyz"]))
    assert config.read_text() == text
    new = ["examples/labels/old.extxyz", "examples/labels/new.extxyz"]
    RETRAIN.extend(RETRAIN.argparse.Namespace(**arguments, extra_labels=new))
    after = yaml.safe_load(config.read_text())
    assert after["data"]["extra_train_paths"] == new
    assert {**after["data"], "extra_train_paths": None} == {**before["data"], "extra_train_paths": None}
    assert after["init_from"] == f"potentials/starts/toluene_{commit}.pt"
    assert f"#    on the same frames plus {new[0]} plus {new[1]}, keeping the last epoch." in config.read_text()
    # Its run folder names the labels it adds: the same set again resumes it (a rerun of the chain
    # writes the same config), another set runs apart from it.
    run_dir = after["output_dir"]
    assert run_dir.startswith(f"runs/potentials/toluene_extended_{commit}_40ep_x")
    for labels_added, same in ((new[::-1], True), (new[1:], False)):
        config.write_text(text)
        RETRAIN.extend(RETRAIN.argparse.Namespace(**arguments, extra_labels=labels_added))
        assert (yaml.safe_load(config.read_text())["output_dir"] == run_dir) == same


def test_extend_makes_a_one_stage_file_stage_1_of_two(retrain_root):
    """A shipped one-stage config (trained from scratch under a time cap, as aspirin's) becomes
    stage 1, named by its commit; the new stage has the script's run lines and its own rate."""
    root, config = retrain_root, retrain_root / "potentials" / "configs" / "toluene.yaml"
    header = [
        "# The shipped potential potentials/toluene.pt: EGNN + learned spline encoding.",
        "# Retrain: mlff train potentials/configs/toluene.yaml   (add --resume to continue a stopped run)",
        "#   mlff export runs/potentials/toluene/best.pt -o potentials/toluene.pt",
    ]
    config.write_text("\n".join(header) + "\n" + config.read_text())
    (root / "potentials" / "toluene.pt").write_bytes(b"weights")
    commit = commit_all(root)
    before = yaml.safe_load(config.read_text())

    RETRAIN.extend(RETRAIN.argparse.Namespace(only=["toluene"], epochs=80, lr=1.0e-3, batch_size=8, extra_labels=[]))
    after = yaml.safe_load(config.read_text())
    assert next(iter(after)) == "init_from" and after["init_from"] == f"potentials/starts/toluene_{commit}.pt"
    assert after["train"]["lr"] == 1.0e-3 and after["train"]["epochs"] == 80 and "max_cpu_minutes" not in after["train"]
    assert after["train"]["batch_size"] == 8 != before["train"]["batch_size"]
    assert after["data"] == before["data"] and after["model"] == before["model"]
    lines = config.read_text().splitlines()
    assert lines[0] == "# The shipped potential potentials/toluene.pt, in two stages (issue: potentials that hold):"
    assert (
        lines[1]
        == f"# 1. potentials/configs/toluene.yaml as shipped at {commit} (its header: architecture, recipe, time cap;"
    )
    assert lines[3].startswith(f"# 2. This config: stage 1's file as shipped at {commit}")
    assert any("(lr 1e-3, batch 8, cosine from the top, compiled)" in line for line in lines)
    assert lines[6] == "# Retrain stage 2: python scripts/retrain_potentials.py train --md17-dir DIR --only toluene"
    assert not any(line.startswith(("# Retrain:", "#   mlff export")) for line in lines), "stage 1's run lines are gone"


def test_collected_stability_rows_come_from_files_and_from_git_history(tmp_path):
    """scripts/collect_stability_rows.py: a molecule's row of each run, from a file or from `REV:PATH`
    (a row a later run replaced), labelled; a source with no such row, or none at all, is refused."""
    collect = load_script(ROOT / "scripts" / "collect_stability_rows.py", "collect_stability_rows_script")
    run = tmp_path / "stability-300" / "stability.json"
    run.parent.mkdir()

    def rows(force: float) -> str:
        return json.dumps({"rows": [{"molecule": "toluene"}, {"molecule": "naphthalene", "force": force}]})

    run.write_text(rows(12.7))
    old = commit_all(tmp_path)
    run.write_text(rows(11.9))
    out = tmp_path / "collected.json"
    argv = ["--molecule", "naphthalene", "-o", str(out)]
    sources = ["--row", f"old={old}:stability-300/stability.json", "--row", "new=stability-300/stability.json"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert collect.main([*argv, *sources]) == 0
        collected = json.loads(out.read_text())["rows"]
        assert [(row["candidate"], row["force"]) for row in collected] == [("old", 12.7), ("new", 11.9)]
        assert collected[0]["source"] == f"{old}:stability-300/stability.json"
        with pytest.raises(SystemExit, match="0 rows of uracil"):
            collect.main(["--molecule", "uracil", "-o", str(out), "--row", "x=stability-300/stability.json"])
        with pytest.raises(SystemExit, match="neither a file"):
            collect.main([*argv, "--row", "x=missing.json"])


def test_bond_spread_reads_each_window_of_the_recordings_and_measures_a_stretch_constant(tmp_path):
    """scripts/bond_spread.py: the spread of each element pair's bond lengths per time window of
    every replica recording (and over the dataset's frames); a parabola's curvature for k."""
    import ase.io
    import mdtraj
    import numpy as np
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    spread = load_script(ROOT / "scripts" / "bond_spread.py", "bond_spread_script")
    # O-H at 0.96 A and H-H far apart: one O-H bond; the dataset's two frames stretch it by 0.02 A.
    frames = []
    for length in (0.95, 0.97):
        atoms = Atoms("OH", positions=[[0, 0, 0], [0, 0, length]])
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((2, 3)))
        frames.append(atoms)
    data = tmp_path / "oh.extxyz"
    ase.io.write(data, frames, format="extxyz")
    topology = mdtraj.Topology()
    residue = topology.add_residue("OH", topology.add_chain())
    for symbol in ("O", "H"):
        topology.add_atom(symbol, mdtraj.element.get_by_symbol(symbol), residue)
    lengths = {0: [0.9, 1.1, 0.96, 0.96], 1: [1.0, 1.0, 0.95, 0.97]}  # Angstrom, per replica and frame
    for replica, values in lengths.items():
        xyz = np.zeros((4, 2, 3), dtype=np.float32)
        xyz[:, 1, 2] = np.array(values) / 10.0  # nm
        mdtraj.Trajectory(xyz, topology, time=[0.05, 0.1, 0.15, 0.2]).save_hdf5(str(tmp_path / f"replica_{replica}.h5"))
    (tmp_path / "summary.json").write_text(json.dumps({"stability": {"hr_mae": 0.3, "mean_temperature_k": 499.0}}))
    out = tmp_path / "spread.json"
    assert spread.main(["--data", str(data), "--run", f"run={tmp_path}", "--windows", "2", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(run["run"], run["hr_mae"], run["length_ps"]) for run in result["runs"]] == [("run", 0.3, None)]
    rows = result["rows"]
    assert [(row["run"], row["window"], row["pair"]) for row in rows] == [
        ("dataset frames", None, "O-H"),
        ("run", 0, "O-H"),
        ("run", 1, "O-H"),
    ]
    assert rows[0]["std_a"] == pytest.approx(0.01)
    first, second = np.array([0.9, 1.1, 1.0, 1.0]), np.array([0.96, 0.96, 0.95, 0.97])
    assert rows[1]["mean_a"] == pytest.approx(first.mean(), abs=1e-6)
    assert rows[1]["std_a"] == pytest.approx(first.std(), abs=1e-6)
    assert rows[2]["std_a"] == pytest.approx(second.std(), abs=1e-6)
    assert (rows[1]["window_ps"], rows[2]["window_ps"]) == (pytest.approx([0.0, 0.1]), pytest.approx([0.1, 0.2]))
    # A harmonic bond of 30 eV/A^2 about 0.96 A: k back, whatever the starting length.
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.96]])
    harmonic = lambda p: 15.0 * (np.linalg.norm(p[1] - p[0]) - 0.96) ** 2 + 2.0  # noqa: E731
    assert spread.stretch_constant(harmonic, positions, (0, 1)) == pytest.approx(30.0)
    with pytest.raises(SystemExit, match="no replica_"):
        spread.main(["--data", str(data), "--run", f"x={tmp_path / 'none'}", "-o", str(out)])
