"""Rows of docs/data/gpu_training_h200.json (table:gpu-training) from training run folders.

    python scripts/gpu_training_rows.py RUN_DIR [RUN_DIR ...] --device "cuda (NVIDIA H200)" \
        --torch 2.11.0+cu130 --start "the shipped file" -o docs/data/gpu_training_h200.json

Each run folder is a `mlff train` output (config.yaml, metrics.jsonl, results.json); its row is
named after the folder and replaces a row of that name in the output (others are kept).
"""

import argparse
import json
from pathlib import Path

import yaml

from mlff.utils import write_json


def row(run: Path, device: str, torch_version: str, start: str) -> dict:
    """One table row: the run's batch, lr, epochs, optimiser steps, time per step and test errors."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    results = json.loads((run / "results.json").read_text())
    batch = config["train"]["batch_size"]
    steps, wall = last["steps"], last["wall_seconds_total"]
    return {
        "run": run.name,
        "molecule": Path(config["data"]["path"]).stem.removeprefix("rmd17_"),
        "start": start,
        "batch_size": batch,
        "lr": config["train"]["lr"],
        "epochs": last["epoch"],
        "optimizer_steps": steps,
        "wall_seconds": wall,
        "cpu_seconds": last["cpu_seconds_total"],
        "ms_per_step": 1e3 * wall / steps,
        "frames_per_second": steps * batch / wall,
        "test_force_mae_mev_per_a": results["test"]["force_mae_mev_per_a"],
        "test_energy_mae_mev": results["test"]["energy_mae_mev"],
        "device": device,
        "torch_version": torch_version,
        "dtype": config["model"]["dtype"],
        "stopped_because": results["stopped_because"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--device", required=True)
    parser.add_argument("--torch", required=True, help="torch version of the device")
    parser.add_argument("--start", required=True, help="what the runs started from")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    rows = json.loads(args.output.read_text()) if args.output.is_file() else []
    for run in args.runs:
        new = row(run, args.device, args.torch, args.start)
        rows = [r for r in rows if r["run"] != new["run"]] + [new]
    write_json(args.output, rows, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
