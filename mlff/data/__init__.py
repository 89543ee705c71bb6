"""Datasets: readers -> Frames, splits, batching."""

from mlff.data.frames import DatasetError, Frames
from mlff.data.readers import read_frames
from mlff.data.splits import Split, make_split

__all__ = ["DatasetError", "Frames", "Split", "make_split", "read_frames"]
