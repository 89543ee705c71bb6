"""Run (or resume) the arms of the recipe study, one after another, in this process.

    python examples/recipe/run_study.py --slot 0 --slots 2   # arms 0, 2, 4, ... of the screen
    python examples/recipe/run_study.py --slot 1 --slots 2   # arms 1, 3, 5, ...
    python examples/recipe/run_study.py --report             # the table of finished arms (JSON + Markdown)

Each arm is `mlff train base.yaml <overrides> data.path=<molecule file> output_dir=<runs>/<molecule>/<arm>`
at one thread; a finished arm (results.json) is skipped, a started one resumes from its last.pt,
so the script can be killed and rerun at any time. Run two slots side by side on a 2-core machine.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

from mlff.training import load_config, train
from mlff.utils import format_table, write_json

HERE = Path(__file__).parent


def arms(study: dict, section: str) -> list[tuple[str, str | None, str, list[str]]]:
    """(molecule, data path, arm name, overrides) for every arm of a section, molecule-major.

    The pretrain section's entries name their own data: molecule "pretrain", no data path.
    """
    if section == "pretrain":
        return [("pretrain", None, name, list(overrides)) for name, overrides in study["pretrain"].items()]
    return [
        (molecule, path, name, list(overrides))
        for molecule, path in study["molecules"].items()
        for name, overrides in (study.get(section) or {}).items()
    ]


def run_arm(base: Path, runs: Path, molecule: str, path: str | None, name: str, overrides: list[str]) -> None:
    output = runs / molecule / name
    if (output / "results.json").is_file():
        return
    overrides = [*overrides, *([f"data.path={path}"] if path else []), f"output_dir={output}"]
    config = load_config(base, overrides)
    if config.init_from and not Path(config.init_from).is_file():
        print(f"skip {molecule}/{name}: its init_from {config.init_from} does not exist yet", flush=True)
        return
    resume = (output / "last.pt").is_file()
    print(f"{'resume' if resume else 'start'} {molecule}/{name}: {' '.join(overrides)}", flush=True)
    command = " ".join(["mlff --threads 1 train", str(base), *overrides])
    train(config, resume=resume, progress=False, command=command)


def report(study: dict, section: str, runs: Path) -> list[dict]:
    """One row per finished or running arm: frames/s, CPU-hours, best validation and test force MAE."""
    rows = []
    for molecule, _path, name, overrides in arms(study, section):
        metrics = runs / molecule / name / "metrics.jsonl"
        if not metrics.is_file():
            continue
        history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        results_path = runs / molecule / name / "results.json"
        results = json.loads(results_path.read_text()) if results_path.is_file() else None
        config = yaml.safe_load((runs / molecule / name / "config.yaml").read_text())
        train_frames = history[-1]["steps"] / history[-1]["epoch"] * config["train"]["batch_size"]
        rows.append(
            {
                "molecule": molecule,
                "arm": name,
                "overrides": overrides,
                "epochs": history[-1]["epoch"],
                "steps": history[-1]["steps"],
                "frames_per_s": train_frames * len(history) / sum(r["seconds"] for r in history),
                "cpu_hours": history[-1]["cpu_seconds_total"] / 3600.0,
                "best_val_force_mae": min(r["val_force_mae_mev_per_a"] for r in history),
                "test_force_mae": results["test"]["force_mae_mev_per_a"] if results else None,
                "test_energy_mae": results["test"]["energy_mae_mev"] if results else None,
                "finished": results is not None,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=HERE / "study.yaml")
    parser.add_argument("--base", type=Path, default=HERE / "base.yaml")
    parser.add_argument("--section", default="screen", help="screen or confirm")
    parser.add_argument("--runs", type=Path, default=Path("runs/recipe"))
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="print the table and write <runs>/<section>.json")
    args = parser.parse_args()
    study = yaml.safe_load(args.study.read_text())
    if args.report:
        rows = report(study, args.section, args.runs)
        write_json(args.runs / f"{args.section}.json", rows)
        columns = ["molecule", "arm", "epochs", "frames_per_s", "cpu_hours", "best_val_force_mae", "test_force_mae"]
        print(format_table([[row[c] for c in columns] for row in rows], columns, floatfmt=".3g"))
        return 0
    torch.set_num_threads(1)
    for index, arm in enumerate(arms(study, args.section)):
        if index % args.slots == args.slot:
            run_arm(args.base, args.runs, *arm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
