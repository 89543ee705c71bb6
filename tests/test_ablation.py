"""`mlff bench ablation`: every cell, the table, resume cell by cell, label files; the raw distance encoding.

The ablations run the real EGNN example config shrunk by overrides (hidden 8, one layer) on
synthetic 5-atom datasets in MD17 layout (20 train / 20 test frames), one or two epochs.
"""

import json
from pathlib import Path

import pytest
import torch
from synthetic import write_md17_npz

import mlff.bench.ablation as ablation
import mlff.training.trainer as trainer_module
from mlff.bench import paper
from mlff.bench.ablation import AblationSettings, plan_cells
from mlff.checkpoint import load_checkpoint
from mlff.cli.main import main
from mlff.encodings import build_encoding
from mlff.resources import examples_dir
from mlff.training import load_config

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = [
    "model.backbone_options.hidden=8",
    "model.backbone_options.layers=1",
    "model.encoding_size=4",
    "model.encoding_options.n_bins=8",
    "train.batch_size=10",
    "train.eval_batch_size=32",
    "data.n_val=4",
]
VARIANT_NAMES = [variant.name for variant in ablation.VARIANTS]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """md17_ethanol, md17_malonaldehyde and rmd17_ethanol: three different synthetic files."""
    folder = tmp_path_factory.mktemp("md17")
    write_md17_npz(folder / "md17_ethanol.npz", num_frames=40, seed=0)
    write_md17_npz(folder / "md17_malonaldehyde.npz", num_frames=40, seed=1)
    write_md17_npz(folder / "rmd17_ethanol.npz", num_frames=40, seed=2)
    return folder


def ablation_command(data_dir: Path, output_dir: Path, *extra: str, molecules=("ethanol",), seeds=1, epochs=1):
    command = ["--threads", "1", "bench", "ablation", "--backbone", "egnn", "--molecules", *molecules]
    command += ["--seeds", str(seeds), "--epochs", str(epochs), "--data-dir", str(data_dir)]
    command += ["--output-dir", str(output_dir), "--no-progress", *extra]
    for override in TINY:
        command += ["--override", override]
    return command


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """A finished md17 ablation: ethanol and malonaldehyde, 2 seeds, 1 epoch (24 cells)."""
    output = tmp_path_factory.mktemp("ablation")
    command = ablation_command(data_dir, output, molecules=("ethanol", "malonaldehyde"), seeds=2)
    assert main(command) == 0
    root = output / "md17" / "egnn"
    return command, root, json.loads((root / "ablation.json").read_text())


def results_files(root: Path) -> dict[Path, tuple[int, str]]:
    return {path: (path.stat().st_mtime_ns, path.read_text()) for path in sorted(root.rglob("results.json"))}


def test_every_cell_is_run_and_tabulated(finished):
    _, root, report = finished
    cells = {(cell["molecule"], cell["variant"], cell["seed"]) for cell in report["cells"]}
    expected = {(m, v, s) for m in ("ethanol", "malonaldehyde") for v in VARIANT_NAMES for s in (0, 1)}
    assert cells == expected and len(report["cells"]) == 24
    for cell in report["cells"]:
        assert Path(cell["output_dir"]) == root / cell["molecule"] / cell["variant"] / f"seed{cell['seed']}"
        assert (Path(cell["output_dir"]) / "results.json").is_file()
        assert cell["epochs_run"] == 1 and not cell["stopped_early"] and cell["wall_seconds"] > 0
        assert cell["frames"] == {"train": 16, "val": 4, "test": 20}
    # Mean and std over the two seeds, per treatment and molecule.
    for variant in VARIANT_NAMES:
        for molecule in ("ethanol", "malonaldehyde"):
            values = [
                c["test"]["force_mae_mev_per_a"]
                for c in report["cells"]
                if c["variant"] == variant and c["molecule"] == molecule
            ]
            entry = report["table"][variant][molecule]
            assert entry["seeds"] == 2 and entry["mean"] == pytest.approx(sum(values) / 2)
            assert entry["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
            assert values[0] != values[1]  # the seed changes the run


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in `text`."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")
    ]


def test_table_has_every_treatment_beside_the_paper(finished):
    _, root, report = finished
    table = (root / "table.md").read_text()
    assert table == ablation.format_table(report)
    header, *rows = table_rows(table)
    assert header == ["treatment", "ethanol", "paper", "malonaldehyde", "paper"]
    assert len(rows) == 6 + 1  # six treatments, NequIP
    body = {row[0]: row[1:] for row in rows}
    labels = list(body)
    for variant, label in zip(ablation.VARIANTS, labels):
        assert label.startswith(variant.label)
        ours = report["table"][variant.name]
        assert body[label][0] == f"{ours['ethanol']['mean']:.2f} ({ours['ethanol']['std']:.2f})"
        assert body[label][2] == f"{ours['malonaldehyde']['mean']:.2f} ({ours['malonaldehyde']['std']:.2f})"
    assert labels[0] == "raw distance (paper: EGNN)"
    assert [body[label][1] for label in labels[:6]] == ["50.1 (1.3)", "-", "-", "-", "4.9 (0.3)", "3.5 (0.3)"]
    assert [body[label][3] for label in labels[:6]] == ["53.5 (1.8)", "-", "-", "-", "8.8 (0.7)", "7.0 (0.8)"]
    assert labels[5].endswith("lambda 0.01")
    assert body["NequIP (paper, reference)"] == ["-", "9.0", "-", "14.6"]


def test_cell_configs_change_only_the_ablated_keys(finished):
    _, _, report = finished
    base = ablation._flatten(load_config(examples_dir() / "rmd17_ethanol.yaml", TINY).to_dict())
    allowed = {"output_dir", "data.path", "model.encoding", "model.encoding_size", "model.encoding_options"}
    allowed |= {"train.epochs", "train.seed", "train.max_minutes", "train.max_cpu_minutes"}
    allowed |= {"train.loss_weights.smoothness"}
    for cell in report["cells"]:
        config = ablation._flatten(cell["config"])
        changed = {key for key in set(base) | set(config) if base.get(key) != config.get(key)}
        assert all(any(key == a or key.startswith(a + ".") for a in allowed) for key in changed), changed
        model, train = cell["config"]["model"], cell["config"]["train"]
        assert model["encoding"] == {"spline_smooth": "spline"}.get(cell["variant"], cell["variant"])
        assert model["encoding_size"] == (1 if cell["variant"] == "raw" else 4)
        assert model["encoding_options"] == ({"n_bins": 8, "r_min": 0.0} if model["encoding"] == "spline" else {})
        assert train["loss_weights"]["smoothness"] == (0.01 if cell["variant"] == "spline_smooth" else 0.0)
        caps = (train["max_minutes"], train["max_cpu_minutes"])
        assert (train["epochs"], train["seed"], caps) == (1, cell["seed"], (0, 0))
        assert cell["config"]["data"]["path"].endswith(f"/md17_{cell['molecule']}.npz")
        # The trainer really adds the smoothness term to the +Smooth cells' loss, and only there.
        first_epoch = json.loads((Path(cell["output_dir"]) / "metrics.jsonl").read_text().splitlines()[0])
        assert ("smoothness" in first_epoch) == (cell["variant"] == "spline_smooth")


@pytest.mark.parametrize("backbone", ["egnn", "transformer", "et"])
def test_every_backbone_starts_from_its_example_config(backbone, data_dir, tmp_path):
    settings = AblationSettings(backbone, ("ethanol",), 2, 7, output_dir=tmp_path, data_dir=data_dir)
    example = load_config(examples_dir() / ablation.EXAMPLE_CONFIGS[backbone])
    cells = plan_cells(settings)
    assert [(cell.variant.name, cell.seed) for cell in cells] == [(v, s) for s in (0, 1) for v in VARIANT_NAMES]
    for cell in cells:
        assert cell.config.model.backbone == backbone
        assert cell.config.model.backbone_options == example.model.backbone_options
        assert cell.config.train.lr == example.train.lr and cell.config.train.epochs == 7
        assert cell.config.model.encoding_size == (1 if cell.variant.name == "raw" else example.model.encoding_size)


def test_rerun_skips_finished_cells(finished, monkeypatch, capsys):
    command, root, _ = finished
    before = results_files(root)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(ablation, "train", no_training)
    capsys.readouterr()
    assert main(command) == 0
    output = capsys.readouterr().out
    assert output.count("finished, skipped") == 24
    assert results_files(root) == before and len(before) == 24
    assert table_rows(output)[0] == ["treatment", "ethanol", "paper", "malonaldehyde", "paper"]


def test_rerun_with_other_settings_is_refused(finished, capsys):
    command, _, _ = finished
    changed = list(command)
    changed[changed.index("--epochs") + 1] = "2"
    assert main(changed) == 2
    assert "train.epochs: 1 there, 2 now" in capsys.readouterr().err


def test_interrupted_cell_resumes(data_dir, tmp_path, monkeypatch, capsys):
    original = trainer_module._run_epoch

    def interrupt_at_second_epoch(state, data, split, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(state, data, split, epoch)

    command = ablation_command(data_dir, tmp_path, epochs=2)
    monkeypatch.setattr(trainer_module, "_run_epoch", interrupt_at_second_epoch)
    assert main(command) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    first = tmp_path / "md17" / "egnn" / "ethanol" / "raw" / "seed0"
    assert load_checkpoint(first / "last.pt")["epoch"] == 1 and not (first / "results.json").exists()
    assert sorted(p.name for p in first.parent.parent.iterdir()) == ["raw"]

    monkeypatch.setattr(trainer_module, "_run_epoch", original)
    calls = []
    real_train = ablation.train

    def spy(config, resume=False, **kwargs):
        calls.append((Path(config.output_dir).parent.name, resume))
        return real_train(config, resume=resume, **kwargs)

    monkeypatch.setattr(ablation, "train", spy)
    assert main(command) == 0
    assert calls == [("raw", True)] + [(name, False) for name in VARIANT_NAMES[1:]]
    assert [h["epoch"] for h in load_checkpoint(first / "last.pt")["history"]] == [1, 2]
    report = json.loads((tmp_path / "md17" / "egnn" / "ablation.json").read_text())
    assert [cell["epochs_run"] for cell in report["cells"]] == [2] * 6


def test_labels_pick_their_files(data_dir, tmp_path):
    for labels in ("md17", "rmd17"):
        settings = AblationSettings("egnn", ("ethanol",), 1, 1, labels, tmp_path, data_dir, overrides=tuple(TINY))
        cells = plan_cells(settings)
        assert len(cells) == 6
        assert {cell.config.data.path for cell in cells} == {str(data_dir / f"{labels}_ethanol.npz")}
        assert all(cell.output_dir.is_relative_to(tmp_path / labels / "egnn") for cell in cells)
    settings = AblationSettings("egnn", ("malonaldehyde",), 1, 1, "rmd17", tmp_path, data_dir)
    with pytest.raises(FileNotFoundError, match="rmd17_malonaldehyde.npz"):
        plan_cells(settings)


def test_rmd17_cap_stopped_cells_are_flagged_and_paper_left_out(data_dir, tmp_path, capsys):
    # A cap far below one epoch stops every cell after its first of three epochs.
    command = ablation_command(data_dir, tmp_path, "--labels", "rmd17", "--max-minutes-per-cell", "1e-6", epochs=3)
    assert main(command) == 0
    output = capsys.readouterr().out
    report = json.loads((tmp_path / "rmd17" / "egnn" / "ablation.json").read_text())
    assert report["data_files"] == {"ethanol": str(data_dir / "rmd17_ethanol.npz")}
    for cell in report["cells"]:
        assert cell["epochs_run"] == 1 and cell["stopped_early"] and "cap" in cell["stopped_because"]
    assert table_rows(output)[0] == ["treatment", "ethanol"]
    assert "NequIP" not in output and "not shown beside rMD17" in output
    assert output.count("*[1]") == 6 and "stopped before the planned epochs" in output


def test_settings_name_what_is_wrong(data_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="'ethanoll'"):
        AblationSettings("egnn", ("ethanoll",), 1, 1)
    with pytest.raises(ValueError, match="train.epochs"):
        AblationSettings("egnn", ("ethanol",), 1, 1, overrides=("train.epochs=5",))
    with pytest.raises(ValueError, match="smoothness"):
        AblationSettings("egnn", ("ethanol",), 1, 1, overrides=("train.loss_weights.smoothness=0.1",))
    assert main(ablation_command(data_dir, tmp_path, molecules=("benzene",))) == 2
    assert "md17_benzene.npz does not exist" in capsys.readouterr().err


def test_data_comes_from_the_fetch_cache_unless_given(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFF_CACHE_DIR", str(tmp_path / "cache"))
    settings = AblationSettings("egnn", ("ethanol",), 1, 1)
    assert settings.data_dir == tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'cache' / 'md17_ethanol.npz'} does not exist"):
        plan_cells(settings)


def test_paper_numbers():
    assert paper.paper_force_mae("egnn", "smooth", "ethanol") == (3.5, 0.3)
    assert paper.paper_force_mae("transformer", "baseline", "uracil") == (54.5, 1.9)
    assert paper.paper_force_mae("et", "posenc", "aspirin") is None
    assert paper.nequip_force_mae("toluene") == 4.4
    with pytest.raises(ValueError, match="aspirn"):
        paper.paper_force_mae("egnn", "posenc", "aspirn")


def test_raw_encoding_is_the_distance_itself():
    encoding = build_encoding("raw", 1, 5.0).to(torch.float64)
    distances = torch.tensor([0.0, 0.96, 1.09, 2.5, 3.12, 4.99, 5.0, 6.0], dtype=torch.float64)
    features = encoding(distances)
    assert features.shape == (8, 1)
    assert features[:, 0].equal(distances), "no envelope: 1.09 and 3.12 A stay apart"
    assert sum(p.numel() for p in encoding.parameters()) == 0
    with pytest.raises(ValueError, match="encoding_size=1"):
        build_encoding("raw", 8, 5.0)
