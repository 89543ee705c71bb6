"""The training loop: AdamW, schedule, EMA, clipping, early stopping, checkpoints, resume.

Every epoch ends with a validation pass on the EMA weights, one JSON line in
`metrics.jsonl` (with wall and CPU time and optimizer steps so far), the
learning curve `curve.png` and an atomically written `last.pt`; the best
validation force MAE also writes `best.pt` (every epoch does with `train.keep:
last`). `train(config, resume=True)` continues from `last.pt`. Batch order and
the denoising noise (a torch.Generator) are drawn from (seed, epoch), and
checkpoints are written at epoch ends, so a resumed run follows the same
sequence as an uninterrupted one with no RNG state saved.

The model starts fresh (reference energies fitted on the training frames), from
a pretrained checkpoint (`init_from`: `mlff.training.finetune`), or, with
`resume`, from the run's own last.pt (never from init_from).

`train(config, distributed=True)`, in each process of a torchrun launch, trains data-parallel
(`mlff.training.distributed`); the single-process path is unchanged.
"""

import contextlib
import dataclasses
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from mlff._version import __version__
from mlff.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    atomic_torch_save,
    load_checkpoint,
    load_init,
    resolve_init,
)
from mlff.data import Frames, Split
from mlff.data.batch import Batch, FrameTensors
from mlff.data.packed import PackedFrames, streaming_reference_fit
from mlff.data.reference import reference_statistics
from mlff.evaluate import evaluate
from mlff.models import DTYPES, EnergyModel, ModelConfig, build_model
from mlff.training.compiled import CompiledEnergyForces, check_compilable
from mlff.training.config import Config, TrainConfig
from mlff.training.curves import write_learning_curve
from mlff.training.dataset import TrainingData, epoch_order, frame_tensors, load_training_data
from mlff.training.empp import build_empp_head, evaluate_empp
from mlff.training.encoding_range import AUTO, has_auto_options, resolve_encoding_options
from mlff.training.finetune import pretrained_model
from mlff.training.losses import LossSettings, check_loss_weights, label_free, total_loss
from mlff.training.references import fit_element_energies, force_rms
from mlff.utils import atomic_write_text, write_json

# Seconds between learning-curve renders during a run (a first one after the first epoch).
CURVE_INTERVAL_S = 300.0


@dataclass
class TrainResult:
    """What a finished run left behind."""

    output_dir: Path
    epochs_run: int
    best_val_force_mae: float
    test_metrics: dict[str, float]
    stopped_because: str


def train(
    config: Config, resume: bool = False, progress: bool = True, command: str | None = None, distributed: bool = False
) -> TrainResult:
    """Train an energy model as `config` says; return the test metrics of the best EMA weights.

    Args:
        config: the whole run.
        resume: continue from output_dir/last.pt.
        progress: show a progress bar (rank 0 only when distributed).
        command: the command line that started the run, recorded in checkpoints and model cards.
        distributed: this process is one rank of a torchrun launch (`mlff.training.distributed`).
    """
    if not config.data.path:
        raise ValueError("data.path names no dataset file (set it in the config or with data.path=FILE)")
    if config.train.committee > 1:
        if distributed:
            raise ValueError(
                "train.committee > 1 is not supported with --distributed (its members train one after another "
                "in one process): train each member as its own distributed run with its own train.seed"
            )
        from mlff.training.committee import train_committee

        return train_committee(config, resume=resume, progress=progress, command=command)
    if not distributed:
        return _train(config, resume, progress, command, None)
    from mlff.training import distributed as parallel

    ctx = parallel.setup(config.train.device)
    try:
        return _train(config, resume, progress and ctx.is_main, command, ctx)
    finally:
        parallel.teardown()


def _train(config: Config, resume: bool, progress: bool, command: str | None, ctx: Any) -> TrainResult:
    """The run, in one process (ctx None) or as one rank of a data-parallel group (ctx a DistContext)."""
    main = ctx is None or ctx.is_main
    if config.init_from is not None and not resume:
        resolve_init(config.init_from)  # fails before any data is read
    check_loss_weights(config.train.loss_weights)
    if ctx is not None and config.train.loss_weights.get("empp", 0.0):
        raise ValueError("train.loss_weights.empp is not supported with --distributed: train EMPP in one process")
    output_dir = Path(config.output_dir)
    last_path, best_path = output_dir / "last.pt", output_dir / "best.pt"

    def open_run_directory() -> dict[str, Any] | None:
        if resume and not last_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {last_path}")
        if not resume and last_path.is_file():
            raise ValueError(
                f"{output_dir} already holds a run: pass --resume to continue it or choose another output_dir"
            )
        output_dir.mkdir(parents=True, exist_ok=True)
        return load_checkpoint(last_path) if resume else None

    # Only rank 0 touches the run directory; the others get its checkpoint (or its error).
    last = open_run_directory() if ctx is None else _parallel().on_main(ctx, open_run_directory)
    device = torch.device(config.train.device) if ctx is None else ctx.device
    # A run whose losses need no labels (EMPP pretraining) reads label-free frames; any other refuses them.
    unlabelled = label_free(config.train.loss_weights)
    training_data = load_training_data(config.data, require_labels=not unlabelled)
    frames, split = training_data.frames, training_data.split
    if config.train.committee_bootstrap:
        split = dataclasses.replace(split, train=bootstrap_frames(split.train, config.train.seed))
    if config.train.compile:
        check_compilable(np.asarray(getattr(frames, "pbc", False)).any())
    data = frame_tensors(frames, DTYPES[config.model.dtype], device)
    _seed_everything(config.train.seed)
    config = dataclasses.replace(config, model=_resolved_model_config(config, frames, split, last))
    if main:
        atomic_write_text(output_dir / "config.yaml", _yaml(config.to_dict()))
    model = initial_model(config, frames, split, last).to(device)
    if ctx is not None:
        _parallel().broadcast_module(ctx, model)
    state = TrainingState(config, model, len(split.train), command, ctx)
    state.files = training_data.files
    data_summary = {**training_data.summary(config.data), "init_from": config.init_from}
    if last is not None:
        state.restore(last)

    history: list[dict[str, Any]] = state.history
    stopped_because = "epochs"
    state.clock.start()
    bar = tqdm(total=config.train.epochs, desc="train", unit="epoch", disable=not progress, initial=state.epoch)
    # The first curve after CURVE_INTERVAL_S: a short run (a test, a learn fine-tune) draws it once, at its end.
    curve_written = time.monotonic()
    epoch = state.epoch + 1
    # A resumed run that had already stopped (its time cap spent, early stopping) only finishes.
    finished = _stop_reason(state, state.epoch) if last is not None else None
    if ctx is not None:
        finished = _parallel().broadcast_object(ctx, finished)
    if finished:
        stopped_because = finished
    with open(output_dir / "metrics.jsonl", "a", buffering=1) if main else contextlib.nullcontext() as log:
        while not finished and epoch <= config.train.epochs:
            record = _run_epoch(state, data, split, epoch)
            if ctx is not None:
                _parallel().sync_clock(ctx, state.clock)
            diverged = _divergence(state, record)
            if diverged is not None:
                # The rejected epoch stays in the log and the curve, marked; the state returns
                # to the best epoch's checkpoint with the learning rate halved. The best, not the
                # last: an epoch can be damaged yet under the factor (water: 157 -> 372 meV/A, then
                # 577), and rolling back onto it kept the run there for five rollbacks.
                record["rejected"] = diverged
                history.append(record)
                if main:
                    log.write(json.dumps(record) + "\n")
                if not best_path.is_file():
                    raise RuntimeError(
                        f"training diverged in epoch {epoch} ({diverged}) before any epoch was kept: lower train.lr"
                    )
                if state.rollbacks >= config.train.max_rollbacks:
                    stopped_because = f"diverged: {diverged} after {state.rollbacks} rollbacks"
                    break
                state.roll_back(load_checkpoint(best_path))
                epoch = state.epoch + 1
                continue
            history.append(record)
            if main:
                log.write(json.dumps(record) + "\n")
            # Rendering a PNG costs ~0.25 CPU-s: at most once a CURVE_INTERVAL_S, and always at the end.
            if main and time.monotonic() - curve_written > CURVE_INTERVAL_S:
                write_learning_curve(history, output_dir / "curve.png")
                curve_written = time.monotonic()
            improved = record[state.selection_key] < state.best_val
            if improved:
                state.best_val = record[state.selection_key]
                state.best_epoch = epoch
            state.epoch = epoch
            if main:
                checkpoint = state.checkpoint(data_summary)
                # best.pt first: a process killed between the two saves must not leave a last.pt
                # whose run has no best.pt to finish from (the resumed run replays the epoch).
                if improved or config.train.keep == "last":
                    atomic_torch_save(checkpoint, best_path)
                atomic_torch_save(checkpoint, last_path)
            bar.update(1)
            bar.set_postfix(
                loss=f"{record['loss']:.4g}",
                val_F=f"{record['val_force_mae_mev_per_a']:.2f}",
                val_E=f"{record['val_energy_mae_mev']:.2f}",
                lr=f"{record['lr']:.2e}",
            )
            stop = _stop_reason(state, epoch)
            if ctx is not None:
                stop = _parallel().broadcast_object(ctx, stop)
            if stop:
                stopped_because = stop
                break
            epoch += 1
    bar.close()
    if main and history:
        write_learning_curve(history, output_dir / "curve.png")
    if ctx is None:
        test_metrics = _finish(output_dir, training_data, data, stopped_because, not unlabelled)
    else:
        test_metrics = _parallel().on_main(
            ctx, lambda: _finish(output_dir, training_data, data, stopped_because, not unlabelled)
        )
    return TrainResult(output_dir, state.epoch, state.best_val, test_metrics, stopped_because)


def _divergence(state: "TrainingState", record: dict[str, Any]) -> str | None:
    """Why the epoch of `record` counts as diverged (`train.divergence_factor`), or None."""
    factor = state.config.train.divergence_factor
    if not factor:
        return None
    if not math.isfinite(record["loss"]):
        return f"training loss {record['loss']}"
    value = record[state.selection_key]
    if not math.isfinite(value):
        return f"{state.selection_key} {value}"
    if value > factor * state.best_val:
        return f"{state.selection_key} {value:.4g} > {factor:g} x best {state.best_val:.4g}"
    return None


def _stop_reason(state: "TrainingState", epoch: int) -> str | None:
    """Why the run stops after `epoch` (early stopping, a time cap), or None."""
    patience = state.config.train.early_stopping_patience
    if patience and epoch - state.best_epoch >= patience:
        return f"early stopping: no better validation force MAE for {patience} epochs"
    return state.clock.cap_reached(state.config.train)


def _parallel():
    """mlff.training.distributed, imported when a run is distributed (it imports this module)."""
    from mlff.training import distributed

    return distributed


def _resolved_model_config(config: Config, frames: Frames, split: Split, last: dict[str, Any] | None) -> ModelConfig:
    """The run's model config with every "auto" encoding option made a number.

    A resumed run takes the numbers its own checkpoint recorded, a fine-tuning run those of its
    pretrained checkpoint (the weights were trained for them); a fresh run fits them on its
    training frames (`mlff.training.encoding_range`).
    """
    model = config.model
    if not has_auto_options(model):
        return model
    source = last if last is not None else (load_init(config.init_from) if config.init_from else None)
    if source is None:
        return resolve_encoding_options(model, frames, np.unique(split.train))
    recorded = source["config"]["model"]["encoding_options"]
    options = {
        key: recorded.get(key, value) if value == AUTO else value for key, value in model.encoding_options.items()
    }
    return dataclasses.replace(model, encoding_options=options)


def initial_model(config: Config, frames: Frames, split: Split, last: dict[str, Any] | None = None) -> EnergyModel:
    """The model a run starts from, before any restored state.

    Args:
        config: the run.
        frames, split: its data.
        last: the run's own last checkpoint when resuming: the model is then built with the
            species, reference energies and energy scale recorded there (its weights come with
            the restored state), whatever init_from says.
    """
    if last is not None:
        return build_model(config.model, last["species"], last["element_energies_ev"], last["energy_scale_ev"])
    # Statistics over distinct frames: data.equilibrium_repeat and data.extra_repeat repeat frames for sampling only.
    train_frames = np.unique(split.train)
    if config.init_from is not None:
        if isinstance(frames, PackedFrames):
            raise ValueError("init_from: fine-tuning on a packed corpus is not supported; unpack it or train afresh")
        return pretrained_model(config, frames, train_frames)
    species = frames.species()
    if isinstance(frames, PackedFrames):
        # One pass over the corpus's chunks: the same numbers as the in-memory fit below.
        energies, scale = streaming_reference_fit(frames, train_frames, species)
        return build_model(config.model, species, energies, scale)
    return build_model(
        config.model, species, fit_element_energies(frames, train_frames, species), force_rms(frames, train_frames)
    )


class TrainingState:
    """Model, EMA, optimiser and schedule: everything a checkpoint saves and restores."""

    def __init__(
        self, config: Config, model: EnergyModel, num_train: int, command: str | None, dist: Any = None
    ) -> None:
        self.config = config
        self.dist = dist
        self.command = command
        self.model = model
        cfg = config.train
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay else None
        # The EMPP head (training-only, beside the model) exists only when its loss is weighted: with
        # weight 0 the model, the parameters and the optimiser are exactly those of a run without it.
        self.empp = build_empp_head(config.model.backbone, model, cfg.loss_weights.get("empp", 0.0), cfg.empp)
        self.empp_ema = (
            AveragedModel(self.empp, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
            if self.empp is not None and cfg.ema_decay
            else None
        )
        self.compiled = CompiledEnergyForces(model, cfg.compile_mode) if cfg.compile else None
        self.label_free = label_free(cfg.loss_weights)
        # best.pt follows the validation force MAE, or the EMPP loss in a label-free run.
        self.selection_key = "val_empp_loss" if self.label_free else "val_force_mae_mev_per_a"
        parameters = list(model.parameters()) + (list(self.empp.parameters()) if self.empp is not None else [])
        self.optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = math.ceil(num_train / cfg.batch_size)
        self.clock = _Clock() if dist is None else _parallel().SyncedClock(dist.world_size)
        self.scheduler = _scheduler(self.optimizer, config, self.steps_per_epoch, self.clock)
        self.epoch = 0
        self.best_val = math.inf
        self.best_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.files: dict[str, Split] = {}
        self.rollbacks = 0
        # The product of every rollback's factor so far: the checkpoint saved with it says how far
        # its own learning rates are already lowered, so rollbacks compound.
        self.lr_scale = 1.0

    @property
    def eval_model(self) -> EnergyModel:
        return self.ema.module if self.ema is not None else self.model

    @property
    def eval_empp(self) -> Any:
        """The EMPP head that goes with `eval_model` (EMA weights where the run keeps them), or None."""
        return self.empp_ema.module if self.empp_ema is not None else self.empp

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimiser steps: the model's, and the EMPP head's when there is one."""
        return list(self.model.parameters()) + (list(self.empp.parameters()) if self.empp is not None else [])

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
            "cpu_seconds": self.clock.cpu_elapsed(),
            "best_val_force_mae": self.best_val,
            "best_epoch": self.best_epoch,
            "rollbacks": self.rollbacks,
            "lr_scale": self.lr_scale,
            "history": list(self.history),
            "data_summary": data_summary,
            "test_metrics": None,
            "reference": None,
            **(
                {
                    "empp_state": self.empp.state_dict(),
                    "empp_ema_state": self.empp_ema.module.state_dict() if self.empp_ema is not None else None,
                }
                if self.empp is not None
                else {}
            ),
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from `checkpoint` (a resume): weights, optimiser, schedule, clocks and history."""
        self._load_training_state(checkpoint)
        self.clock.before = float(checkpoint.get("elapsed_seconds", 0.0))
        # Checkpoints written before the CPU clock existed count their wall time as CPU time
        # (one thread per run: an upper bound that keeps a resumed cap conservative).
        self.clock.cpu_before = float(checkpoint.get("cpu_seconds", self.clock.before))
        self.history = list(checkpoint.get("history", []))
        self.rollbacks = int(checkpoint.get("rollbacks", 0))
        self.lr_scale = float(checkpoint.get("lr_scale", 1.0))

    def roll_back(self, checkpoint: dict[str, Any], lr_factor: float = 0.5) -> None:
        """Undo a diverged epoch: the weights, optimiser and schedule of `checkpoint` (the best
        epoch's), every learning rate of the schedule at `lr_factor` times the rate of the run so
        far (two rollbacks onto one checkpoint: a quarter of its rates); clocks and history go on."""
        self._load_training_state(checkpoint)
        self.lr_scale *= lr_factor
        factor = self.lr_scale / float(checkpoint.get("lr_scale", 1.0))
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
        if hasattr(self.scheduler, "base_lrs"):
            self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        self.rollbacks += 1

    def _load_training_state(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model_state"])
        if self.ema is not None and checkpoint.get("ema_state") is not None:
            self.ema.module.load_state_dict(checkpoint["ema_state"])
            self.ema.n_averaged.fill_(checkpoint.get("ema_updates", 1))
        if self.empp is not None and checkpoint.get("empp_state") is not None:
            self.empp.load_state_dict(checkpoint["empp_state"])
            if self.empp_ema is not None and checkpoint.get("empp_ema_state") is not None:
                self.empp_ema.module.load_state_dict(checkpoint["empp_ema_state"])
                self.empp_ema.n_averaged.fill_(checkpoint.get("ema_updates", 1))
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.scheduler is not None and checkpoint.get("scheduler_state") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler_state"])
        self.epoch = int(checkpoint["epoch"])
        self.best_val = float(checkpoint["best_val_force_mae"])
        self.best_epoch = int(checkpoint.get("best_epoch", self.epoch))


def evaluate_files(
    model: Any, data: FrameTensors, files: dict[str, Split], part: str, batch_size: int
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Errors on the `part` ("val" or "test") frames: overall, and per file when there are several.

    With one file the overall errors are `evaluate` on its frames and the per-file dict is empty;
    with several, each file is evaluated once and the overall errors are combined exactly from them.
    """
    if len(files) == 1:
        (split,) = files.values()
        return evaluate(model, data, getattr(split, part), batch_size), {}
    per_file = {name: evaluate(model, data, getattr(split, part), batch_size) for name, split in files.items()}
    components = {
        name: 3 * int(data.n_atoms[torch.as_tensor(getattr(split, part), device=data.device)].sum())
        for name, split in files.items()
    }
    return combine_metrics(per_file, components), per_file


def combine_metrics(per_file: dict[str, dict[str, float]], force_components: dict[str, int]) -> dict[str, float]:
    """The errors of the union of the files' frames from each file's `evaluate` result.

    MAEs are means weighted by the count they average over (force components, or frames with an
    energy label); RMSEs combine as the root of the weighted mean square.
    """
    frames = sum(m["frames"] for m in per_file.values())
    labelled = {name: m["frames_with_energy"] for name, m in per_file.items()}
    combined: dict[str, float] = {"frames": frames, "frames_with_energy": sum(labelled.values())}
    for key, weights in (
        ("energy_mae_mev", labelled),
        ("energy_mae_mev_per_atom", labelled),
        ("force_mae_mev_per_a", force_components),
    ):
        total = sum(weights.values())
        combined[key] = sum(per_file[n][key] * w for n, w in weights.items() if w) / total if total else math.nan
    for key, weights in (("energy_rmse_mev", labelled), ("force_rmse_mev_per_a", force_components)):
        total = sum(weights.values())
        squares = sum(per_file[n][key] ** 2 * w for n, w in weights.items() if w)
        combined[key] = math.sqrt(squares / total) if total else math.nan
    return {key: combined[key] for key in next(iter(per_file.values()))}


def train_step(
    state: TrainingState,
    batch: Batch,
    settings: LossSettings,
    generator: torch.Generator,
    mark: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """One optimizer step on `batch`: model (energy and forces), loss, backward, clip, AdamW, EMA, schedule.

    `mark(phase)`, when given, is called as each phase ends ("model", "loss", "backward",
    "optimizer"), for `mlff bench train`'s breakdown. Returns the loss terms and "loss".
    """
    cfg = state.config.train
    model = state.model
    if state.compiled is not None:
        energy, forces = state.compiled(batch.positions, batch.atomic_numbers, batch.batch, batch.cell.size(0))
    else:
        energy, forces = model(batch.positions, batch.atomic_numbers, batch.batch, batch.cell, batch.pbc)
    if mark is not None:
        mark("model")
    loss, parts = total_loss(cfg.loss_weights, model, batch, energy, forces, settings, generator, state.empp)
    state.optimizer.zero_grad(set_to_none=True)
    if mark is not None:
        mark("loss")
    # A batch can give every weighted term nothing to act on (e.g. only equilibrium frames
    # and only a force weight): its loss is a constant and the step is skipped.
    if loss.requires_grad:
        loss.backward()
        if mark is not None:
            mark("backward")
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(state.trained_parameters(), cfg.grad_clip)
        state.optimizer.step()
    elif mark is not None:
        mark("backward")
    if state.ema is not None:
        state.ema.update_parameters(model)
    if state.empp_ema is not None:
        state.empp_ema.update_parameters(state.empp)
    if cfg.schedule in ("cosine", "constant"):
        state.scheduler.step()
    if mark is not None:
        mark("optimizer")
    parts["loss"] = float(loss.detach())
    return parts


def _run_epoch(state: TrainingState, data: FrameTensors, split: Split, epoch: int) -> dict[str, Any]:
    cfg = state.config.train
    model = state.model
    model.train()
    if state.empp is not None:
        state.empp.train()
    ctx = state.dist
    order = epoch_order(data, split.train, cfg.seed, epoch)
    seed = noise_seed(cfg.seed, epoch) if ctx is None else _parallel().rank_noise_seed(cfg.seed, epoch, ctx.rank)
    generator = torch.Generator(device=data.device).manual_seed(seed)
    settings = LossSettings(cfg.denoising_sigma, cfg.denoising_temperature_k)
    sums: dict[str, float] = {}
    steps = 0
    started = time.monotonic()
    for start in range(0, len(order), cfg.batch_size):
        indices = order[start : start + cfg.batch_size]
        if ctx is None:
            parts = train_step(state, data.batch(indices), settings, generator)
        else:
            parts = _parallel().train_step(state, data, indices, settings, generator)
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value
        steps += 1
    train_seconds = time.monotonic() - started
    empp_val: dict[str, float] = {}
    if state.empp is not None:
        empp_val = evaluate_empp(state.eval_empp, state.eval_model, data, split.val, cfg.eval_batch_size, cfg.seed)
    if state.label_free:
        # No labels to compare with: the validation figures are EMPP's (val_empp_*).
        val, val_files = {"force_mae_mev_per_a": math.nan, "energy_mae_mev": math.nan}, {}
    elif ctx is None:
        val, val_files = evaluate_files(state.eval_model.eval(), data, state.files, "val", cfg.eval_batch_size)
    else:
        model = state.eval_model.eval()
        val, val_files = _parallel().evaluate_files(model, data, state.files, "val", cfg.eval_batch_size, ctx)
    if cfg.schedule == "plateau":
        state.scheduler.step(empp_val["empp_loss"] if state.label_free else val["force_mae_mev_per_a"])
    record: dict[str, Any] = {
        "epoch": epoch,
        "lr": state.optimizer.param_groups[0]["lr"],
        "seconds": train_seconds,
        "steps": epoch * state.steps_per_epoch,
        "wall_seconds_total": state.clock.elapsed(),
        "cpu_seconds_total": state.clock.cpu_elapsed(),
    }
    record.update({key: value / steps for key, value in sums.items()})
    record.update({f"val_{key}": value for key, value in val.items() if key != "frames"})
    record.update({f"val_{key}": value for key, value in empp_val.items()})
    for name, metrics in val_files.items():
        record.update({f"val_{name}/{key}": value for key, value in metrics.items() if key != "frames"})
    return record


def _finish(
    output_dir: Path, training_data: TrainingData, data: FrameTensors, stopped_because: str, labelled: bool = True
) -> dict[str, float]:
    """Evaluate the best EMA weights on the test split; store metrics and reference data in the checkpoints.

    A run with no test frames (data.n_test = 0, e.g. pretraining on every frame), or a label-free run
    (`labelled` False: nothing to compare with), records empty test metrics.
    """
    from mlff.checkpoint import model_from_checkpoint

    best_path = output_dir / "best.pt"
    best = load_checkpoint(best_path)
    split = training_data.split
    test: dict[str, float] = {}
    test_files: dict[str, dict[str, float]] = {}
    if split.test.size and labelled:
        model = model_from_checkpoint(best).to(data.device).eval()
        batch_size = best["config"]["train"]["eval_batch_size"]
        test, test_files = evaluate_files(model, data, training_data.files, "test", batch_size)
    # Reference statistics (start frames, bonds, h(r)) describe one molecule's dataset: a run over
    # several files has none, and its export takes them from --reference-data.
    one_file = len(training_data.files) == 1 and not isinstance(training_data.base_frames, PackedFrames)
    reference = reference_statistics(training_data.base_frames, training_data.base_split) if one_file else None
    for path in (best_path, output_dir / "last.pt"):
        checkpoint = load_checkpoint(path)
        checkpoint["test_metrics"] = test
        checkpoint["test_metrics_per_file"] = test_files
        checkpoint["reference"] = reference
        atomic_torch_save(checkpoint, path)
    # kept_epoch: the epoch best.pt holds (best_epoch's, or the last one with train.keep: last).
    summary = {"best_epoch": best["best_epoch"], "kept_epoch": best["epoch"], "stopped_because": stopped_because}
    summary["test"] = test
    if test_files:
        summary["test_per_file"] = test_files
    write_json(output_dir / "results.json", summary)
    return test


def bootstrap_frames(train: np.ndarray, seed: int) -> np.ndarray:
    """A bootstrap resample of the training frame indices: as many, drawn with replacement, by `seed`."""
    rng = np.random.default_rng([seed, 2])
    return np.sort(rng.choice(train, size=train.size, replace=True))


def noise_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s denoising noise generator (independent of the batch-order stream)."""
    return int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1, dtype=np.uint64)[0] >> 1)


class _Clock:
    """Training wall and CPU time in seconds, each summed over the processes of a resumed run.

    CPU time is `time.process_time()`: user + system time of this process summed over its threads.
    """

    def __init__(self) -> None:
        self.before = 0.0
        self.cpu_before = 0.0
        self.started: float | None = None
        self.cpu_started = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        self.cpu_started = time.process_time()

    def elapsed(self) -> float:
        return self.before + (time.monotonic() - self.started if self.started is not None else 0.0)

    def cpu_elapsed(self) -> float:
        return self.cpu_before + (time.process_time() - self.cpu_started if self.started is not None else 0.0)

    def fraction(self, cfg: TrainConfig) -> float:
        """How much of the tighter of the wall and CPU caps is spent (0 when neither is set)."""
        parts = [0.0]
        if cfg.max_minutes:
            parts.append(self.elapsed() / (60.0 * cfg.max_minutes))
        if cfg.max_cpu_minutes:
            parts.append(self.cpu_elapsed() / (60.0 * cfg.max_cpu_minutes))
        return max(parts)

    def cap_reached(self, cfg: TrainConfig) -> str | None:
        """Why the run must stop now, or None."""
        if cfg.max_minutes and self.elapsed() > 60.0 * cfg.max_minutes:
            return f"wall-clock cap of {cfg.max_minutes:g} minutes"
        if cfg.max_cpu_minutes and self.cpu_elapsed() > 60.0 * cfg.max_cpu_minutes:
            return f"CPU-time cap of {cfg.max_cpu_minutes:g} minutes"
        return None


def _scheduler(optimizer: torch.optim.Optimizer, config: Config, steps_per_epoch: int, clock: _Clock):
    """The learning-rate schedule.

    The cosine runs over the configured epochs or, when train.max_minutes or
    train.max_cpu_minutes caps the run, over whichever ends first, so that a
    capped run still ends at min_lr. (A capped run depends on the machine's speed; a run with
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
        progress_fraction = max(progress_fraction, clock.fraction(cfg))
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
