"""Committee potential files: K energy models in one TorchScript file.

`forward` keeps the v1 contract and returns the committee's mean energy [B] eV and mean forces
[N, 3] eV/A, so every engine runs a committee file unchanged. The exported method

    energy_forces_spread(positions, atomic_numbers, batch, cell, pbc)
        -> (energy [B] eV, forces [N, 3] eV/A, force_spread [N] eV/A)

adds the per-atom force spread: the norm over x, y, z of the standard deviation over the members
(ddof 0), sqrt(sum_c var_k(F_kic)). The file still loads with `torch.jit.load` alone.

Metadata: that of the first member plus `committee` (`members`, per-member `seed`, `epoch`,
`best_val_force_mae`, `checkpoint`, `bootstrap`, and the spread threshold fitted on the training
frames: `spread_threshold_ev_per_a` = the `spread_percentile` (default 99) percentile over training
frames of the largest per-atom force spread of the frame, with `training_spread` statistics).
`test_metrics` of a committee file is the per-metric mean over its members' test metrics.
"""

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mlff.checkpoint import load_checkpoint, model_from_checkpoint
from mlff.export.load import dtype_from_name, molecule_batch, torchscript_without_deprecation_warning

COMMITTEE_FILE = "committee.json"
SPREAD_PERCENTILE = 99.0
# Training frames the spread threshold is fitted on (evenly spaced when there are more).
SPREAD_FRAMES = 500
SPREAD_BATCH = 50


class CommitteeModel(nn.Module):
    """K energy models; forward gives their mean, energy_forces_spread adds the force spread."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    @torch.jit.export
    def element_energies(self) -> torch.Tensor:
        """Mean over the members of their reference energy per atomic number, [119] float64 eV."""
        total = torch.zeros(119, dtype=torch.float64)
        for member in self.members:
            total = total + member.element_energies()
        return total / len(self.members)

    @torch.jit.export
    def energy_forces_spread(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean energy [B] eV, mean forces [N, 3] eV/A and the force spread [N] eV/A."""
        energies: list[torch.Tensor] = []
        forces: list[torch.Tensor] = []
        for member in self.members:
            energy, force = member(positions, atomic_numbers, batch, cell, pbc)
            energies.append(energy)
            forces.append(force)
        stacked = torch.stack(forces)
        mean_forces = stacked.mean(0)
        spread = ((stacked - mean_forces) ** 2).mean(0).sum(-1).sqrt()
        return torch.stack(energies).mean(0), mean_forces, spread

    def forward(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        energy, forces, _ = self.energy_forces_spread(positions, atomic_numbers, batch, cell, pbc)
        return energy, forces

    @torch.jit.unused
    def energy_forces_padded(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        num_structures: int,
        candidates: torch.Tensor,
        capacity: int,
        create_graph: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The members' mean energy [B] eV and forces [N, 3] eV/A through `EnergyModel.energy_forces_padded`
        (compiled MD of a committee file), and the largest pair count of the members (all the same)."""
        results = [
            member.energy_forces_padded(
                positions, atomic_numbers, batch, num_structures, candidates, capacity, create_graph
            )
            for member in self.members
        ]
        energy = torch.stack([result[0] for result in results]).mean(0)
        forces = torch.stack([result[1] for result in results]).mean(0)
        return energy, forces, torch.stack([result[2] for result in results]).amax()


def committee_checkpoints(path: str | os.PathLike) -> list[Path]:
    """The members' best.pt of a committee run folder (its committee.json names them)."""
    folder = Path(path)
    manifest = json.loads((folder / COMMITTEE_FILE).read_text())
    return [folder / member["output_dir"] / "best.pt" for member in manifest["members"]]


def is_committee_run(path: str | os.PathLike) -> bool:
    """Whether `path` is the folder of a committee training run."""
    return (Path(path) / COMMITTEE_FILE).is_file()


def export_committee(
    checkpoints: list[str | os.PathLike],
    output: str | os.PathLike,
    weights: str = "ema",
    dtype: str | torch.dtype = "float64",
    core_repulsion_ev_per_a3: float = 0.0,
    repulsion: str | None = None,
    spread_percentile: float = SPREAD_PERCENTILE,
    fit_threshold: bool = True,
) -> Path:
    """Write the committee of `checkpoints` (>= 2, same species and cutoff) as one potential file.

    Args:
        checkpoints: training checkpoints, one per member.
        output: the potential file to write.
        weights, dtype, core_repulsion_ev_per_a3, repulsion: as `mlff.export.deploy.export_checkpoint`
            (the core repulsion is added to every member).
        spread_percentile: the threshold's percentile of the training frames' largest force spread.
        fit_threshold: evaluate the committee on the first member's training frames (read again from the
            data file its checkpoint names) for the spread threshold; False (or no data file): none.
    """
    from mlff.export.deploy import (
        _core_metadata,
        _write_potential_file,
        add_core_repulsion,
        fit_repulsion_onsets,
        repulsion_kind,
    )
    from mlff.models import ModelConfig

    if len(checkpoints) < 2:
        raise ValueError(f"a committee needs at least 2 checkpoints, got {len(checkpoints)}")
    loaded = [load_checkpoint(path) for path in checkpoints]
    models = [model_from_checkpoint(checkpoint, weights) for checkpoint in loaded]
    first = models[0]
    for path, model in zip(checkpoints, models):
        if list(model.species) != list(first.species) or float(model.cutoff) != float(first.cutoff):
            raise ValueError(
                f"committee members must share species and cutoff: {path} has {list(model.species)}, "
                f"{float(model.cutoff)} A; {checkpoints[0]} has {list(first.species)}, {float(first.cutoff)} A"
            )
    config = loaded[0]["config"]
    data_config = config.get("data") or {}
    metadata: dict[str, Any] = {
        "training": {
            "epoch": loaded[0].get("epoch"),
            "weights": "ema" if weights == "ema" and loaded[0].get("ema_state") else "raw",
            "best_val_force_mae": float(np.mean([c.get("best_val_force_mae") for c in loaded])),
            "command": loaded[0].get("command"),
            "config": {key: value for key, value in config.items() if key != "model"},
        },
        "training_data": loaded[0].get("data_summary"),
        "test_metrics": _mean_metrics([c.get("test_metrics") or {} for c in loaded]),
        "reference": loaded[0].get("reference"),
    }
    kind = repulsion_kind(repulsion, core_repulsion_ev_per_a3)
    if kind is not None:
        # Fitted once: the members share species, cutoff and training data.
        fitted = fit_repulsion_onsets(data_config, first.species, first.cutoff)
        for model in models:
            metadata["core_repulsion"] = add_core_repulsion(
                model, data_config, core_repulsion_ev_per_a3, kind=kind, fitted=fitted
            )
    target = dtype_from_name(dtype)
    members = [copy.deepcopy(model).to(device="cpu", dtype=target).eval() for model in models]
    committee = CommitteeModel(members).eval()
    with torchscript_without_deprecation_warning():
        scripted = torch.jit.script(committee)
    spread = training_spread(scripted, data_config, target, spread_percentile) if fit_threshold else None
    metadata["committee"] = {
        "members": len(members),
        "member_runs": [
            {
                "checkpoint": str(path),
                "seed": checkpoint["config"]["train"].get("seed"),
                "bootstrap": bool(checkpoint["config"]["train"].get("committee_bootstrap", False)),
                "epoch": checkpoint.get("epoch"),
                "best_val_force_mae": checkpoint.get("best_val_force_mae"),
            }
            for path, checkpoint in zip(checkpoints, loaded)
        ],
        "method": "energy_forces_spread",
        "spread": "per-atom norm over x, y, z of the standard deviation over members (ddof 0), eV/A",
        **(spread or {"spread_threshold_ev_per_a": None}),
    }
    core = _core_metadata(members[0], target, ModelConfig(**config["model"]))
    core["model"]["parameters"] = sum(parameter.numel() for parameter in committee.parameters())
    return _write_potential_file(scripted, {**core, **metadata}, output)


def frame_spreads(module: Any, structures: list[tuple[np.ndarray, np.ndarray]], dtype: torch.dtype) -> np.ndarray:
    """Largest per-atom force spread [F] eV/A of structures [(atomic numbers [n], positions [n, 3] A)]."""
    result = []
    for start in range(0, len(structures), SPREAD_BATCH):
        chunk = structures[start : start + SPREAD_BATCH]
        counts = [len(numbers) for numbers, _ in chunk]
        _, _, spread = module.energy_forces_spread(*molecule_batch(chunk, dtype))
        spread = spread.detach().double().numpy()
        bounds = np.cumsum([0, *counts])
        result += [float(spread[bounds[b] : bounds[b + 1]].max()) for b in range(len(chunk))]
    return np.asarray(result, dtype=np.float64)


def training_spread(
    module: Any, data_config: dict[str, Any], dtype: torch.dtype, percentile: float = SPREAD_PERCENTILE
) -> dict[str, Any] | None:
    """The spread threshold and statistics over (up to SPREAD_FRAMES of) the run's training frames."""
    from mlff.data import read_frames
    from mlff.data.splits import select_frames, split_settings

    path = data_config.get("path")
    if not path or isinstance(path, list):
        return None
    frames = read_frames(path)
    train = np.unique(select_frames(frames, "train", split_settings(data_config)))
    if train.size > SPREAD_FRAMES:
        train = train[np.linspace(0, train.size - 1, SPREAD_FRAMES).round().astype(int)]
    structures = [frames.frame(int(index))[:2] for index in train]
    spreads = frame_spreads(module, structures, dtype)
    return {
        "spread_threshold_ev_per_a": float(np.percentile(spreads, percentile)),
        "spread_percentile": percentile,
        "training_spread": {
            "frames": int(spreads.size),
            "source": f"training frames of {path}",
            "median_ev_per_a": float(np.median(spreads)),
            "p90_ev_per_a": float(np.percentile(spreads, 90)),
            "max_ev_per_a": float(spreads.max()),
        },
    }


def _mean_metrics(per_member: list[dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(metrics) for metrics in per_member)) if per_member else set()
    return {key: float(np.mean([metrics[key] for metrics in per_member])) for key in sorted(keys)}
