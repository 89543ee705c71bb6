"""Data-parallel training over torch.distributed (gloo on CPU, NCCL on GPUs), launched by torchrun.

`torchrun --nproc-per-node N -m mlff.cli.main train CONFIG` (or `mlff train --distributed` under
any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT) runs one process per rank;
`mlff.training.trainer.train(..., distributed=True)` calls the functions here.

What each rank does, and why the run equals a single process with the same global batch:

- Batches: every rank draws the same epoch order (from (seed, epoch); no data needed) and takes
  frames rank, rank + N, ... of each global batch of `train.batch_size` frames. The sequence of
  global batches does not depend on N, so a run resumes on any number of ranks.
- Loss: the mean over the global batch, not a mean of per-rank means (ranks hold different
  numbers of frames and atoms). Each data term is a mean over a count (energy: labelled frames;
  forces, zero_force, denoising: force components); a rank's term is its local mean times its
  local count over the all-reduced global count, and the ranks' gradients are summed. Terms of
  the model alone (smoothness) count 1/N on each rank.
- Gradients: summed by one all-reduce of a flat float64 vector per step, which also carries which
  parameters have a gradient (AdamW skips one that has none, as in one process), the logged loss
  terms and each rank's wall and CPU time. Not torch's DistributedDataParallel wrapper: the
  model's forward itself differentiates (forces = -dE/dx with create_graph), which DDP's reducer
  does not support. Every rank then clips the same summed gradient and takes the same AdamW and
  EMA step, so parameters stay identical (the initial ones are broadcast from rank 0).
- Clock: the wall time is the ranks' mean, the CPU time their sum (the run's cost);
  `train.max_minutes` / `train.max_cpu_minutes` and the capped cosine schedule use these synced
  values, the same on every rank.
- Validation: each rank evaluates a slice of the validation frames; the errors are combined exactly
  (`trainer.combine_metrics`). Stopping (caps, early stopping) is decided on rank 0 and broadcast.
- Files: rank 0 alone writes config.yaml, metrics.jsonl, curve.png, checkpoints and results.json
  (atomically), and reads last.pt on --resume and broadcasts it: only rank 0 needs the run folder.
  Every rank reads the data files.
- Failure: a rank that dies breaks the collectives of the others (gloo: connection closed; the
  torchrun agent also ends the group), so the run stops; last.pt is the last completed epoch's.
- Denoising noise is drawn per rank (rank 0 keeps the single-process stream).
"""

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from mlff.data.batch import Batch
from mlff.training.losses import LOSSES, LossInputs, LossSettings
from mlff.training.trainer import TrainingState, _Clock, combine_metrics

T = TypeVar("T")
# Seconds a collective waits for the other ranks (a stuck or dead peer ends the run after it).
TIMEOUT_ENV = "MLFF_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _data_count(name: str) -> Callable[[Batch], int]:
    """How many values the loss term `name` averages over in a batch."""

    def labelled_frames(batch: Batch) -> int:
        return int(batch.has_energy.sum())

    def moving_components(batch: Batch) -> int:
        return 3 * int((~batch.equilibrium[batch.batch]).sum())

    def equilibrium_components(batch: Batch) -> int:
        return 3 * int(batch.equilibrium[batch.batch].sum())

    return {
        "energy": labelled_frames,
        "forces": moving_components,
        "zero_force": equilibrium_components,
        "denoising": equilibrium_components,
    }[name]


# Loss terms of the model alone (no batch): every rank computes the same value.
MODEL_TERMS = ("smoothness",)
DATA_TERMS = ("energy", "forces", "zero_force", "denoising")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group.

    Attributes:
        rank: 0..world_size-1. world_size: number of processes. device: this rank's device.
    """

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local(self, indices: np.ndarray) -> np.ndarray:
        """This rank's frames of a global batch: every world_size-th, from its rank."""
        return indices[self.rank :: self.world_size]


def launched() -> bool:
    """Whether a launcher (torchrun, srun + torchrun) has set this process's rank and rendezvous."""
    return all(name in os.environ for name in _LAUNCH_VARIABLES)


def setup(device: str) -> DistContext:
    """Join the process group the launcher describes; gloo for "cpu", NCCL for "cuda" (one GPU per local rank).

    Raises:
        ValueError: not started by a launcher, or CUDA asked for but NCCL/CUDA unavailable.
    """
    if not launched():
        raise ValueError(
            "--distributed: no launcher environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); start it with "
            "`torchrun --nproc-per-node N -m mlff.cli.main train CONFIG` (see docs/scale.md)"
        )
    kind = torch.device(device)
    if kind.type == "cuda":
        if not torch.cuda.is_available() or not dist.is_nccl_available():
            raise ValueError("train.device is cuda but CUDA or NCCL is unavailable; use train.device=cpu (gloo)")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        kind = torch.device("cuda", local_rank)
        torch.cuda.set_device(kind)
        backend = "nccl"
    elif kind.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"--distributed runs on cpu (gloo) or cuda (NCCL), not {device!r}")
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout)
    return DistContext(dist.get_rank(), dist.get_world_size(), kind)


def teardown() -> None:
    """Leave the process group (if joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(ctx: DistContext, value: T) -> T:
    """Rank 0's `value` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def on_main(ctx: DistContext, function: Callable[[], T]) -> T:
    """Run `function` on rank 0 and hand its result (or its exception, raised everywhere) to every rank."""
    outcome: tuple[Any, BaseException | None] = (None, None)
    if ctx.is_main:
        try:
            outcome = (function(), None)
        except Exception as error:
            outcome = (None, error)
    result, error = broadcast_object(ctx, outcome)
    if error is not None:
        raise error
    return result


def broadcast_module(ctx: DistContext, module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (in place)."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def rank_noise_seed(seed: int, epoch: int, rank: int) -> int:
    """Epoch `epoch`'s denoising noise seed on `rank` (rank 0: the single-process seed)."""
    from mlff.training.trainer import noise_seed

    if rank == 0:
        return noise_seed(seed, epoch)
    return int(np.random.SeedSequence([seed, epoch, 1, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


class SyncedClock(_Clock):
    """The run's clock agreed by all ranks: wall time the ranks' mean, CPU time their sum, seconds.

    `local_deltas()` gives this rank's time since start; `agree(summed)` sets the clock from their
    all-reduced sum. Between agreements it reads the last agreed values (the same on every rank).
    """

    def __init__(self, world_size: int) -> None:
        super().__init__()
        self.world_size = world_size
        self.wall = 0.0
        self.cpu = 0.0

    def start(self) -> None:
        super().start()
        self.wall, self.cpu = self.before, self.cpu_before

    def local_deltas(self) -> list[float]:
        return [super().elapsed() - self.before, super().cpu_elapsed() - self.cpu_before]

    def agree(self, summed: torch.Tensor) -> None:
        self.wall = self.before + float(summed[0]) / self.world_size
        self.cpu = self.cpu_before + float(summed[1])

    def elapsed(self) -> float:
        return self.wall

    def cpu_elapsed(self) -> float:
        return self.cpu


def sync_clock(ctx: DistContext, clock: SyncedClock) -> None:
    """Agree on the clock now (one small all-reduce)."""
    values = torch.tensor(clock.local_deltas(), dtype=torch.float64, device=ctx.device)
    dist.all_reduce(values)
    clock.agree(values.cpu())


def train_step(
    state: TrainingState, data: Any, indices: np.ndarray, settings: LossSettings, generator: torch.Generator
) -> dict[str, float]:
    """One optimizer step on the global batch `indices` (this rank computes its slice of it).

    The data-parallel twin of `trainer.train_step`: the same loss (the global batch's means), clip,
    AdamW, EMA and schedule. Returns the global batch's loss terms and "loss".
    """
    ctx: DistContext = state.dist
    cfg = state.config.train
    model = state.model
    weights = {name: weight for name, weight in cfg.loss_weights.items() if weight != 0.0}
    unknown = sorted(set(weights) - set(DATA_TERMS) - set(MODEL_TERMS))
    if unknown:
        raise ValueError(f"loss term(s) {unknown} have no per-frame count for distributed training")
    local = ctx.local(indices)
    means: dict[str, torch.Tensor] = {}
    counts = torch.zeros(len(weights), dtype=torch.float64)
    if local.size:
        batch = data.batch(local)
        energy, forces = model(batch.positions, batch.atomic_numbers, batch.batch, batch.cell, batch.pbc)
        inputs = LossInputs(model, batch, energy, forces, settings, generator)
        for k, name in enumerate(weights):
            if name in DATA_TERMS:
                means[name] = LOSSES[name](inputs)
                counts[k] = _data_count(name)(batch)
    for name in weights:
        if name in MODEL_TERMS:
            means[name] = LOSSES[name](LossInputs(model, None, None, None, settings, generator))
    global_counts = counts.clone().to(ctx.device)
    dist.all_reduce(global_counts)
    global_counts = global_counts.cpu()
    total = torch.zeros((), dtype=torch.float64, device=ctx.device)
    logged = []
    for k, (name, weight) in enumerate(weights.items()):
        if name in MODEL_TERMS:
            share = means[name].to(torch.float64) / ctx.world_size
        elif counts[k] > 0:
            share = means[name].to(torch.float64) * float(counts[k] / global_counts[k])
        else:
            share = torch.zeros((), dtype=torch.float64, device=ctx.device)
        total = total + weight * share
        logged.append(share.detach().reshape(1))
    parameters = list(model.parameters())
    state.optimizer.zero_grad(set_to_none=True)
    has_graph = total.requires_grad
    if has_graph:
        total.backward()
    flat = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64) for p in parameters]
    has_grad = torch.tensor([float(p.grad is not None) for p in parameters], dtype=torch.float64)
    extra = torch.tensor([float(has_graph), *state.clock.local_deltas()], dtype=torch.float64)
    vector = torch.cat([*flat, has_grad.to(ctx.device), extra.to(ctx.device), *logged, total.detach().reshape(1)])
    dist.all_reduce(vector)
    offset = 0
    for parameter in parameters:
        size = parameter.numel()
        parameter.grad = vector[offset : offset + size].view_as(parameter).to(parameter.dtype)
        offset += size
    flags = vector[offset : offset + len(parameters)].cpu()
    offset += len(parameters)
    for parameter, flag in zip(parameters, flags):
        if flag == 0:
            parameter.grad = None
    any_graph, wall, cpu = vector[offset : offset + 3].cpu().tolist()
    offset += 3
    state.clock.agree(torch.tensor([wall, cpu]))
    values = vector[offset:].cpu().tolist()
    # As in one process: a global batch whose loss is a constant everywhere takes no step.
    if any_graph > 0:
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        state.optimizer.step()
    if state.ema is not None:
        state.ema.update_parameters(model)
    if cfg.schedule in ("cosine", "constant"):
        state.scheduler.step()
    parts = dict(zip(weights, values[:-1]))
    parts["loss"] = values[-1]
    return parts


def evaluate_files(
    model: Any, data: Any, files: dict[str, Any], part: str, batch_size: int, ctx: DistContext
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """`trainer.evaluate_files` with each rank evaluating a slice of the frames; the same numbers on every rank."""
    from mlff.evaluate import evaluate

    local: dict[str, tuple[dict[str, float], int]] = {}
    for name, split in files.items():
        indices = ctx.local(getattr(split, part))
        if indices.size:
            components = 3 * int(data.n_atoms[torch.as_tensor(indices, device=data.device)].sum())
            local[name] = (evaluate(model, data, indices, batch_size), components)
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, local)
    per_file: dict[str, dict[str, float]] = {}
    components: dict[str, int] = {}
    for name in files:
        pieces = {rank: pieces[name] for rank, pieces in enumerate(gathered) if name in pieces}
        if not pieces:
            raise ValueError(f"no {part} frames in {name}")
        per_file[name] = combine_metrics({r: m for r, (m, _) in pieces.items()}, {r: c for r, (_, c) in pieces.items()})
        components[name] = sum(c for _, c in pieces.values())
    if len(files) == 1:
        return next(iter(per_file.values())), {}
    return combine_metrics(per_file, components), per_file
