"""Training configuration: YAML validated into dataclasses.

`load_config(path, overrides)` reads YAML, applies dotted overrides such as
`train.epochs=50` or `data.path=my.npz` (values parsed as YAML scalars), and
builds the dataclasses; an unknown key or a value of the wrong type is a
ConfigError naming the dotted key.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlff.models.config import ModelConfig


class ConfigError(ValueError):
    """A config key is unknown or its value is invalid (the message names the key)."""


# Field metadata key: a mapping given for the field replaces its default rather than being merged into
# it. For a mapping of terms (loss weights) leaving one out means "not this one"; a mapping of options
# (backbone_options) is merged, so that one left out keeps its default.
REPLACES_DEFAULT = "replaces_default"


@dataclass
class DataConfig:
    """Which frames to train, validate and test on.

    Attributes:
        path: dataset file (MD17/rMD17 npz or any ASE-readable file with energies and forces), or a
            list of them trained together: each file is split on its own (its split_train[k] /
            split_test[k], or by seed) with the same settings, validation and test errors are
            reported per file and overall, and the reference energies are fitted jointly (so the
            files' energies must share one level of theory). A packed corpus (.h5, `mlff data pack`) is read
            lazily, a chunk at a time, and trained alone (`mlff.training.dataset`).
        sha256: the SHA-256 of the file (a list: of each file of `path`) this config means; a file with
            other bytes is refused before training. A dataset is identified by its SHA-256: the
            9,633-frame rMD17 file of the published splits and a fetched 100,000-frame rMD17 file
            share a name but not their frames. None: any file is taken (its SHA-256 is recorded).
        energy_unit: "auto" (npz: kcal/mol, ASE files: eV), "kcal/mol" or "eV".
        split: k of the file's split_train[k] / split_test[k].
        n_val: validation frames taken by seed from the training pool (never from test).
        n_train: cap on training frames (None: the whole pool less validation).
        n_test: cap on test frames (None: the whole test split).
        seed: seeds the split.
        train_pool: "split" (the file's split_train[k]) or "all" (every frame not in split_test[k]).
        energy_consistent: the energies of `path` all come from one level of theory and are trained on;
            false keeps only its forces (and equilibrium geometries), e.g. for a corpus mixing methods.
        energy_method: when set, only frames whose `method` (extxyz info) equals it keep their energy
            labels (in `path` and in `equilibrium_path`); a file that records no method is an error.
        equilibrium_path: an extra file of equilibrium frames (local minima of the same potential-energy
            surface, e.g. DFT minima; forces taken as zero) added to the training frames only, never
            to validation or test. None: no such file.
        equilibrium_energies: also train on the energies of `equilibrium_path` (only when they were
            computed at the same level of theory as `path`).
        equilibrium_repeat: each frame of `equilibrium_path` joins the training frames this many
            times per epoch; one minimum among ~1000 frames otherwise meets the regularisers in one
            batch an epoch (about len(train) / batch_size repeats puts it in every batch on average).
        extra_train_paths: further files (read like data.path, off-equilibrium) whose frames all join the
            training frames, never validation or test, e.g. the frames `mlff learn` labels; their energies
            follow energy_consistent and energy_method like data.path's. Empty: none.
        extra_energies: train on the energies of extra_train_paths; false keeps only their forces, for
            labels whose energy zero differs from data.path's at nominally the same level (pyscf's
            PBE/def2-SVP with the exact Coulomb sits 6-7 meV above rMD17's RI-J energies while the
            forces agree to 0.7-0.8 meV/A: docs/learn.md, config).
        extra_repeat: each frame of extra_train_paths joins the training frames this many times per
            epoch: a few dozen labelled frames far from the main file's (the collapse points `mlff
            learn` labels, eV off the model) among thousands are otherwise met too rarely to be learnt.
    """

    path: str | list[str] = ""
    sha256: str | list[str] | None = None
    energy_unit: str = "auto"
    split: int = 0
    n_val: int = 50
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    train_pool: str = "split"
    energy_consistent: bool = True
    energy_method: str | None = None
    equilibrium_path: str | None = None
    equilibrium_energies: bool = False
    equilibrium_repeat: int = 1
    extra_train_paths: list[str] = field(default_factory=list)
    extra_energies: bool = True
    extra_repeat: int = 1

    @property
    def paths(self) -> list[str]:
        """data.path as a list of files (empty when none is named)."""
        if isinstance(self.path, str):
            return [self.path] if self.path else []
        return list(self.path)

    @property
    def sha256s(self) -> list[str | None]:
        """data.sha256 as one entry per file of data.path (None: not pinned)."""
        if self.sha256 is None:
            return [None] * len(self.paths)
        return [self.sha256] if isinstance(self.sha256, str) else list(self.sha256)

    def __post_init__(self) -> None:
        if isinstance(self.path, list) and (not self.path or not all(p and isinstance(p, str) for p in self.path)):
            raise ConfigError(f"data.path must be a file or a non-empty list of files, got {self.path!r}")
        if not all(p and isinstance(p, str) for p in self.extra_train_paths):
            raise ConfigError(f"data.extra_train_paths must be a list of files, got {self.extra_train_paths!r}")
        if len(set(self.paths)) != len(self.paths):
            raise ConfigError(f"data.path names a file more than once: {self.path!r}")
        if self.sha256 is not None and len(self.sha256s) != len(self.paths):
            raise ConfigError(
                f"data.sha256 gives {len(self.sha256s)} hash(es) for the {len(self.paths)} file(s) of data.path"
            )
        if self.train_pool not in ("split", "all"):
            raise ConfigError(f"data.train_pool must be 'split' or 'all', got {self.train_pool!r}")
        if self.n_val < 1:
            raise ConfigError(f"data.n_val must be >= 1, got {self.n_val}")
        for name in ("equilibrium_repeat", "extra_repeat"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"data.{name} must be >= 0, got {value}")


@dataclass
class EMPPConfig:
    """Settings of the EMPP loss (`train.empp`; used when train.loss_weights.empp > 0, `mlff.training.empp`).

    Attributes:
        l_max: highest spherical-harmonic degree of the predicted direction distribution (1..3).
        grid: directions of the Fibonacci grid on which the distribution is normalised (>= 32).
        masked_atoms_per_frame: atoms masked per frame and step, each in its own copy of the frame (>= 1).
        channels: angular channels per degree (>= 1).
        radius_bins: bins of the radius distribution on [0, cutoff] (>= 2).
        direction_concentration: kappa (1/rad^2) of the smoothed true direction, exp(kappa g.u): its
            angular width ~ 1/sqrt(kappa) rad should exceed the grid spacing ~ sqrt(4 pi / grid).
        radius_width_a: Angstrom, width of the smoothed true radius (about the bin spacing or more).
    """

    l_max: int = 3
    grid: int = 512
    masked_atoms_per_frame: int = 1
    channels: int = 16
    radius_bins: int = 64
    direction_concentration: float = 50.0
    radius_width_a: float = 0.1

    def __post_init__(self) -> None:
        if self.l_max not in (1, 2, 3):
            raise ConfigError(f"train.empp.l_max must be 1, 2 or 3, got {self.l_max}")
        for name, least in (("grid", 32), ("masked_atoms_per_frame", 1), ("channels", 1), ("radius_bins", 2)):
            if getattr(self, name) < least:
                raise ConfigError(f"train.empp.{name} must be >= {least}, got {getattr(self, name)}")
        for name in ("direction_concentration", "radius_width_a"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.empp.{name} must be > 0, got {getattr(self, name)}")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    """Optimisation.

    Loss = sum over `loss_weights` of weight * term; the terms are registered in
    `mlff.training.losses.LOSSES` (energy: MSE of total energy over frames with an
    energy label, eV^2; forces: MSE of force components of off-equilibrium frames,
    (eV/A)^2; forces_mae: their mean absolute error, eV/A; zero_force: mean squared
    predicted force component on equilibrium frames, (eV/A)^2; denoising: MSE between
    the predicted force at a perturbed equilibrium geometry and the harmonic restoring
    force, (eV/A)^2; smoothness: the encoding's regulariser, its weight is the paper's
    lambda; empp: the masked-position prediction loss of `train.empp`, nats, which needs
    no labels). A `loss_weights` mapping written in a config is the whole loss: a term it leaves
    out is not trained. A dotted override (`train.loss_weights.zero_force=100`) edits that mapping, or
    the default when the config gives none.

    Attributes:
        epochs: passes over the training frames.
        batch_size: structures per optimiser step.
        lr: peak AdamW learning rate. weight_decay: AdamW weight decay.
        schedule: "cosine" (per step, to min_lr, after warmup_epochs of linear warm-up),
            "plateau" (halve on a validation plateau of plateau_patience epochs) or "constant".
        ema_decay: decay of the exponential moving average of the weights (0 disables EMA).
        grad_clip: max gradient norm (0 disables clipping).
        early_stopping_patience: stop after this many epochs without a better
            validation force MAE (0 disables).
        max_minutes: wall-clock cap on training, summed over resumed processes (0: none); the run
            stops after the epoch that crosses it, and the cosine schedule ends there.
        max_cpu_minutes: CPU-time cap on training (the process's user + system time summed over
            its threads, counted across resumes; 0: none). Unlike wall time it does not grow when
            other processes load the machine, so runs capped by it are comparable. With both caps
            set, the run stops and the cosine schedule ends at whichever is reached first.
            In a data-parallel run (`mlff train --distributed`) wall time is the ranks' mean and CPU
            time their sum.
        seed: seeds weights and batch order; a fixed epoch count reproduces a run.
        device: "cpu", "cuda", "cuda:1", ...
        denoising_sigma: Angstrom, scale of the Gaussian noise of the denoising term.
        denoising_temperature_k: Kelvin, T of the denoising term's harmonic well: its force
            constant per coordinate is k_B T / sigma^2 (the default 300 K with sigma 0.04 A gives
            16 eV/A^2, between typical Cartesian bend (~3) and bond-stretch (~30) force constants).
        divergence_factor: an epoch whose training loss is not finite, or whose validation force MAE
            exceeds this multiple of the best so far, is undone: the run returns to the best
            epoch's checkpoint (best.pt) with the learning rate (peak and schedule) halved again at
            each rollback, and goes on from there; CPU and wall time spent on it still count. 0
            disables. (lr 0.01 ran 26 epochs on ethanol, then blew up within one epoch and never
            recovered.)
        max_rollbacks: the run stops ("diverged") after this many undone epochs.
        keep: what best.pt (the run's result: the test metrics, `mlff export`, `init_from`) holds:
            "best", the epoch of lowest validation force MAE; or "last", every epoch in turn, so the
            schedule's end. "last" suits a fine-tune on frames the validation set does not hold
            (`mlff learn`'s labelled collapse points): there the best validation epoch is the one
            that has learnt them least (toluene's loop kept epoch 1 of 12, still 650 meV/A off its
            labels against 188 at epoch 12). Rollbacks return to best.pt either way.
        committee: K members trained one after another in one run (`mlff.training.committee`), member k
            with seed `seed + k` under output_dir/member_k; 1 (default): one model, as ever.
        committee_bootstrap: each member trains on a bootstrap resample (drawn with replacement,
            by its seed) of the training frames; validation and test frames are unchanged.
        empp: settings of the `empp` loss term (equivariant masked position prediction,
            `mlff.training.empp`); with loss_weights.empp 0 (the default) no EMPP head exists.
        compile: train through `mlff.training.compiled`: each batch shape's energy and forces traced
            into one graph and compiled with torch.compile (minutes per shape on a CPU), for
            isolated molecules of one kind (periodic frames are refused). False: eager, as ever.
        compile_mode: the torch.compile mode of `compile` ("default", "reduce-overhead": CUDA graphs
            on CUDA, "max-autotune-no-cudagraphs").
    """

    # The defaults are the recipe study's winner (docs/training.md#training-recipe): EGNN 64x4,
    # batch 32 at lr 0.01, smoothness 0.01, energy:force 1:100; cap long runs by CPU time.
    epochs: int = 200
    batch_size: int = 32
    lr: float = 1.0e-2
    min_lr: float = 1.0e-5
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: int = 2
    plateau_patience: int = 10
    ema_decay: float = 0.99
    grad_clip: float = 10.0
    divergence_factor: float = 3.0
    max_rollbacks: int = 5
    keep: str = "best"
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"energy": 1.0, "forces": 100.0, "smoothness": 0.01}, metadata={REPLACES_DEFAULT: True}
    )
    early_stopping_patience: int = 0
    max_minutes: float = 0.0
    max_cpu_minutes: float = 0.0
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 100
    denoising_sigma: float = 0.04
    denoising_temperature_k: float = 300.0
    committee: int = 1
    committee_bootstrap: bool = False
    empp: EMPPConfig = field(default_factory=EMPPConfig)
    compile: bool = False
    compile_mode: str = "default"

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            modes = ", ".join(COMPILE_MODES)
            raise ConfigError(f"train.compile_mode must be one of {modes}, got {self.compile_mode!r}")
        if self.keep not in ("best", "last"):
            raise ConfigError(f"train.keep must be best or last, got {self.keep!r}")
        if self.schedule not in ("cosine", "plateau", "constant"):
            raise ConfigError(f"train.schedule must be cosine, plateau or constant, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "committee"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must lie in [0, 1), got {self.ema_decay}")
        from mlff.training.losses import LOSSES

        for name, weight in self.loss_weights.items():
            if name not in LOSSES:
                raise ConfigError(f"unknown loss term train.loss_weights.{name}; known: {sorted(LOSSES)}")
            if weight < 0:
                raise ConfigError(f"train.loss_weights.{name} must be >= 0, got {weight}")
        if self.divergence_factor != 0 and self.divergence_factor <= 1:
            raise ConfigError(f"train.divergence_factor must be > 1 (0 disables), got {self.divergence_factor}")
        if self.max_rollbacks < 0:
            raise ConfigError(f"train.max_rollbacks must be >= 0, got {self.max_rollbacks}")
        for name in ("max_minutes", "max_cpu_minutes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0 (0: no cap), got {getattr(self, name)}")
        for name in ("denoising_sigma", "denoising_temperature_k"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be > 0, got {getattr(self, name)}")


@dataclass
class Config:
    """A whole training run: data, model, optimisation, and where outputs go.

    Attributes:
        init_from: a training checkpoint (e.g. a pretraining run's best.pt) to fine-tune: the
            model is built from `model` (which must equal the checkpoint's, dtype aside), takes
            the checkpoint's weights and species, and re-fits its per-element reference energies
            on this run's training frames (see `mlff.training.finetune`). None: a fresh model.
            `--resume` continues the run's own last.pt and ignores it.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/default"
    init_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from defaults) and apply dotted key=value overrides."""
    return config_from_dict(read_raw_config(path, overrides))


def read_raw_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), root: type | None = None
) -> dict[str, Any]:
    """The plain mapping of a YAML config file (empty for None) with dotted key=value overrides applied
    (see `apply_override`; `root` is the config class the mapping is for, None: `Config`)."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config not found: {path}")
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a YAML mapping")
        raw = loaded or {}
    for override in overrides:
        apply_override(raw, override, root)
    return raw


def apply_override(raw: dict[str, Any], override: str, root: type | None = None) -> None:
    """Set raw[a][b][c] = value for an override 'a.b.c=value' (value parsed as YAML).

    `root` is the config class `raw` is for (None: `Config`). A mapping field that replaces its
    default (`REPLACES_DEFAULT`, e.g. train.loss_weights) and is absent from `raw` starts from its
    default, so that `train.loss_weights.zero_force=100` adds a term to the default loss; where `raw`
    gives the mapping, the override edits that one.
    """
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    parts = key.strip().split(".")
    node = raw
    kind: type | None = Config if root is None else root
    for part in parts[:-1]:
        spec, kind = _field_of(kind, part)
        if part not in node and spec is not None and spec.metadata.get(REPLACES_DEFAULT):
            node[part] = spec.default_factory()
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""


def _field_of(kind: type | None, name: str) -> tuple[dataclasses.Field | None, type | None]:
    """The field `name` of the dataclass `kind` (None if `kind` is not a dataclass or has no such
    field) and the dataclass that field holds (None if it holds none), through an optional hint."""
    if kind is None or not dataclasses.is_dataclass(kind):
        return None, None
    spec = next((f for f in dataclasses.fields(kind) if f.name == name), None)
    if spec is None:
        return None, None
    hint = typing.get_type_hints(kind)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next((option for option in typing.get_args(hint) if dataclasses.is_dataclass(option)), None)
    return spec, hint if dataclasses.is_dataclass(hint) else None


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from a plain dict, naming any unknown key or bad value."""
    return dataclass_from_dict(Config, raw, "")


def dataclass_from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """An instance of the dataclass `cls` from a plain dict: unknown keys and values of the wrong type
    are a ConfigError naming the dotted key (under `prefix`); nested dataclasses, unions, lists and
    dicts are converted by their type hints; a mapping given for a field whose default is a mapping is
    merged into that default, unless the field is marked `REPLACES_DEFAULT`. Every config of mlff
    (training, learn) is built with it."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}; known: {sorted(names)}")
    defaults = {
        f.name: f.default_factory()
        for f in dataclasses.fields(cls)
        if f.default_factory is not dataclasses.MISSING and not f.metadata.get(REPLACES_DEFAULT)
    }
    values = {}
    for name, value in raw.items():
        if isinstance(value, dict) and isinstance(defaults.get(name), dict):
            value = {**defaults[name], **value}
        values[name] = _convert(hints[name], value, f"{prefix}{name}")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        message = str(error)
        raise ConfigError(
            message if message.startswith(prefix) and prefix else f"{prefix or 'config: '}{message}"
        ) from None


def _convert(kind: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(kind):
        return dataclass_from_dict(kind, value, key + ".")
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except ConfigError as error:
                errors.append(error)
        raise (
            errors[0]
            if len(errors) == 1
            else ConfigError(f"{key} must be one of {[getattr(o, '__name__', str(o)) for o in options]}, got {value!r}")
        )
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item_kind,) = typing.get_args(kind)
        return [_convert(item_kind, item, f"{key}[{k}]") for k, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        _, value_kind = typing.get_args(kind)
        return {k: (v if value_kind is Any else _convert(value_kind, v, f"{key}.{k}")) for k, v in value.items()}
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key} must be of type {getattr(kind, '__name__', kind)}, got {value!r}")
