"""`mlff learn` configuration: YAML validated into dataclasses (the training config's loader).

output_dir: runs/learn-ethanol
training:
  config: examples/rmd17_ethanol.yaml   # a training config file, or
  # inline: {data: {path: ...}, model: {...}, train: {...}}
  overrides: [train.epochs=200]          # dotted overrides, as `mlff train` takes them
  committee: 4                           # K members (train.committee)
  finetune_epochs: 50                    # train.epochs of iterations >= 1 (null: as iteration 0)
  finetune_keep: last                    # train.keep of iterations >= 1: their last epoch, not the best validation one
  init_from: null                        # checkpoint, potential file or shipped name iteration 0 starts from
md:
  protocol: md17-stability-cpu           # a shipped protocol's name or a protocol file
  temperature_k: 500
  time: 50ps                             # per iteration (null: the protocol's)
  replicas: 5
  structures: []                         # FILE or DATASET:INDEX; [] = the potential's start frames
  settings: {}                           # any other MDSettings field (save_every, seed, ...)
export: {core_repulsion: 0.0, repulsion: null}  # as `mlff export --core-repulsion K --repulsion KIND`
selection: {spread_threshold_ev_per_a: null, spread_ceiling_factor: null, max_frames: 50, bond_deviation_a: 0.3}
label: {method: gfn2-xtb, basis: null, workers: 1, threads_per_worker: 1}
budget: {max_iterations: 10, max_labels: 500}
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlff.training.config import (
    Config,
    ConfigError,
    apply_override,
    config_from_dict,
    dataclass_from_dict,
    load_config,
    read_raw_config,
)


@dataclass
class TrainingSection:
    """The committee's training run.

    Attributes:
        config: a training config file (`mlff train`'s YAML); None: `inline` (or the defaults).
        inline: the training config itself as a mapping (used when `config` is None).
        overrides: dotted key=value overrides applied to either.
        committee: K members per iteration (>= 2; overrides train.committee).
        finetune_epochs: train.epochs of iterations >= 1, which fine-tune each member from the previous
            iteration's member (None: train.epochs, as iteration 0).
        finetune_keep: train.keep of iterations >= 1 ("last" or "best"). "last": the validation frames
            are the data file's and hold no labelled frame, so the best validation epoch of a
            fine-tune is the one that has learnt the new labels least (toluene: epoch 1 of 12, its
            force error on the labels 650 meV/A against 188 at the last epoch).
        init_from: what every member of iteration 0 fine-tunes from: a training checkpoint, a
            potential file or a shipped potential's name (None: the training config's init_from,
            usually none: from scratch).
    """

    config: str | None = None
    inline: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    committee: int = 4
    finetune_epochs: int | None = None
    finetune_keep: str = "last"
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.committee < 2:
            raise ConfigError(f"training.committee must be >= 2 (the spread needs members), got {self.committee}")
        if self.finetune_epochs is not None and self.finetune_epochs < 1:
            raise ConfigError(f"training.finetune_epochs must be >= 1, got {self.finetune_epochs}")
        if self.finetune_keep not in ("best", "last"):
            raise ConfigError(f"training.finetune_keep must be best or last, got {self.finetune_keep!r}")


# The batched engines the loop's MD can run on (all replicas in one batch, committee files).
MD_ENGINES = ("torch", "torch-compiled")


@dataclass
class MDSection:
    """The MD of each iteration (a batched engine, all replicas in one batch).

    Attributes:
        protocol: a shipped protocol's name or a protocol YAML file.
        temperature_k, time, replicas: override the protocol's (None: keep it); `time` ("50ps") is the
            length every replica must survive.
        structures: start structures (FILE or DATASET:INDEX), replica k takes the k-th (cycling);
            empty: the committee file's start frames (drawn from its data's test frames).
        settings: any other MDSettings field (save_every, seed, max_bond_deviation_a, ...).
        device, dtype: where and in which dtype the committee runs (None: the file's dtype).
        engine: "torch", or "torch-compiled": the same MD with the committee's call compiled (1.8x
            the steps/s of 5 naphthalene replicas on one CPU thread, after half a minute of compiling).
            It may change on resume; an iteration's MD begun under the other engine then starts again.
    """

    protocol: str = "md17-stability-cpu"
    temperature_k: float | None = None
    time: str | None = None
    replicas: int | None = None
    structures: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str | None = None
    engine: str = "torch"

    def __post_init__(self) -> None:
        if self.engine not in MD_ENGINES:
            raise ConfigError(f"md.engine must be one of {list(MD_ENGINES)}, got {self.engine!r}")


@dataclass
class ExportSection:
    """How each iteration's committee file is written, as `mlff export` writes a shipped potential, so
    that the MD of the loop is the MD the potential will run.

    Attributes:
        core_repulsion: k of the short-range repulsion prior added to every member, eV/A^3 (0: none);
            its onsets are fitted on the frames of the training data file (not the labelled ones).
        repulsion: the prior's kind ("cubic" or "zbl"; None: cubic when core_repulsion > 0).
    """

    core_repulsion: float = 0.0
    repulsion: str | None = None

    def __post_init__(self) -> None:
        if self.core_repulsion < 0:
            raise ConfigError(f"export.core_repulsion must be >= 0 eV/A^3, got {self.core_repulsion}")
        from mlff.export.deploy import repulsion_kind

        try:
            repulsion_kind(self.repulsion, self.core_repulsion)
        except ValueError as error:
            raise ConfigError(f"export: {error}") from None


@dataclass
class SelectionSection:
    """Which frames of the MD are labelled (`mlff.dynamics.selection.SelectionObserver`).

    Attributes:
        spread_threshold_ev_per_a: None: the committee file's (99th percentile over its training frames).
        spread_ceiling_factor: frames whose spread reaches this multiple of the threshold are not
            labelled (DP-GEN's upper trust level; None: no ceiling).
        max_frames: candidates kept per iteration (the highest scores).
        bond_deviation_a, before_collapse, duplicate_distance_a: as the observer's.
    """

    spread_threshold_ev_per_a: float | None = None
    spread_ceiling_factor: float | None = None
    max_frames: int = 50
    bond_deviation_a: float = 0.3
    before_collapse: int = 2
    duplicate_distance_a: float = 0.03

    def __post_init__(self) -> None:
        if self.max_frames < 1:
            raise ConfigError(f"selection.max_frames must be >= 1, got {self.max_frames}")
        from mlff.dynamics.selection import check_spread_ceiling

        try:
            check_spread_ceiling(self.spread_ceiling_factor)
        except ValueError as error:
            raise ConfigError(f"selection.{error}") from None


@dataclass
class LabelSection:
    """The reference method (`mlff.data.label.label_frames`)."""

    method: str = "gfn2-xtb"
    basis: str | None = None
    workers: int = 1
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        from mlff.methods import METHODS

        if self.method not in METHODS:
            raise ConfigError(f"label.method must be one of {list(METHODS)}, got {self.method!r}")
        if self.workers < 1 or self.threads_per_worker < 1:
            raise ConfigError("label.workers and label.threads_per_worker must be >= 1")


@dataclass
class BudgetSection:
    """When to stop if the MD never holds: after max_iterations iterations, or once max_labels frames
    have been labelled in all (the last selection is cut to what is left)."""

    max_iterations: int = 10
    max_labels: int = 500

    def __post_init__(self) -> None:
        if self.max_iterations < 1 or self.max_labels < 0:
            raise ConfigError("budget.max_iterations must be >= 1 and budget.max_labels >= 0")


@dataclass
class LearnConfig:
    """A whole `mlff learn` run (see the module docstring)."""

    output_dir: str = "runs/learn"
    training: TrainingSection = field(default_factory=TrainingSection)
    md: MDSection = field(default_factory=MDSection)
    export: ExportSection = field(default_factory=ExportSection)
    selection: SelectionSection = field(default_factory=SelectionSection)
    label: LabelSection = field(default_factory=LabelSection)
    budget: BudgetSection = field(default_factory=BudgetSection)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def training_config(self) -> Config:
        """The training config of iteration 0 (committee K; output_dir and init_from set per iteration)."""
        section = self.training
        if section.config is not None:
            config = load_config(section.config, section.overrides)
        else:
            raw = yaml.safe_load(yaml.safe_dump(section.inline)) or {}
            for override in section.overrides:
                apply_override(raw, override)
            config = config_from_dict(raw)
        if config.data.energy_unit not in ("auto", "eV"):
            raise ConfigError(
                f"data.energy_unit {config.data.energy_unit!r}: mlff learn appends labelled extxyz files (eV), "
                "read with the same unit; use auto (npz: kcal/mol, extxyz: eV) or eV"
            )
        return config


def load_learn_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> LearnConfig:
    """Read a learn YAML (or start from defaults), apply dotted key=value overrides, validate."""
    return learn_config_from_dict(read_raw_config(path, overrides, LearnConfig))


def learn_config_from_dict(raw: dict[str, Any]) -> LearnConfig:
    """A LearnConfig from a plain dict; an unknown key or a bad value is a ConfigError naming it."""
    return dataclass_from_dict(LearnConfig, raw, "")
