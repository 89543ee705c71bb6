"""The training loop: AdamW, schedule, EMA, clipping, early stopping, checkpoints, resume.

Every epoch ends with a validation pass on the EMA weights, one JSON line in
`metrics.jsonl` and an atomically written `last.pt`; the best validation force
MAE also writes `best.pt`. `train(config, resume=True)` continues from
`last.pt`. Batch order is drawn from (seed, epoch), so a resumed run follows
the same sequence as an uninterrupted one.
"""

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from mlff._version import __version__
from mlff.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, atomic_torch_save, load_checkpoint
from mlff.data import Split, make_split, read_frames
from mlff.data.batch import FrameTensors
from mlff.data.reference import reference_statistics
from mlff.evaluate import evaluate
from mlff.models import DTYPES, EnergyModel, build_model
from mlff.training.config import Config
from mlff.training.losses import check_loss_weights, total_loss
from mlff.training.references import fit_element_energies, force_rms


@dataclass
class TrainResult:
    """What a finished run left behind."""

    output_dir: Path
    epochs_run: int
    best_val_force_mae: float
    test_metrics: dict[str, float]
    stopped_because: str


def train(config: Config, resume: bool = False, progress: bool = True, command: str | None = None) -> TrainResult:
    """Train an energy model as `config` says; return the test metrics of the best EMA weights.

    Args:
        config: the whole run.
        resume: continue from output_dir/last.pt.
        progress: show a progress bar.
        command: the command line that started the run, recorded in checkpoints and model cards.
    """
    if not config.data.path:
        raise ValueError("data.path names no dataset file (set it in the config or with data.path=FILE)")
    check_loss_weights(config.train.loss_weights)
    output_dir = Path(config.output_dir)
    last_path = output_dir / "last.pt"
    if resume and not last_path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {last_path}")
    if not resume and last_path.is_file():
        raise ValueError(f"{output_dir} already holds a run: pass --resume to continue it or choose another output_dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(_yaml(config.to_dict()))

    device = torch.device(config.train.device)
    frames = read_frames(config.data.path, config.data.energy_unit)
    data_cfg = config.data
    split = make_split(
        frames, data_cfg.split, data_cfg.n_val, data_cfg.n_train, data_cfg.n_test, data_cfg.seed, data_cfg.train_pool
    )
    data = FrameTensors(frames, dtype=DTYPES[config.model.dtype], device=device)
    _seed_everything(config.train.seed)
    species = frames.species()
    element_energies = fit_element_energies(frames, split.train, species)
    energy_scale = force_rms(frames, split.train)
    model = build_model(config.model, species, element_energies, energy_scale).to(device)
    state = _TrainingState(config, model, len(split.train), command)
    data_summary = {**frames.summary(), "split": data_cfg.split, "train_pool": data_cfg.train_pool, **split.summary()}
    if resume:
        state.restore(load_checkpoint(last_path))

    history: list[dict[str, Any]] = state.history
    stopped_because = "epochs"
    state.clock.start()
    epochs = range(state.epoch + 1, config.train.epochs + 1)
    bar = tqdm(epochs, desc="train", unit="epoch", disable=not progress, initial=state.epoch, total=config.train.epochs)
    with open(output_dir / "metrics.jsonl", "a", buffering=1) as log:
        for epoch in bar:
            record = _run_epoch(state, data, split, epoch)
            history.append(record)
            log.write(json.dumps(record) + "\n")
            improved = record["val_force_mae_mev_per_a"] < state.best_val
            if improved:
                state.best_val = record["val_force_mae_mev_per_a"]
                state.best_epoch = epoch
            state.epoch = epoch
            checkpoint = state.checkpoint(data_summary)
            atomic_torch_save(checkpoint, last_path)
            if improved:
                atomic_torch_save(checkpoint, output_dir / "best.pt")
            bar.set_postfix(
                loss=f"{record['loss']:.4g}",
                val_F=f"{record['val_force_mae_mev_per_a']:.2f}",
                val_E=f"{record['val_energy_mae_mev']:.2f}",
                lr=f"{record['lr']:.2e}",
            )
            patience = config.train.early_stopping_patience
            if patience and epoch - state.best_epoch >= patience:
                stopped_because = f"early stopping: no better validation force MAE for {patience} epochs"
                break
            if config.train.max_minutes and state.clock.elapsed() > 60.0 * config.train.max_minutes:
                stopped_because = f"wall-clock cap of {config.train.max_minutes} minutes"
                break
    bar.close()
    test_metrics = _finish(output_dir, frames, data, split, stopped_because)
    return TrainResult(output_dir, state.epoch, state.best_val, test_metrics, stopped_because)


class _TrainingState:
    """Model, EMA, optimiser and schedule: everything a checkpoint saves and restores."""

    def __init__(self, config: Config, model: EnergyModel, num_train: int, command: str | None) -> None:
        self.config = config
        self.command = command
        self.model = model
        cfg = config.train
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay else None
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = math.ceil(num_train / cfg.batch_size)
        self.clock = _Clock()
        self.scheduler = _scheduler(self.optimizer, config, self.steps_per_epoch, self.clock)
        self.epoch = 0
        self.best_val = math.inf
        self.best_epoch = 0
        self.history: list[dict[str, Any]] = []

    @property
    def eval_model(self) -> EnergyModel:
        return self.ema.module if self.ema is not None else self.model

    def checkpoint(self, data_summary: dict[str, Any]) -> dict[str, Any]:
        model = self.model
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "mlff_version": __version__,
            "config": self.config.to_dict(),
            "command": self.command,
            "species": list(model.species),
            "element_energies_ev": [float(model.element_energies()[z]) for z in model.species],
            "energy_scale_ev": float(model.energy_scale),
            "model_state": model.state_dict(),
            "ema_state": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_updates": int(self.ema.n_averaged) if self.ema is not None else 0,
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": self.epoch,
            "elapsed_seconds": self.clock.elapsed(),
            "best_val_force_mae": self.best_val,
            "best_epoch": self.best_epoch,
            "history": list(self.history),
            "data_summary": data_summary,
            "test_metrics": None,
            "reference": None,
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model_state"])
        if self.ema is not None and checkpoint.get("ema_state") is not None:
            self.ema.module.load_state_dict(checkpoint["ema_state"])
            self.ema.n_averaged.fill_(checkpoint.get("ema_updates", 1))
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.scheduler is not None and checkpoint.get("scheduler_state") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler_state"])
        self.epoch = int(checkpoint["epoch"])
        self.clock.before = float(checkpoint.get("elapsed_seconds", 0.0))
        self.best_val = float(checkpoint["best_val_force_mae"])
        self.best_epoch = int(checkpoint.get("best_epoch", self.epoch))
        self.history = list(checkpoint.get("history", []))


def _run_epoch(state: _TrainingState, data: FrameTensors, split: Split, epoch: int) -> dict[str, Any]:
    cfg = state.config.train
    model = state.model
    model.train()
    order = np.random.default_rng([cfg.seed, epoch]).permutation(split.train)
    sums: dict[str, float] = {}
    steps = 0
    started = time.monotonic()
    for batch in data.batches(order, cfg.batch_size):
        energy, forces = model(batch.positions, batch.atomic_numbers, batch.batch, batch.cell, batch.pbc)
        loss, parts = total_loss(cfg.loss_weights, model, batch, energy, forces)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        state.optimizer.step()
        if state.ema is not None:
            state.ema.update_parameters(model)
        if cfg.schedule in ("cosine", "constant"):
            state.scheduler.step()
        parts["loss"] = float(loss.detach())
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value
        steps += 1
    train_seconds = time.monotonic() - started
    val = evaluate(state.eval_model.eval(), data, split.val, cfg.eval_batch_size)
    if cfg.schedule == "plateau":
        state.scheduler.step(val["force_mae_mev_per_a"])
    record: dict[str, Any] = {"epoch": epoch, "lr": state.optimizer.param_groups[0]["lr"], "seconds": train_seconds}
    record.update({key: value / steps for key, value in sums.items()})
    record.update({f"val_{key}": value for key, value in val.items() if key != "frames"})
    return record


def _finish(output_dir: Path, frames, data: FrameTensors, split: Split, stopped_because: str) -> dict[str, float]:
    """Evaluate the best EMA weights on the test split; store metrics and reference data in the checkpoints."""
    from mlff.checkpoint import model_from_checkpoint

    best_path = output_dir / "best.pt"
    best = load_checkpoint(best_path)
    model = model_from_checkpoint(best).to(data.device).eval()
    test = evaluate(model, data, split.test, best["config"]["train"]["eval_batch_size"])
    reference = reference_statistics(frames, split)
    for path in (best_path, output_dir / "last.pt"):
        checkpoint = load_checkpoint(path)
        checkpoint["test_metrics"] = test
        checkpoint["reference"] = reference
        atomic_torch_save(checkpoint, path)
    summary = {"best_epoch": best["best_epoch"], "stopped_because": stopped_because, "test": test}
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2))
    return test


class _Clock:
    """Training wall time in seconds, summed over the processes of a resumed run."""

    def __init__(self) -> None:
        self.before = 0.0
        self.started: float | None = None

    def start(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return self.before + (time.monotonic() - self.started if self.started is not None else 0.0)


def _scheduler(optimizer: torch.optim.Optimizer, config: Config, steps_per_epoch: int, clock: _Clock):
    """The learning-rate schedule.

    The cosine runs over the configured epochs or, when train.max_minutes caps
    the run, over whichever of the two ends first, so that a capped run still
    ends at min_lr. (A capped run depends on the machine's speed; a run with
    only an epoch count is reproducible.)
    """
    cfg = config.train
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=cfg.plateau_patience)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = max(cfg.epochs * steps_per_epoch, warmup + 1)
    floor = cfg.min_lr / cfg.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_fraction = (step - warmup) / (total - warmup)
        if cfg.max_minutes:
            progress_fraction = max(progress_fraction, clock.elapsed() / (60.0 * cfg.max_minutes))
        progress_fraction = min(progress_fraction, 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress_fraction))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
