"""The paper's ablation (Gao et al. 2022, Table 1): one backbone, six distance treatments.

Each cell trains the backbone on one molecule with one distance treatment and one seed,
through `mlff.training.train`, in its own directory
`<output_dir>/<labels>/<backbone>/<molecule>/<variant>/seed<k>/`. Every cell runs the same
number of epochs; a wall-clock cap per cell may be set, and a cell it stops early is recorded
and flagged, never silently compared.

A cell's config is the backbone's example config (`examples/rmd17_ethanol*.yaml`, shipped inside
the package as `mlff.examples`) with only
the dataset (`<labels>_<molecule>.npz`, split 0), the encoding (name, its options and, for the
raw distance, size 1), the smoothness weight, the epochs, the seed and the cap changed. The
training seed varies; the split, and so the validation frames, are the same for every seed.
The dataset files come from `data_dir`, by default the `mlff data fetch` cache.

Resumable cell by cell: a cell with `results.json` is finished and skipped, one with only
`last.pt` resumes with the trainer's resume, and a cell whose stored config differs from the
planned one is an error, so that a rerun never mixes settings in one table.
"""

import copy
import dataclasses
import json
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mlff import utils
from mlff._version import __version__
from mlff.bench import paper
from mlff.checkpoint import load_checkpoint
from mlff.data.fetch import default_cache_dir
from mlff.resources import examples_dir
from mlff.training import Config, load_config, train

LABELS: tuple[str, ...] = ("md17", "rmd17")
MOLECULES: tuple[str, ...] = paper.MOLECULES
EXAMPLE_CONFIGS: dict[str, str] = {
    "egnn": "rmd17_ethanol.yaml",
    "transformer": "rmd17_ethanol_transformer.yaml",
    "et": "rmd17_ethanol_et.yaml",
}
# The paper's baseline rows are named after the backbone.
PAPER_BACKBONE_NAMES: dict[str, str] = {"egnn": "EGNN", "transformer": "Transformer", "et": "ET"}
# Config keys the ablation sets itself: an override of one of them is an error, not a silent no-op.
FIXED_KEYS: tuple[str, ...] = (
    "output_dir",
    "data.path",
    "data.split",
    "model.backbone",
    "model.encoding",
    "train.epochs",
    "train.seed",
    "train.max_minutes",
    "train.max_cpu_minutes",
    "train.loss_weights.smoothness",
)
# Keys that may differ between a stored cell and its plan (where it lives, where it runs).
_UNCOMPARED_KEYS: tuple[str, ...] = ("output_dir", "train.device")


@dataclass(frozen=True)
class Variant:
    """One distance treatment (a row of the table).

    Attributes:
        name: the cell directory's name.
        label: the row's label.
        encoding: a key of `mlff.encodings.ENCODINGS`.
        smooth: train with the example config's smoothness weight (else weight 0).
        encoding_size: the encoding's size, or None for the example config's.
        paper_row: the paper's row (`mlff.bench.paper.ROWS`) or None where the paper has none.
    """

    name: str
    label: str
    encoding: str
    smooth: bool = False
    encoding_size: int | None = None
    paper_row: str | None = None


VARIANTS: tuple[Variant, ...] = (
    Variant("raw", "raw distance", "raw", encoding_size=1, paper_row="baseline"),
    Variant("mlp", "MLP(distance)", "mlp"),
    Variant("gaussian", "Gaussian RBF", "gaussian"),
    Variant("bessel", "Bessel", "bessel"),
    Variant("spline", "+PosEnc (spline, no smoothness)", "spline", paper_row="posenc"),
    Variant("spline_smooth", "+Smooth (spline + smoothness)", "spline", smooth=True, paper_row="smooth"),
)


@dataclass
class AblationSettings:
    """What to run.

    Attributes:
        backbone: a key of EXAMPLE_CONFIGS.
        molecules: MD17 molecules (MOLECULES), the table's columns.
        seeds: training seeds 0 .. seeds-1 per cell.
        epochs: epochs of every cell.
        labels: "md17" (the paper's original labels) or "rmd17".
        output_dir: root of every ablation; this one lives in output_dir/labels/backbone.
        data_dir: folder of `<labels>_<molecule>.npz` with the published splits (relative paths: to
            the working directory); default: the `mlff data fetch` cache ($MLFF_CACHE_DIR or
            ~/.cache/mlff/datasets).
        max_minutes_per_cell: wall-clock cap on a cell's training, minutes (0: none).
        overrides: dotted key=value overrides of the example config for every cell (not FIXED_KEYS).
        examples_dir: folder of the example configs (default: the shipped ones).
    """

    backbone: str
    molecules: tuple[str, ...]
    seeds: int
    epochs: int
    labels: str = "md17"
    output_dir: Path = Path("runs/ablation")
    data_dir: Path = field(default_factory=default_cache_dir)
    max_minutes_per_cell: float = 0.0
    overrides: tuple[str, ...] = ()
    examples_dir: Path = field(default_factory=examples_dir)

    def __post_init__(self) -> None:
        self.molecules = tuple(self.molecules)
        self.overrides = tuple(self.overrides)
        self.output_dir = Path(self.output_dir)
        self.data_dir = Path(self.data_dir)
        self.examples_dir = Path(self.examples_dir)
        if self.backbone not in EXAMPLE_CONFIGS:
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {sorted(EXAMPLE_CONFIGS)}")
        if not self.molecules:
            raise ValueError("no molecules given")
        for molecule in self.molecules:
            if molecule not in MOLECULES:
                raise ValueError(f"unknown molecule {molecule!r}; known: {list(MOLECULES)}")
        if len(set(self.molecules)) != len(self.molecules):
            raise ValueError(f"molecules repeat: {list(self.molecules)}")
        if self.labels not in LABELS:
            raise ValueError(f"unknown labels {self.labels!r}; known: {list(LABELS)}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_minutes_per_cell < 0:
            raise ValueError(f"max minutes per cell must be >= 0, got {self.max_minutes_per_cell}")
        for override in self.overrides:
            key = override.partition("=")[0].strip()
            if any(key == fixed or key.startswith(fixed + ".") for fixed in FIXED_KEYS):
                raise ValueError(f"override {override!r}: the ablation sets {key} itself")

    @property
    def root(self) -> Path:
        """This ablation's folder: output_dir/labels/backbone."""
        return self.output_dir / self.labels / self.backbone


@dataclass
class Cell:
    """One training run: a molecule, a variant and a seed, with its full config."""

    molecule: str
    variant: Variant
    seed: int
    config: Config

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def name(self) -> str:
        return f"{self.molecule}/{self.variant.name}/seed{self.seed}"


def dataset_path(data_dir: str | Path, labels: str, molecule: str) -> Path:
    """The dataset file `<data_dir>/<labels>_<molecule>.npz` (absolute, not resolved through links)."""
    if labels not in LABELS:
        raise ValueError(f"unknown labels {labels!r}; known: {list(LABELS)}")
    return Path(os.path.abspath(Path(data_dir) / f"{labels}_{molecule}.npz"))


def check_dataset(path: Path, labels: str, molecule: str) -> None:
    """Raise if `path` is missing or lacks the split_train/split_test the ablation trains on."""
    if not path.is_file():
        raise FileNotFoundError(
            f"no {labels} dataset for {molecule}: {path} does not exist (pass --data-dir, the folder of "
            f"{labels}_<molecule>.npz files)"
        )
    with np.load(path) as archive:
        keys = set(archive.files)
    if not {"split_train", "split_test"} <= keys:
        raise ValueError(
            f"{path} has no split_train/split_test: the ablation trains on split_train[0] and tests on "
            f"split_test[0] (1000 / 1000 frames, as the paper); use a file with the published splits"
        )


def base_config(settings: AblationSettings) -> Config:
    """The backbone's example config with the settings' overrides."""
    path = settings.examples_dir / EXAMPLE_CONFIGS[settings.backbone]
    config = load_config(path, settings.overrides)
    if config.model.backbone != settings.backbone:
        raise ValueError(f"{path} configures backbone {config.model.backbone!r}, not {settings.backbone!r}")
    return config


def smoothness_weight(base: Config) -> float:
    """The example config's smoothness weight (the paper's lambda) used by the +Smooth cells."""
    weight = float(base.train.loss_weights.get("smoothness", 0.0))
    if weight <= 0.0:
        raise ValueError("the example config has no smoothness weight: +Smooth would equal +PosEnc")
    return weight


def cell_config(
    base: Config, settings: AblationSettings, molecule: str, variant: Variant, seed: int, data_path: Path
) -> Config:
    """The config of one cell: `base` with the dataset, encoding, smoothness, epochs, seed and cap set."""
    config = copy.deepcopy(base)
    spline_options = variant.encoding == "spline" and base.model.encoding == "spline"
    config.model = dataclasses.replace(
        config.model,
        encoding=variant.encoding,
        encoding_size=variant.encoding_size or base.model.encoding_size,
        # The example's options (n_bins, r_min) are the spline's; the other encodings take none.
        encoding_options=dict(base.model.encoding_options) if spline_options else {},
    )
    weights = dict(base.train.loss_weights)
    weights["smoothness"] = smoothness_weight(base) if variant.smooth else 0.0
    config.train = dataclasses.replace(
        config.train,
        epochs=settings.epochs,
        seed=seed,
        max_minutes=float(settings.max_minutes_per_cell),
        # The cells run the planned epochs (the example's CPU cap would anneal them to it instead).
        max_cpu_minutes=0.0,
        loss_weights=weights,
    )
    config.data = dataclasses.replace(config.data, path=str(data_path), split=0)
    config.output_dir = str(settings.root / molecule / variant.name / f"seed{seed}")
    return config


def plan_cells(settings: AblationSettings) -> list[Cell]:
    """Every cell of the ablation, after checking that every dataset file is there.

    Seeds are the outer loop, so an interrupted ablation has whole tables of the first seeds.
    """
    base = base_config(settings)
    paths = {}
    for molecule in settings.molecules:
        paths[molecule] = dataset_path(settings.data_dir, settings.labels, molecule)
        check_dataset(paths[molecule], settings.labels, molecule)
    return [
        Cell(molecule, variant, seed, cell_config(base, settings, molecule, variant, seed, paths[molecule]))
        for seed in range(settings.seeds)
        for molecule in settings.molecules
        for variant in VARIANTS
    ]


def cell_status(cell: Cell) -> str:
    """ "finished" (results.json written), "partial" (a last.pt to resume from) or "new"."""
    if (cell.output_dir / "results.json").is_file():
        return "finished"
    if (cell.output_dir / "last.pt").is_file():
        return "partial"
    return "new"


def check_stored_config(cell: Cell) -> None:
    """Raise if the cell's folder holds a run of a different config than the planned one.

    Only keys in both are compared: a config key that another mlff version added or removed
    does not make a finished cell unusable.
    """
    path = cell.output_dir / "config.yaml"
    if not path.is_file():
        return
    stored = _flatten(yaml.safe_load(path.read_text()) or {})
    planned = _flatten(cell.config.to_dict())
    differences = [
        f"{key}: {stored[key]!r} there, {planned[key]!r} now"
        for key in sorted(set(stored) & set(planned))
        if key not in _UNCOMPARED_KEYS and stored[key] != planned[key]
    ]
    if differences:
        raise ValueError(
            f"{cell.output_dir} holds a run with another config ({'; '.join(differences[:4])}): "
            "choose another output dir or delete that cell"
        )


def run_cell(cell: Cell, progress: bool = False, command: str | None = None) -> str:
    """Train one cell unless it is finished; resume it if it has a last.pt. Returns its status before."""
    status = cell_status(cell)
    if status != "new":
        check_stored_config(cell)
    if status != "finished":
        train(cell.config, resume=status == "partial", progress=progress, command=command)
    return status


def collect_cell(cell: Cell) -> dict[str, Any]:
    """A finished cell's record: test metrics (meV, meV/A), epochs, training wall time (s), config."""
    results_path = cell.output_dir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"cell {cell.name} is not finished: {results_path} does not exist")
    results = json.loads(results_path.read_text())
    last = load_checkpoint(cell.output_dir / "last.pt")
    epochs_run = int(last["epoch"])
    return {
        "molecule": cell.molecule,
        "variant": cell.variant.name,
        "encoding": cell.variant.encoding,
        "smoothness": cell.config.train.loss_weights.get("smoothness", 0.0),
        "seed": cell.seed,
        "output_dir": str(cell.output_dir),
        "epochs_planned": cell.config.train.epochs,
        "epochs_run": epochs_run,
        "stopped_early": epochs_run < cell.config.train.epochs,
        "stopped_because": results["stopped_because"],
        "best_epoch": results["best_epoch"],
        "best_val_force_mae_mev_per_a": float(last["best_val_force_mae"]),
        # Training time summed over the processes of a resumed cell (not the final test pass).
        "wall_seconds": float(last["elapsed_seconds"]),
        "frames": {key: last["data_summary"][key] for key in ("train", "val", "test")},
        "test": results["test"],
        "config": cell.config.to_dict(),
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """variant -> molecule -> test force MAE over seeds: mean, std (n - 1; None for one seed), seeds, stopped_early."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["variant"], record["molecule"]), []).append(record)
    for (variant, molecule), group in groups.items():
        values = [record["test"]["force_mae_mev_per_a"] for record in group]
        table.setdefault(variant, {})[molecule] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "seeds": len(values),
            "stopped_early": sum(record["stopped_early"] for record in group),
        }
    return table


def build_report(settings: AblationSettings, cells: list[Cell], threads: int | None = None) -> dict[str, Any]:
    """The whole ablation as plain data (what ablation.json holds); every cell must be finished."""
    base = base_config(settings)
    records = [collect_cell(cell) for cell in cells]
    return {
        "benchmark": "ablation",
        "mlff_version": __version__,
        "paper": paper.SOURCE,
        "backbone": settings.backbone,
        "labels": settings.labels,
        "molecules": list(settings.molecules),
        "seeds": settings.seeds,
        "epochs": settings.epochs,
        "max_minutes_per_cell": settings.max_minutes_per_cell,
        "overrides": list(settings.overrides),
        "threads": threads,
        "example_config": str(settings.examples_dir / EXAMPLE_CONFIGS[settings.backbone]),
        "data_files": {m: str(dataset_path(settings.data_dir, settings.labels, m)) for m in settings.molecules},
        "variants": [
            {
                "name": variant.name,
                "label": variant.label,
                "encoding": variant.encoding,
                "smoothness": smoothness_weight(base) if variant.smooth else 0.0,
                "paper_row": variant.paper_row,
            }
            for variant in VARIANTS
        ],
        "cells": records,
        "table": summarize(records),
    }


def format_table(report: dict[str, Any]) -> str:
    """The test force MAE table in the paper's layout, as Markdown, with the paper's numbers beside ours.

    Rows are the treatments, columns the molecules; each entry is mean (std) over seeds in meV/A.
    The paper's numbers (original MD17 labels) are shown only beside MD17-label results.
    """
    backbone, molecules = report["backbone"], report["molecules"]
    with_paper = report["labels"] == "md17"
    header = ["treatment"]
    for molecule in molecules:
        header += [molecule, "paper"] if with_paper else [molecule]
    rows = []
    flagged = False
    for variant in report["variants"]:
        label = variant["label"]
        if variant["smoothness"]:
            label += f", lambda {variant['smoothness']:g}"
        if variant["paper_row"] == "baseline" and backbone in paper.BACKBONES:
            label += f" (paper: {PAPER_BACKBONE_NAMES[backbone]})"
        row = [label]
        for molecule in molecules:
            entry = report["table"].get(variant["name"], {}).get(molecule)
            row.append(_format_entry(entry))
            flagged = flagged or bool(entry and entry["stopped_early"])
            if with_paper:
                row_name = variant["paper_row"]
                published = paper.paper_force_mae(backbone, row_name, molecule) if row_name else None
                row.append(f"{published[0]:.1f} ({published[1]:.1f})" if published else "-")
        rows.append(row)
    if with_paper:
        row = ["NequIP (paper, reference)"]
        for molecule in molecules:
            row += ["-", f"{paper.nequip_force_mae(molecule):.1f}"]
        rows.append(row)
    # Every cell is formatted text ("12.30" keeps its digits): no number parsing.
    table = utils.format_table(rows, header, numparse=False)
    frames = report["cells"][0]["frames"] if report["cells"] else {}
    labels = "original MD17 labels" if report["labels"] == "md17" else "rMD17 labels"
    title = (
        f"Test force MAE (meV/A), {PAPER_BACKBONE_NAMES[backbone]}, {labels}, split 0 "
        f"({frames.get('train', '?')} train + {frames.get('val', '?')} validation / {frames.get('test', '?')} test), "
        f"{report['epochs']} epochs per cell, mean (std) over {report['seeds']} seed(s)."
    )
    notes = []
    if with_paper:
        notes.append(f"paper: {report['paper']} (1000 train / 1000 test); '-': no such row in the paper.")
    else:
        notes.append("The paper's numbers are for the original MD17 labels and are not shown beside rMD17 results.")
    if flagged:
        notes.append("* stopped before the planned epochs (wall-clock cap or early stopping) in [k] seed(s).")
    return "\n".join([title, "", table, "", *notes]) + "\n"


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write folder/ablation.json and folder/table.md; return their paths."""
    json_path = utils.write_json(folder / "ablation.json", report)
    return json_path, utils.atomic_write_text(folder / "table.md", format_table(report))


def command_line(settings: AblationSettings) -> str:
    """The `mlff bench ablation` command that runs `settings` (recorded in every cell's checkpoints)."""
    parts = [
        "mlff bench ablation",
        f"--backbone {settings.backbone}",
        "--molecules " + " ".join(settings.molecules),
        f"--seeds {settings.seeds}",
        f"--epochs {settings.epochs}",
        f"--labels {settings.labels}",
        f"--output-dir {settings.output_dir}",
        f"--data-dir {settings.data_dir}",
    ]
    if settings.max_minutes_per_cell:
        parts.append(f"--max-minutes-per-cell {settings.max_minutes_per_cell:g}")
    parts += [f"--override {override}" for override in settings.overrides]
    return " ".join(parts)


def run_ablation(
    settings: AblationSettings,
    progress: bool = False,
    log: Callable[[str], None] = print,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) every cell, then write ablation.json and table.md; return the report.

    Args:
        settings: what to run.
        progress: show the trainer's progress bar per cell.
        log: receives one line per cell.
        threads: torch's CPU thread count, recorded in the report.
    """
    cells = plan_cells(settings)
    command = command_line(settings)
    for number, cell in enumerate(cells, 1):
        prefix = f"[{number}/{len(cells)}] {cell.name}"
        status = cell_status(cell)
        if status == "finished":
            check_stored_config(cell)
            log(f"{prefix}: finished, skipped")
            continue
        log(f"{prefix}: {'resuming' if status == 'partial' else 'training'}")
        run_cell(cell, progress, command)
        record = collect_cell(cell)
        log(
            f"{prefix}: test force MAE {record['test']['force_mae_mev_per_a']:.2f} meV/A, "
            f"{record['epochs_run']}/{record['epochs_planned']} epochs, {record['wall_seconds']:.0f} s "
            f"({record['stopped_because']})"
        )
    report = build_report(settings, cells, threads)
    write_report(report, settings.root)
    return report


def _format_entry(entry: dict[str, Any] | None) -> str:
    """mean (std) in meV/A, '*' and the count of seeds stopped early."""
    if entry is None:
        return "missing"
    text = f"{entry['mean']:.2f}" if entry["std"] is None else f"{entry['mean']:.2f} ({entry['std']:.2f})"
    if entry["stopped_early"]:
        text += f" *[{entry['stopped_early']}]"
    return text


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}, 'c': {}} -> {'a.b': 1, 'c': {}}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
