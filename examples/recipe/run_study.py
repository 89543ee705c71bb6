"""Run (or resume) the arms of the recipe study, one after another, in this process.

    python examples/recipe/run_study.py --md17-dir DIR --slot 0 --slots 2   # arms 0, 2, 4, ... of the screen
    python examples/recipe/run_study.py --md17-dir DIR --slot 1 --slots 2   # arms 1, 3, 5, ...
    python examples/recipe/run_study.py --section pretrain --xtb-dir DIR   # the xTB pretraining
    python examples/recipe/run_study.py --section confirm --only aspirin/base_2h   # one arm
    python examples/recipe/run_study.py --report             # the table of the arms so far (JSON + Markdown)
    python examples/recipe/run_study.py --section regularisers --stability --md17-dir DIR   # MD of each finished arm

Each arm is `mlff train base.yaml <overrides> data.path=<file> data.sha256=<hash> output_dir=<runs>/<molecule>/<arm>`
at one thread; a finished arm (results.json) is skipped, a started one resumes from its last.pt,
so the script can be killed and rerun at any time. Run two slots side by side on a 2-core machine.

`--stability` takes each finished arm through what a shipped potential gets: `mlff export` of its
best.pt (core repulsion 50, reference statistics from the molecule's file) into
<runs>/<molecule>/<arm>/export/<molecule>.pt, then `mlff bench stability` (the 50 ps CPU protocol,
5 seeds) into <runs>/<molecule>/<arm>/stability; both resume, and the report adds the arm's
collapsed seeds and mean stable time.
"""

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from mlff.training import load_config, train
from mlff.utils import format_table, write_json

HERE = Path(__file__).parent


def fill(text: str, dirs: dict[str, str]) -> str:
    """`text` with each {name} of `dirs` replaced (plain replacement: YAML flow maps keep their braces)."""
    for name, value in dirs.items():
        text = text.replace("{" + name + "}", value)
    return text


def arms(study: dict, section: str, dirs: dict[str, str]) -> list[tuple[str, list[str], str, list[str]]]:
    """(molecule, data overrides, arm name, arm overrides) for every arm of a section, molecule-major.

    A section without molecules (pretrain) runs each arm once, under the label of the section,
    with the data its overrides name. `dirs` fills the {md17} / {xtb} placeholders of paths, and
    {molecule} is each molecule's name.
    """
    part = study[section]
    entries = list((part["arms"] or {}).items())
    if not part.get("molecules"):
        return [(section, [], name, [fill(text, dirs) for text in overrides]) for name, overrides in entries]
    rows = []
    for molecule in part["molecules"]:
        dataset = study["datasets"][molecule]
        data = [f"data.path={fill(dataset['file'], dirs)}", f"data.sha256={dataset['sha256']}"]
        names = {**dirs, "molecule": molecule}
        rows += [(molecule, data, name, [fill(text, names) for text in overrides]) for name, overrides in entries]
    return rows


def run_arm(base: Path, runs: Path, molecule: str, data: list[str], name: str, overrides: list[str]) -> None:
    output = runs / molecule / name
    if (output / "results.json").is_file():
        return
    overrides = [*overrides, *data, f"output_dir={output}"]
    config = load_config(base, overrides)
    if config.init_from and not Path(config.init_from).is_file():
        print(f"skip {molecule}/{name}: its init_from {config.init_from} does not exist yet", flush=True)
        return
    resume = (output / "last.pt").is_file()
    print(f"{'resume' if resume else 'start'} {molecule}/{name}: {' '.join(overrides)}", flush=True)
    command = " ".join(["mlff --threads 1 train", str(base), *overrides])
    train(config, resume=resume, progress=False, command=command)


# The shipped potentials' export settings (scripts/retrain_potentials.py): cubic core repulsion of 50 eV/A^3.
CORE_REPULSION = "50"


def stability_arm(runs: Path, molecule: str, data: list[str], name: str) -> None:
    """Export a finished arm like a shipped potential and run the stability protocol on it (both resumable)."""
    folder = runs / molecule / name
    if not (folder / "results.json").is_file():
        print(f"skip {molecule}/{name}: training not finished", flush=True)
        return
    dataset = data[0].split("=", 1)[1]
    potential = folder / "export" / f"{molecule}.pt"
    commands = []
    if not potential.is_file():
        commands.append(
            ["mlff", "--threads", "1", "export", str(folder / "best.pt"), "-o", str(potential), "--dtype", "float32"]
            + ["--core-repulsion", CORE_REPULSION, "--reference-data", dataset, "--check-data", dataset]
        )
    commands.append(
        ["mlff", "--threads", "1", "bench", "stability", "--potentials-dir", str(potential.parent)]
        + ["--molecules", molecule, "-o", str(folder / "stability")]
    )
    for command in commands:
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)


def stability_columns(folder: Path, molecule: str) -> dict:
    """The arm's stability row (collapsed seeds, stable times), or empty when its MD has not finished."""
    path = folder / "stability" / "stability.json"
    if not path.is_file():
        return {}
    rows = [row for row in json.loads(path.read_text())["rows"] if row["molecule"] == molecule]
    if not rows or rows[0]["interrupted"]:
        return {}
    row = rows[0]
    return {
        "collapsed_seeds": row["collapsed_seeds"],
        "seeds": row["seeds"],
        "stable_time_ps_mean": row["stable_time_ps_mean"],
        "stable_time_ps": row["stable_time_ps"],
        "hr_mae": row["hr_mae"],
    }


def report(study: dict, section: str, runs: Path, dirs: dict[str, str]) -> list[dict]:
    """One row per finished or running arm: frames/s, CPU-hours, best validation and test force MAE."""
    rows = []
    for molecule, _data, name, overrides in arms(study, section, dirs):
        metrics = runs / molecule / name / "metrics.jsonl"
        if not metrics.is_file():
            continue
        logged = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        # Epochs the divergence guard undid are logged, marked "rejected"; the curve is the kept ones.
        history = [record for record in logged if not record.get("rejected")]
        if not history:
            continue  # started, no epoch finished yet
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
                "frames_per_s": train_frames * len(logged) / sum(r["seconds"] for r in logged),
                # Per CPU-second of the whole run (validation included): fair on a loaded machine.
                "frames_per_cpu_s": train_frames * len(logged) / logged[-1]["cpu_seconds_total"],
                "cpu_hours": logged[-1]["cpu_seconds_total"] / 3600.0,
                "best_val_force_mae": min(r["val_force_mae_mev_per_a"] for r in history),
                "test_force_mae": results["test"]["force_mae_mev_per_a"] if results else None,
                "test_energy_mae": results["test"]["energy_mae_mev"] if results else None,
                "finished": results is not None,
                "rollbacks": len(logged) - len(history),
                "lr": config["train"]["lr"],
                **{f"val_at_{h:g}h": value_at(history, h) for h in COMPARE_AT_HOURS},
                "curve_cpu_hours_val_mae": [
                    [r["cpu_seconds_total"] / 3600.0, r["val_force_mae_mev_per_a"]] for r in history
                ],
                **stability_columns(runs / molecule / name, molecule),
            }
        )
    return rows


def with_earlier(rows: list[dict], earlier_path: Path, study: dict, section: str) -> list[dict]:
    """The report's rows, with the finished arms of an earlier report whose run folders are gone.

    A study outlives the machine its runs were on: the committed report keeps an arm that
    finished there, so rerunning `--report` after the next arms does not drop it. An arm in
    the runs folder replaces its earlier row; rows follow the study's order.
    """
    if not earlier_path.is_file():
        return rows
    fresh = {(row["molecule"], row["arm"]) for row in rows}
    kept = [
        row
        for row in json.loads(earlier_path.read_text())
        if row.get("finished") and (row["molecule"], row["arm"]) not in fresh
    ]
    order = {(molecule, name): index for index, (molecule, _, name, _) in enumerate(arms(study, section, {}))}
    return sorted(rows + kept, key=lambda row: order.get((row["molecule"], row["arm"]), len(order)))


# CPU-hours at which arms are compared while some are still running (a capped arm anneals to
# its cap, so only finished arms compare at the cap itself).
COMPARE_AT_HOURS = (0.1, 0.25, 0.5, 1.0)


def value_at(history: list[dict], hours: float) -> float | None:
    """Validation force MAE (meV/A) at `hours` CPU-hours, interpolated linearly in log space; None if not reached."""
    points = [(r["cpu_seconds_total"] / 3600.0, r["val_force_mae_mev_per_a"]) for r in history]
    for (h0, v0), (h1, v1) in zip(points, points[1:]):
        if h0 <= hours <= h1:
            weight = (hours - h0) / (h1 - h0) if h1 > h0 else 0.0
            return float(math.exp((1 - weight) * math.log(v0) + weight * math.log(v1)))
    return None


def projection(study: dict, runs: Path) -> list[dict]:
    """Per entry of study["projection"] (named by its molecule unless it gives `molecule`): the power
    law E(T) = a T^-b through the finished runs' test force MAE E (meV/A) at their CPU-hours T
    (least squares in log-log), and the CPU-hours where E reaches twice MACE's figure; None where
    fewer than two runs have finished."""
    rows = []
    for name, entry in (study.get("projection") or {}).items():
        molecule = entry.get("molecule", name)
        points = []
        for run in entry["runs"]:
            results_path, metrics = runs / run / "results.json", runs / run / "metrics.jsonl"
            if results_path.is_file():
                history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
                mae = json.loads(results_path.read_text())["test"]["force_mae_mev_per_a"]
                points.append((history[-1]["cpu_seconds_total"] / 3600.0, mae))
        target = 2.0 * entry["mace_force_mae"]
        row = {
            "projection": name,
            "molecule": molecule,
            "runs": entry["runs"],
            "points_cpu_hours_test_mae": points,
            "target": target,
        }
        row.update(exponent_b=None, cpu_hours_to_target=None)
        if len(points) >= 2:
            logs = [(math.log(hours), math.log(mae)) for hours, mae in points]
            mean_x = sum(x for x, _ in logs) / len(logs)
            mean_y = sum(y for _, y in logs) / len(logs)
            slope = sum((x - mean_x) * (y - mean_y) for x, y in logs) / sum((x - mean_x) ** 2 for x, _ in logs)
            intercept = mean_y - slope * mean_x
            row["exponent_b"] = -slope
            if slope < 0:
                row["cpu_hours_to_target"] = math.exp((math.log(target) - intercept) / slope)
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Validation force MAE against CPU-hours, one line per arm, as a PNG."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), constrained_layout=True)
    ax = figure.subplots()
    for row in rows:
        hours, mae = zip(*row["curve_cpu_hours_val_mae"])
        ax.plot(hours, mae, label=f"{row['molecule']}/{row['arm']}")
    ax.set_xlabel("CPU-hours (process time, 1 thread)")
    ax.set_ylabel("validation force MAE (meV/A)")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    figure.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=HERE / "study.yaml")
    parser.add_argument("--base", type=Path, default=HERE / "base.yaml")
    parser.add_argument(
        "--section", default="screen", help="study.yaml section: screen, confirm, scaling, pretrain, regularisers"
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/recipe"))
    parser.add_argument("--md17-dir", default="~/.cache/mlff/datasets", help="folder of the rmd17_<molecule>.npz files")
    parser.add_argument("--xtb-dir", default="~/.cache/mlff/datasets", help="folder of the xtb_<molecule>.npz files")
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument(
        "--only", action="append", default=None, metavar="MOLECULE/ARM", help="run just these arms (repeatable)"
    )
    parser.add_argument(
        "--report", action="store_true", help="print the table; write <out>/<section>.json and <section>.png"
    )
    parser.add_argument(
        "--stability", action="store_true", help="export each finished arm and run the 50 ps stability protocol on it"
    )
    parser.add_argument("--out", type=Path, default=None, help="folder of the report files (default: --runs)")
    args = parser.parse_args()
    study = yaml.safe_load(args.study.read_text())
    dirs = {"md17": args.md17_dir, "xtb": args.xtb_dir}
    if args.report:
        out = args.out or args.runs
        rows = with_earlier(
            report(study, args.section, args.runs, dirs), out / f"{args.section}.json", study, args.section
        )
        write_json(out / f"{args.section}.json", rows)
        plot(rows, out / f"{args.section}.png")
        columns = ["molecule", "arm", "epochs", "frames_per_cpu_s", "cpu_hours", "val_at_0.25h", "best_val_force_mae"]
        columns.append("test_force_mae")
        if any("collapsed_seeds" in row for row in rows):
            columns += ["collapsed_seeds", "stable_time_ps_mean"]
        print(format_table([[row.get(c) for c in columns] for row in rows], columns, floatfmt=".3g"))
        if not study.get("projection"):
            return 0
        projected = projection(study, args.runs)
        write_json(out / "projection.json", projected)
        columns = ["molecule", "points_cpu_hours_test_mae", "exponent_b", "target", "cpu_hours_to_target"]
        print(format_table([[row[c] for c in columns] for row in projected], columns, floatfmt=".3g"))
        return 0
    torch.set_num_threads(1)
    for index, arm in enumerate(arms(study, args.section, dirs)):
        chosen = f"{arm[0]}/{arm[2]}" in args.only if args.only else index % args.slots == args.slot
        if chosen and args.stability:
            stability_arm(args.runs, arm[0], arm[1], arm[2])
        elif chosen:
            run_arm(args.base, args.runs, *arm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
