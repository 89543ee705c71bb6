"""Training: configs, losses, the trainer."""

from mlff.training.config import Config, ConfigError, DataConfig, TrainConfig, load_config
from mlff.training.trainer import TrainResult, train

__all__ = ["Config", "ConfigError", "DataConfig", "TrainConfig", "TrainResult", "load_config", "train"]
