"""Train / validation / test splits.

The file's own split (split_train[k], split_test[k]) is used when present;
otherwise frames are split by seed. Validation frames always come from the
training frames, never from the test split.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlff.data.frames import DatasetError, Frames


@dataclass
class Split:
    """Frame indices into a Frames object."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def summary(self) -> dict[str, int]:
        return {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size)}


def make_split(
    frames: Frames,
    split_index: int = 0,
    n_val: int = 50,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    train_pool: str = "split",
) -> Split:
    """Choose train, validation and test frames.

    Args:
        frames: the dataset.
        split_index: k of the file's split_train[k] / split_test[k].
        n_val: validation frames, drawn by seed from the training pool.
        n_train: cap on training frames after validation is removed (None: all of the pool).
        n_test: test frames when the file has no split (None: all frames left over).
        seed: seeds every random choice.
        train_pool: "split" (the file's split_train[k]) or "all" (every frame not in the test split).
    """
    rng = np.random.default_rng(seed)
    if "split_test" in frames.splits:
        tests = frames.splits["split_test"]
        if not 0 <= split_index < tests.shape[0]:
            raise DatasetError(f"split {split_index} requested; the file has {tests.shape[0]} splits")
        test = tests[split_index]
        if train_pool == "split":
            pool = frames.splits["split_train"][split_index]
        elif train_pool == "all":
            pool = np.setdiff1d(np.arange(frames.num_frames), test)
        else:
            raise ValueError(f"train_pool must be 'split' or 'all', got {train_pool!r}")
        pool = rng.permutation(pool)
    else:
        order = rng.permutation(frames.num_frames)
        needed_test = n_test if n_test is not None else max(frames.num_frames // 5, 1)
        test, pool = order[:needed_test], order[needed_test:]
    if np.intersect1d(pool, test).size:
        raise DatasetError("training and test frames overlap in the file's split")
    if n_val >= pool.size:
        raise DatasetError(f"{n_val} validation frames requested from a pool of {pool.size}")
    val, train = pool[:n_val], pool[n_val:]
    if n_train is not None:
        train = train[:n_train]
    if n_test is not None:
        test = test[:n_test]
    return Split(train=np.sort(train), val=np.sort(val), test=np.sort(test))


SPLITS = ("test", "val", "train", "all")
# Keys of a training config's "data" section -> make_split keyword arguments.
SPLIT_SETTINGS: dict[str, str] = {
    "split": "split_index",
    "n_val": "n_val",
    "n_train": "n_train",
    "n_test": "n_test",
    "seed": "seed",
    "train_pool": "train_pool",
}


def split_settings(data_config: dict[str, Any]) -> dict[str, Any]:
    """make_split keyword arguments from a training config's "data" section (unknown keys ignored)."""
    return {SPLIT_SETTINGS[key]: value for key, value in data_config.items() if key in SPLIT_SETTINGS}


def select_frames(frames: Frames, split: str, settings: dict[str, Any]) -> np.ndarray:
    """Frame indices of `split` ("all", or "train", "val", "test" of make_split(frames, **settings))."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return np.arange(frames.num_frames)
    return getattr(make_split(frames, **settings), split)
