"""Active learning: `mlff learn` (committee training, MD, selection, labelling, retraining)."""

from mlff.learn.config import LearnConfig, load_learn_config
from mlff.learn.run import STEPS, learn

__all__ = ["STEPS", "LearnConfig", "learn", "load_learn_config"]
