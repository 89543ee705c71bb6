"""EGNN, Transformer and ET, each with the spline encoding and smoothness, on rMD17 ethanol split 0.

Trains the three example configs side by side (one thread each, the same
epoch budget and wall-clock cap), exports each best checkpoint, evaluates the
test split and times energy+force calls on ethanol and aspirin. Writes
OUT/table.md and OUT/results.json. Usage:

    python examples/compare_backbones.py [--minutes 30] [--out runs/backbones] [--skip-training] [--data-dir DIR]

The rMD17 files come from --data-dir (default: the `mlff data fetch` cache; `mlff data fetch rmd17
ethanol` and `... aspirin` put them there).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIGS = {
    "egnn": "examples/rmd17_ethanol.yaml",
    "transformer": "examples/rmd17_ethanol_transformer.yaml",
    "et": "examples/rmd17_ethanol_et.yaml",
}


def train_all(out: Path, minutes: float, data: Path) -> None:
    """Start the three trainings at once (one thread each) and wait for them."""
    out.mkdir(parents=True, exist_ok=True)
    processes = []
    for name, config in CONFIGS.items():
        command = ["mlff", "--threads", "1", "train", config, f"output_dir={out / name}"]
        command += [f"train.max_minutes={minutes}", f"data.path={data / 'rmd17_ethanol.npz'}", "--no-progress"]
        with open(out / f"{name}.log", "w") as log:
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
    for process in processes:
        if process.wait() != 0:
            sys.exit(f"a training run failed: see {out}/*.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("runs/backbones"))
    parser.add_argument("--skip-training", action="store_true", help="use the runs already in --out")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--data-dir", type=Path, default=None, help="folder of rmd17_<molecule>.npz")
    args = parser.parse_args()
    from mlff.data.fetch import default_cache_dir

    data = args.data_dir or default_cache_dir()
    if not args.skip_training:
        train_all(args.out, args.minutes, data)

    import torch

    from mlff.bench.speed import speed_benchmark
    from mlff.checkpoint import load_checkpoint
    from mlff.dynamics import load_structure
    from mlff.evaluate import evaluate_file
    from mlff.export.deploy import export_checkpoint

    torch.set_num_threads(1)
    structures = {
        "ethanol": load_structure(f"{data / 'rmd17_ethanol.npz'}:0", {}),
        "aspirin": load_structure(f"{data / 'rmd17_aspirin.npz'}:0", {}),
    }
    potentials = {name: export_checkpoint(args.out / name / "best.pt", args.out / f"{name}.pt") for name in CONFIGS}
    speed = speed_benchmark(list(potentials.values()), structures, calls=args.calls)
    results = []
    for name, path in potentials.items():
        accuracy = evaluate_file(path, data / "rmd17_ethanol.npz", split="test")
        checkpoint = load_checkpoint(args.out / name / "last.pt")
        rows = {row["structure"]: row for row in speed if row["potential"] == str(path)}
        results.append(
            {
                "backbone": name,
                "parameters": rows["ethanol"]["parameters"],
                "epochs": checkpoint["epoch"],
                "best_epoch": checkpoint["best_epoch"],
                "test_force_mae_mev_per_a": accuracy["force_mae_mev_per_a"],
                "test_energy_mae_mev": accuracy["energy_mae_mev"],
                "ethanol_calls_per_s": rows["ethanol"]["calls_per_second"],
                "aspirin_calls_per_s": rows["aspirin"]["calls_per_second"],
            }
        )
    (args.out / "results.json").write_text(json.dumps({"rows": results, "speed": speed}, indent=2))
    lines = [
        "| backbone | parameters | epochs in cap | test F MAE (meV/A) | test E MAE (meV) "
        "| ethanol calls/s | aspirin calls/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results:
        lines.append(
            f"| {row['backbone']} | {row['parameters']:,} | {row['epochs']} | {row['test_force_mae_mev_per_a']:.1f} | "
            f"{row['test_energy_mae_mev']:.1f} | {row['ethanol_calls_per_s']:.0f} | {row['aspirin_calls_per_s']:.0f} |"
        )
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
