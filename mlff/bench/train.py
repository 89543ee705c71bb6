"""`mlff bench train`: speed of the training step of several configs on the same data.

Each config's model, optimiser and loss are built as `mlff train` builds them (same
data file for all: the first config's `data.path` unless one is given). Configs take
turns in rounds, so a load that comes and goes on a shared machine falls on all of
them alike; the median over rounds is reported, with the process CPU time beside
the wall time; each row's figures are those of its median round.

The step's breakdown comes from timestamps inside one step (`train_step`'s marks):
  data            batch assembly (indexing the frame tensors)
  forward         the model up to its energy (ends when the last submodule's forward returns)
  force_backward  forces = -dE/dx (autograd.grad with create_graph)
  loss            the loss terms
  param_backward  loss.backward()
  optimizer       clipping, AdamW, EMA and schedule
The phases are consecutive slices of one clock, so they sum to the step they time.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

PHASES = ("data", "forward", "force_backward", "loss", "param_backward", "optimizer")


@dataclass
class TrainBenchSettings:
    """Rounds of `steps` timed steps per config after `warmup` untimed ones."""

    steps: int = 20
    rounds: int = 3
    warmup: int = 3

    def __post_init__(self) -> None:
        for name in ("steps", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


class _Arm:
    """One config's model, optimiser state and batches, ready to step."""

    def __init__(self, path: str, overrides: list[str], data_path: str | None) -> None:
        from mlff.data.batch import FrameTensors
        from mlff.models import DTYPES
        from mlff.training import load_config
        from mlff.training.dataset import load_training_data
        from mlff.training.losses import LossSettings
        from mlff.training.trainer import TrainingState, _resolved_model_config, initial_model

        config = load_config(path, [*overrides, *([f"data.path={data_path}"] if data_path else [])])
        cfg = config.train
        training_data = load_training_data(config.data)
        frames, split = training_data.frames, training_data.split
        config.model = _resolved_model_config(config, frames, split, None)
        self.name = Path(path).stem
        self.config = config
        self.data = FrameTensors(frames, dtype=DTYPES[config.model.dtype], device=torch.device(cfg.device))
        model = initial_model(config, frames, split).to(self.data.device)
        model.train()
        self.state = TrainingState(config, model, len(split.train), None)
        self.settings = LossSettings(cfg.denoising_sigma, cfg.denoising_temperature_k)
        self.generator = torch.Generator(device=self.data.device).manual_seed(0)
        self.order = np.random.default_rng(0).permutation(split.train)
        self.cursor = 0
        self.parameters = sum(p.numel() for p in model.parameters())
        self.forward_ends: list[float] = []
        for module in model.modules():
            if module is not model:
                module.register_forward_hook(lambda *_: self.forward_ends.append(time.perf_counter()))

    def _next_indices(self) -> np.ndarray:
        size = self.config.train.batch_size
        if self.cursor + size > self.order.size:
            self.cursor = 0
        indices = self.order[self.cursor : self.cursor + size]
        self.cursor += size
        return indices

    def step(self) -> dict[str, float]:
        """One timed training step: seconds per phase, "step" (wall) and "cpu" (process CPU time)."""
        from mlff.training.trainer import train_step

        cpu_started = time.process_time()
        started = time.perf_counter()
        batch = self.data.batch(self._next_indices())
        batch_ready = time.perf_counter()
        self.forward_ends.clear()
        marks: dict[str, float] = {}
        train_step(
            self.state,
            batch,
            self.settings,
            self.generator,
            lambda phase: marks.__setitem__(phase, time.perf_counter()),
        )
        if self.data.device.type == "cuda":
            torch.cuda.synchronize(self.data.device)
        ended = time.perf_counter()
        forward_end = max((t for t in self.forward_ends if t <= marks["model"]), default=batch_ready)
        return {
            "data": batch_ready - started,
            "forward": forward_end - batch_ready,
            "force_backward": marks["model"] - forward_end,
            "loss": marks["loss"] - marks["model"],
            "param_backward": marks["backward"] - marks["loss"],
            "optimizer": ended - marks["backward"],
            "step": ended - started,
            "cpu": time.process_time() - cpu_started,
        }


def train_benchmark(
    configs: list[str], settings: TrainBenchSettings, data_path: str | None = None, overrides: list[str] = ()
) -> list[dict[str, Any]]:
    """One row per config: frames/s, ms/step (median over rounds) and the step's breakdown in ms.

    Args:
        configs: training config files (YAML).
        settings: steps, rounds, warm-up.
        data_path: the data file for every config (None: the first config's data.path).
        overrides: dotted overrides applied to every config (e.g. train.device=cuda).
    """
    from mlff.training import load_config

    if data_path is None:
        data_path = load_config(configs[0], list(overrides)).data.path
    arms = [_Arm(path, list(overrides), data_path) for path in configs]
    for arm in arms:
        for _ in range(settings.warmup):
            arm.step()
    rounds: dict[str, list[dict[str, float]]] = {arm.name: [] for arm in arms}
    for _ in range(settings.rounds):
        for arm in arms:
            times = [arm.step() for _ in range(settings.steps)]
            rounds[arm.name].append({key: float(np.mean([t[key] for t in times])) for key in times[0]})
    rows = []
    for path, arm in zip(configs, arms):
        # The round of median step time, whole: its phases sum to its step (per-phase medians would not).
        ordered = sorted(rounds[arm.name], key=lambda r: r["step"])
        median = ordered[(len(ordered) - 1) // 2]
        batch_size = arm.config.train.batch_size
        rows.append(
            {
                "config": str(path),
                "backbone": arm.config.model.backbone,
                "backbone_options": arm.config.model.backbone_options,
                "parameters": arm.parameters,
                "batch_size": batch_size,
                "dtype": arm.config.model.dtype,
                "device": arm.config.train.device,
                "threads": torch.get_num_threads(),
                "data": str(data_path),
                "frames_per_s": batch_size / median["step"],
                "ms_per_step": 1000.0 * median["step"],
                "cpu_ms_per_step": 1000.0 * median["cpu"],
                "breakdown_ms": {phase: 1000.0 * median[phase] for phase in PHASES},
                "rounds_ms_per_step": [1000.0 * r["step"] for r in rounds[arm.name]],
            }
        )
    return rows
