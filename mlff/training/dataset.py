"""The frames a run trains, validates and tests on, as `data` in the config says.

`data.path` (one file or several, each split on its own and concatenated in the
order given) is split into train / validation / test (`mlff.data.make_split`);
the frames of `data.extra_train_paths` follow, all of them training frames,
then those of `data.equilibrium_path`, if any, as equilibrium frames; both
join the training frames only, so validation and test
(and `mlff eval` with the run's recorded split) see the same frames with or
without them. Which frames keep their energy labels follows
`data.energy_consistent`, `data.energy_method` and `data.equilibrium_energies`;
energies of more than one level of theory are never trained together.

A packed corpus (`data.path: corpus.h5`, `mlff.data.packed`) is opened lazily: its per-frame
metadata is in memory, its atoms are read a chunk at a time (`frame_tensors`, `epoch_order`);
it is trained alone (no further files of data.path, extra_train_paths or equilibrium_path).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlff.data import DatasetError, Frames, Split, make_split, read_frames
from mlff.data.batch import FrameTensors
from mlff.data.packed import PackedFrames, PackedTensors, is_packed_path
from mlff.training.config import DataConfig
from mlff.utils import sha256_of


@dataclass
class TrainingData:
    """The run's frames and split.

    Attributes:
        frames: the frames of data.path followed by those of data.extra_train_paths and
            data.equilibrium_path.
        split: indices into `frames` (the extra_train_paths frames are in `train` only, each
            `data.extra_repeat` times, and the equilibrium_path frames too, each
            `data.equilibrium_repeat` times).
        base_frames: the frames of data.path alone (all its files, concatenated).
        base_split: the split of data.path alone (indices into `base_frames`).
        files: file label (its stem) -> that file's split, as indices into `frames`; one entry
            per file of data.path.
    """

    frames: Frames
    split: Split
    base_frames: Frames
    base_split: Split
    files: dict[str, Split]
    sha256: list[str]
    extra_sha256: list[str] = field(default_factory=list)

    def summary(self, config: DataConfig) -> dict[str, Any]:
        """JSON-able description of the data (for checkpoints, potential metadata and model cards)."""
        return {
            **self.frames.summary(),
            "split": config.split,
            "train_pool": config.train_pool,
            "sha256": self.sha256[0] if len(self.sha256) == 1 else self.sha256,
            "equilibrium_path": config.equilibrium_path,
            **(
                {"extra_train_paths": dict(zip(config.extra_train_paths, self.extra_sha256))}
                if self.extra_sha256
                else {}
            ),
            **self.split.summary(),
            **({"files": {name: split.summary() for name, split in self.files.items()}} if len(self.files) > 1 else {}),
        }


def load_training_data(config: DataConfig, require_labels: bool = True) -> TrainingData:
    """Read, label and split the data of a run.

    `require_labels=False` reads label-free frames (positions only) too: a run whose losses need
    no labels (`mlff.training.losses.label_free`).

    Raises:
        DatasetError: a file is unreadable, or the energy labels would mix levels of theory.
    """
    if not config.paths:
        raise ValueError("data.path names no dataset file (set it in the config or with data.path=FILE)")
    packed = [path for path in config.paths + config.extra_train_paths if is_packed_path(path)]
    if config.equilibrium_path is not None and is_packed_path(config.equilibrium_path):
        packed.append(config.equilibrium_path)
    if packed and (len(config.paths) > 1 or config.extra_train_paths or config.equilibrium_path):
        raise DatasetError(
            f"a packed corpus ({packed[0]}) is trained alone: pack the other files into it "
            "(`mlff data pack IN... -o OUT.h5`) instead of listing them in data.path, "
            "data.extra_train_paths or data.equilibrium_path"
        )
    parts, splits, hashes = [], [], []
    for path, expected in zip(config.paths, config.sha256s):
        hashes.append(checked_sha256(path, expected))
        part = _labelled_frames(path, config, require_labels)
        parts.append(part)
        splits.append(
            make_split(part, config.split, config.n_val, config.n_train, config.n_test, config.seed, config.train_pool)
        )
    base, split = (parts[0], splits[0]) if len(parts) == 1 else (Frames.concatenate(parts), _joined(parts, splits))
    files = dict(zip(file_labels(config.paths), _shifted(parts, splits)))
    if config.equilibrium_path is None and not config.extra_train_paths:
        _check_one_method(base, base.has_energy)
        return TrainingData(base, split, base, split, files, hashes)
    added, train, extra_hashes = [], [split.train], []
    offset = base.num_frames
    for path in config.extra_train_paths:
        extra_hashes.append(checked_sha256(path, None))
        part = _labelled_frames(path, config, require_labels)
        if not config.extra_energies:
            part.has_energy = np.zeros_like(part.has_energy)
        added.append(part)
        train.append(np.tile(offset + np.arange(part.num_frames), config.extra_repeat))
        offset += part.num_frames
    if config.equilibrium_path is not None:
        minima = read_frames(config.equilibrium_path, config.energy_unit, equilibrium=True)
        minima.has_energy = energy_labels(minima, config.equilibrium_energies, config.energy_method)
        added.append(minima)
        train.append(np.tile(offset + np.arange(minima.num_frames), config.equilibrium_repeat))
    frames = Frames.concatenate([base, *added])
    _check_one_method(frames, frames.has_energy)
    combined = Split(train=np.concatenate(train), val=split.val, test=split.test)
    return TrainingData(frames, combined, base, split, files, hashes, extra_hashes)


def _labelled_frames(path: str, config: DataConfig, require_labels: bool = True) -> Frames:
    """The frames of one data file with the energy labels the config keeps (`energy_labels`).

    A packed corpus stays on disk (a `PackedFrames`, read lazily).
    """
    if is_packed_path(path):
        if config.energy_unit not in ("auto", "eV"):
            raise DatasetError(
                f"{path}: a packed corpus stores eV; data.energy_unit {config.energy_unit!r} does not apply"
            )
        part = PackedFrames(path)
    else:
        part = read_frames(path, config.energy_unit, require_labels=require_labels)
    part.has_energy = energy_labels(part, config.energy_consistent, config.energy_method)
    return part


def checked_sha256(path: str, expected: str | None) -> str:
    """The file's SHA-256, checked against the one the config pins (if any).

    Raises:
        FileNotFoundError: no such file.
        DatasetError: the file's bytes are not those the config means.
    """
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"data.path: no dataset file at {path}")
    actual = sha256_of(Path(path).expanduser())
    if expected is not None and actual != expected.lower():
        raise DatasetError(
            f"{path} has SHA-256 {actual}, but the config means the file with SHA-256 {expected} (data.sha256): "
            "another version of the dataset (e.g. a fetched file with all frames instead of the published "
            "splits' frames) would train on other frames; point data.path at that file or drop data.sha256"
        )
    return actual


def file_labels(paths: list[str]) -> list[str]:
    """A short label per file: its stem, with its index appended where two stems are equal."""
    stems = [Path(path).stem for path in paths]
    return [stem if stems.count(stem) == 1 else f"{stem}.{k}" for k, stem in enumerate(stems)]


def _shifted(parts: list[Frames], splits: list[Split]) -> list[Split]:
    """Each file's split as indices into the concatenation of `parts`."""
    offsets = np.concatenate([[0], np.cumsum([part.num_frames for part in parts])[:-1]])
    return [Split(s.train + offset, s.val + offset, s.test + offset) for s, offset in zip(splits, offsets)]


def _joined(parts: list[Frames], splits: list[Split]) -> Split:
    """The union of the files' splits as indices into the concatenation of `parts`."""
    shifted = _shifted(parts, splits)
    return Split(*(np.concatenate([getattr(s, name) for s in shifted]) for name in ("train", "val", "test")))


def energy_labels(frames: Frames, consistent: bool, method: str | None) -> np.ndarray:
    """[F] bool: which frames keep their energy as a training label.

    A frame keeps it when it has one, its file's energies are declared consistent
    and, when `method` is set, its recorded `method` equals it.
    """
    labels = frames.has_energy & consistent
    if method is None:
        return labels
    if "method" not in frames.extra:
        raise DatasetError(f"data.energy_method is {method!r} but {frames.source} records no per-frame method")
    return labels & (frames.extra["method"] == method)


def _check_one_method(frames: Frames, labels: np.ndarray) -> None:
    """Refuse energy labels of more than one recorded method (their energy zeros differ)."""
    if "method" not in frames.extra:
        return
    methods = sorted(set(frames.extra["method"][labels].tolist()) - {""})
    if len(methods) > 1:
        raise DatasetError(
            f"{frames.source}: energy labels from {len(methods)} methods {methods} would be trained together; "
            "set data.energy_method to one of them or data.energy_consistent=false"
        )


def frame_tensors(
    frames: Frames | PackedFrames, dtype: torch.dtype, device: torch.device
) -> FrameTensors | PackedTensors:
    """The batch source of a run's frames: tensors in memory, or lazy reads of a packed corpus."""
    if isinstance(frames, PackedFrames):
        return PackedTensors(frames, dtype=dtype, device=device)
    return FrameTensors(frames, dtype=dtype, device=device)


def epoch_order(data: FrameTensors | PackedTensors, train: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The training frames' order in epoch `epoch`, drawn from (seed, epoch).

    In memory: a permutation of all of them. A packed corpus: chunk order shuffled, then frames
    shuffled within a buffer of chunks (`mlff.data.packed.epoch_order`), so reads stay sequential.
    """
    if isinstance(data, PackedTensors):
        return data.epoch_order(train, seed, epoch)
    return np.random.default_rng([seed, epoch]).permutation(train)
