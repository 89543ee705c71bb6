"""Committee training: K members in one run (`train.committee: K`), for the force spread.

Member k is an ordinary single-model run (`mlff.training.trainer.train`) of the same config with
seed `train.seed + k` and output_dir `OUTPUT_DIR/member_k` (its best.pt, last.pt, metrics.jsonl,
results.json as ever); with `train.committee_bootstrap` it trains on a bootstrap resample of the
training frames drawn by its seed. Members train one after another. `OUTPUT_DIR/committee.json`
(written first, completed at the end) names the members; `mlff export OUTPUT_DIR -o F.pt` writes
them as one committee potential file (`mlff.export.committee`).

Resume (`--resume`): a member with a results.json is finished and skipped, one with a last.pt
continues from it, and one with neither starts fresh.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from mlff.checkpoint import load_checkpoint
from mlff.export.committee import COMMITTEE_FILE
from mlff.training.config import Config
from mlff.utils import write_json


def member_config(config: Config, k: int) -> Config:
    """The single-model config of member k: its seed and output_dir."""
    train = dataclasses.replace(config.train, seed=config.train.seed + k, committee=1)
    return dataclasses.replace(config, train=train, output_dir=str(Path(config.output_dir) / f"member_{k}"))


def train_committee(config: Config, resume: bool = False, progress: bool = True, command: str | None = None) -> Any:
    """Train the K members of `config` (train.committee = K > 1); a TrainResult for the whole committee:
    the largest epoch count, the mean best validation force MAE and the mean of each test metric."""
    from mlff.training.trainer import TrainResult, train

    output_dir = Path(config.output_dir)
    manifest_path = output_dir / COMMITTEE_FILE
    size = config.train.committee
    if resume and not manifest_path.is_file():
        raise FileNotFoundError(f"--resume: no committee run at {output_dir} (no {COMMITTEE_FILE})")
    if not resume and (manifest_path.is_file() or (output_dir / "member_0" / "last.pt").is_file()):
        raise ValueError(f"{output_dir} already holds a run: pass --resume to continue it or choose another output_dir")
    if resume:
        recorded = json.loads(manifest_path.read_text())
        if len(recorded["members"]) != size:
            raise ValueError(
                f"{output_dir} is a committee of {len(recorded['members'])} members, the config says {size}"
            )
    members = [member_config(config, k) for k in range(size)]
    manifest: dict[str, Any] = {
        "format": "mlff-committee-run",
        "bootstrap": config.train.committee_bootstrap,
        "members": [
            {"index": k, "output_dir": f"member_{k}", "seed": member.train.seed} for k, member in enumerate(members)
        ],
        "command": command,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(manifest_path, manifest)
    results = []
    for k, member in enumerate(members):
        folder = Path(member.output_dir)
        if resume and (folder / "results.json").is_file():
            results.append(_finished(folder))
            continue
        member_command = f"{command} # committee member {k}" if command else None
        resumable = resume and (folder / "last.pt").is_file()
        results.append(train(member, resume=resumable, progress=progress, command=member_command))
    test = _mean([result.test_metrics for result in results])
    best_val = float(np.mean([result.best_val_force_mae for result in results]))
    stopped = "; ".join(sorted({result.stopped_because for result in results}))
    for entry, result in zip(manifest["members"], results):
        entry.update(epochs=result.epochs_run, best_val_force_mae=result.best_val_force_mae, test=result.test_metrics)
    manifest["test_mean_over_members"] = test
    write_json(manifest_path, manifest)
    return TrainResult(output_dir, max(result.epochs_run for result in results), best_val, test, stopped)


def _finished(folder: Path) -> Any:
    """The TrainResult of a member that finished in an earlier process."""
    from mlff.training.trainer import TrainResult

    summary = json.loads((folder / "results.json").read_text())
    last = load_checkpoint(folder / "last.pt")
    return TrainResult(
        folder, int(last["epoch"]), float(last["best_val_force_mae"]), summary["test"], summary["stopped_because"]
    )


def _mean(per_member: list[dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(metrics) for metrics in per_member)) if per_member else set()
    return {key: float(np.mean([metrics[key] for metrics in per_member])) for key in sorted(keys)}
