"""The README and docs/: generated tables up to date, the README short, every relative link alive.

Fast and torch-free: the table generator reads YAML, JSON and extxyz (ase) only.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import ase
import ase.io
import pytest
import yaml
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 150

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans (links there are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (lowercase, punctuation dropped, spaces to
    hyphens, repeats numbered)."""
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_tables_are_generated_from_the_committed_json():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "generate_tables.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_retraining_table_says_which_target_is_missed():
    tables = load_script(ROOT / "docs" / "generate_tables.py", "generate_tables_script")

    def record(force: float, collapsed: int) -> dict:
        card = {"test_metrics": {"force_mae_mev_per_a": force}, "stability": {"collapsed_seeds": collapsed, "seeds": 5}}
        return {"molecule": "toluene", "now": card, "target": 10.0}

    assert tables.target_met(record(9.9, 0)) == "yes"
    assert tables.target_met(record(12.5, 0)) == "F +2.5"
    assert tables.target_met(record(9.0, 2)) == "2 collapsed"
    # A card without a stability run has not shown the stability target.
    unbenchmarked = {"molecule": "x", "now": {"test_metrics": {"force_mae_mev_per_a": 1.0}}, "target": 2.0}
    assert tables.target_met(unbenchmarked) == "? collapsed"
    rows = tables.retraining_rows(ROOT)
    assert {row["molecule"] for row in rows} == set(tables.MACE_FORCE_MAE)
    assert next(row for row in rows if row["molecule"] == "aspirin")["target"] == 10.0


def test_the_cost_of_a_one_stage_file_extended_counts_its_first_stage_from_the_kept_card(tmp_path):
    """aspirin's case: a file trained from scratch under a wall-clock cap, then extended; stage 1 is
    the start its config's header names, the last stage's CPU-hours are the shipped card's."""
    tables = load_script(ROOT / "docs" / "generate_tables.py", "generate_tables_script")
    (tmp_path / "potentials" / "configs").mkdir(parents=True)
    (tmp_path / "potentials" / "starts").mkdir()
    (tmp_path / "potentials" / "aspirin.pt").write_bytes(b"")
    shipped = {"training": {"cpu_hours": 1.5, "config": {"epochs": 80}}}
    (tmp_path / "potentials" / "aspirin.yaml").write_text(yaml.safe_dump(shipped))
    first = {"training": {"config": {"max_minutes": 22.0}}}
    (tmp_path / "potentials" / "starts" / "aspirin_abc1234.yaml").write_text(yaml.safe_dump(first))
    config = tmp_path / "potentials" / "configs" / "aspirin.yaml"
    config.write_text("# The shipped potential potentials/aspirin.pt, in two stages:\ntrain: {}\n")
    # Without the header's stage 1 line the start is not known as stage 1: counted as an earlier last stage.
    [row] = tables.cost_rows(tmp_path)
    assert (row["stages"], row["first_wall_cap_minutes"], row["last_cpu_hours"]) == (2, None, 1.5)
    config.write_text("# 1. potentials/configs/aspirin.yaml as shipped at abc1234 (its header: ...\ntrain: {}\n")
    [row] = tables.cost_rows(tmp_path)
    assert (row["stages"], row["first_wall_cap_minutes"], row["last_cpu_hours"]) == (2, 22.0, 1.5)
    assert tables.first_stage_cost(row) == "<= 22 wall-min"
    assert row["recorded_cpu_hours"] == 1.5
    # The shipped file kept as the start of a later stage (staged, or still training) is no earlier
    # stage of itself: not counted.
    (tmp_path / "potentials" / "aspirin.yaml").write_text(yaml.safe_dump({**shipped, "sha256": "f00d"}))
    later = {"sha256": "f00d", "training": {"cpu_hours": 1.5, "config": {"epochs": 80}}}
    (tmp_path / "potentials" / "starts" / "aspirin_def5678.yaml").write_text(yaml.safe_dump(later))
    [row] = tables.cost_rows(tmp_path)
    assert (row["stages"], row["last_cpu_hours"]) == (2, 1.5)
    # A new model trained from random weights (init_from: null) in place of the extended file: the
    # starts kept beside it are no stages of it, whatever the header still says.
    scratch = {**shipped, "sha256": "beef", "data": {"summary": {"init_from": None}}}
    (tmp_path / "potentials" / "aspirin.yaml").write_text(yaml.safe_dump(scratch))
    [row] = tables.cost_rows(tmp_path)
    assert (row["stages"], row["first_wall_cap_minutes"], row["recorded_cpu_hours"]) == (1, None, 1.5)


def test_the_cost_of_a_new_model_counts_its_staged_starts_and_the_files_its_hand_labels_came_from(tmp_path):
    """aspirin's ET: fine-tuned from a staged ET file (its card beside it), whose own stage 1 it is;
    the EGNN starts kept beside it are no stages of it. naphthalene's ET: trained from random weights
    on frames labelled at the collapses of the EGNNs kept in potentials/starts/, which count."""
    tables = load_script(ROOT / "docs" / "generate_tables.py", "generate_tables_script")
    potentials = tmp_path / "potentials"
    for folder in ("configs", "starts", "stages/aspirin_et"):
        (potentials / folder).mkdir(parents=True)
    egnn, et = {"backbone": "egnn"}, {"backbone": "et"}
    (potentials / "aspirin.pt").write_bytes(b"")
    stage_2 = {"init_from": "potentials/stages/aspirin_et/aspirin.pt"}
    card = {"architecture": et, "data": {"summary": stage_2}, "training": {"cpu_hours": 1.5, "config": {}}}
    (potentials / "aspirin.yaml").write_text(yaml.safe_dump(card))
    stage_1 = {"architecture": et, "data": {"summary": {"init_from": None}}, "training": {"cpu_hours": 2.0}}
    (potentials / "stages" / "aspirin_et" / "aspirin.yaml").write_text(yaml.safe_dump(stage_1))
    start = {"architecture": egnn, "training": {"cpu_hours": 4.0}}
    (potentials / "starts" / "aspirin_abc1234.yaml").write_text(yaml.safe_dump(start))
    (potentials / "configs" / "aspirin.yaml").write_text("train: {}\n")
    [row] = tables.cost_rows(tmp_path)
    assert (row["stages"], row["first_cpu_hours"], row["last_cpu_hours"], row["recorded_cpu_hours"]) == (
        2,
        2.0,
        1.5,
        3.5,
    )
    # From random weights on labels of the starts' collapses: the starts count, whatever their model.
    results = tmp_path / "examples" / "learn" / "results" / "pbe_aspirin_300ps_labels"
    results.mkdir(parents=True)
    ase.io.write(results / "labels.extxyz", [ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])] * 2)
    scratch = {**card, "data": {"summary": {"init_from": None}}}
    (potentials / "aspirin.yaml").write_text(yaml.safe_dump(scratch))
    labels = {"data": {"extra_train_paths": ["examples/learn/results/pbe_aspirin_300ps_labels/labels.extxyz"]}}
    (potentials / "configs" / "aspirin.yaml").write_text(yaml.safe_dump(labels))
    [row] = tables.cost_rows(tmp_path)
    assert (row["stages"], row["labels"], row["last_cpu_hours"]) == (2, 2, 5.5)
    # Without the labels, a file from random weights owes nothing to the starts.
    (potentials / "configs" / "aspirin.yaml").write_text("train: {}\n")
    [row] = tables.cost_rows(tmp_path)
    assert (row["stages"], row["labels"], row["last_cpu_hours"]) == (1, None, 1.5)


def test_the_cost_counts_the_labelled_frames_a_config_trains_on_from_outside_its_learn_rounds(tmp_path):
    """Labels in a learn round's folder are the round summaries' to count; any other labelled file
    the config trains on (an earlier loop's seeds, frames labelled by hand) adds its frames."""
    tables = load_script(ROOT / "docs" / "generate_tables.py", "generate_tables_script")
    results = tmp_path / "examples" / "learn" / "results"
    frame = ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    paths = {"pbe_toluene_r2_labels/iter_000.extxyz": 4, "pbe_toluene_300ps_labels/labels.extxyz": 3}
    for name, count in paths.items():
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(results / name, [frame] * count, format="extxyz")
    configs = tmp_path / "potentials" / "configs"
    configs.mkdir(parents=True)
    assert tables.hand_labels(tmp_path, "toluene") == 0  # no config
    extra = [f"examples/learn/results/{name}" for name in paths]
    (configs / "toluene.yaml").write_text(yaml.safe_dump({"data": {"extra_train_paths": extra}}))
    assert tables.hand_labels(tmp_path, "toluene") == 3
    assert tables.hand_labels(tmp_path, "uracil") == 0


def test_the_cost_counts_a_later_learn_round_only_when_the_shipped_config_descends_from_it(tmp_path):
    """A second round whose committee held at once labels nothing and ships nothing: its CPU-hours
    are not the shipped file's; once the config names the round (`_r2`), they are."""
    tables = load_script(ROOT / "docs" / "generate_tables.py", "generate_tables_script")
    potentials, results = tmp_path / "potentials", tmp_path / "examples" / "learn" / "results"
    (potentials / "configs").mkdir(parents=True)
    results.mkdir(parents=True)
    (potentials / "uracil.pt").write_bytes(b"")
    (potentials / "uracil.yaml").write_text(yaml.safe_dump({"training": {"cpu_hours": 0.5, "config": {}}}))
    (potentials / "configs" / "uracil_base.yaml").write_text(yaml.safe_dump({"train": {"max_cpu_minutes": 120}}))
    (results / "pbe_uracil.json").write_text(json.dumps({"frames_labelled": 40, "cpu_hours": 1.0}))
    (results / "pbe_uracil_r2.json").write_text(json.dumps({"frames_labelled": 0, "cpu_hours": 1.5}))
    config = potentials / "configs" / "uracil.yaml"
    for text in ("output_dir: runs/potentials/uracil_learned_200ep\n", "output_dir: runs/potentials/x_r20\n"):
        config.write_text(text)
        [row] = tables.cost_rows(tmp_path)
        assert (row["labels"], row["learn_cpu_hours"], row["recorded_cpu_hours"]) == (40, 1.0, 3.5), text
    config.write_text("output_dir: runs/potentials/uracil_learned_200ep_r2\n")
    [row] = tables.cost_rows(tmp_path)
    assert (row["labels"], row["learn_cpu_hours"], row["recorded_cpu_hours"]) == (40, 2.5, 5.0)


def test_readme_fits_on_a_screen():
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES} (move detail to docs/)"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page: Path):
    broken = []
    for target in _LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target} (no {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked})")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked.read_text()):
            broken.append(f"{target} (no heading #{fragment} in {linked.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_docs_pages_exist():
    names = {path.name for path in DOCS}
    expected = {"md.md", "openmm.md", "data.md", "training.md", "results.md", "design.md", "file-format.md"}
    assert expected <= names, f"missing docs pages: {sorted(expected - names)}"
