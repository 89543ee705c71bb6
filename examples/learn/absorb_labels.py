"""Does a fine-tune learn the collapse frames `mlff learn` labels? Toluene, one fine-tune, four ways.

    python examples/learn/absorb_labels.py --md17-dir DIR --start CHECKPOINT [--runs runs/absorb]

Each arm fine-tunes CHECKPOINT (the first toluene learn run's iteration-0 member 0,
runs/learn/pbe_toluene_v1/iter_000/train/member_0/best.pt) for 12 epochs at lr 1e-3 on the rMD17
frames plus the 40 frames that run labelled in its iteration 0, as that run's iteration 1 did
(`mlff train potentials/configs/toluene.yaml ...`, one thread, resumable): with the labels' forces
only (that run's recipe) or their energies too, once or 20 times per epoch. Each arm's best.pt
(the lowest validation force MAE) and last.pt (its last epoch) are then evaluated on those 40
labels (trained on), on the 40 its iteration 1 labelled (held out: the next holes the MD found)
and on split_test[0]. Writes examples/learn/results/absorb_toluene.json (docs/learn.md's table).
"""

import argparse
import subprocess
import sys
from pathlib import Path

from mlff.evaluate import evaluate_file
from mlff.utils import format_table, write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LABELS = HERE / "results" / "pbe_toluene_v1_labels"
TRAINED, HELD_OUT = LABELS / "iter_000.extxyz", LABELS / "iter_001.extxyz"
ARMS = {
    "forces": ["data.extra_energies=false"],
    "energies": ["data.extra_energies=true"],
    "energies_x20": ["data.extra_energies=true", "data.extra_repeat=20"],
}


def train_arm(name: str, overrides: list[str], data: Path, args: argparse.Namespace) -> Path:
    run = Path(args.runs) / name
    if (run / "results.json").is_file():
        return run
    command = ["mlff", "--threads", "1", "train", str(ROOT / "potentials" / "configs" / "toluene.yaml")]
    command += [f"data.path={data}", "train.max_cpu_minutes=0"]
    command += ["train.epochs=12", "train.lr=1.0e-3", f"init_from={args.start}", f"output_dir={run}"]
    command += [f"data.extra_train_paths=[{TRAINED}]", *overrides, "--no-progress"]
    subprocess.run([*command, "--resume"] if (run / "last.pt").is_file() else command, check=True)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--md17-dir", required=True, help="folder of rmd17_toluene.npz (the published splits)")
    parser.add_argument("--start", required=True, help="the checkpoint every arm fine-tunes")
    parser.add_argument("--runs", default="runs/absorb", help="where the arms' runs go")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "absorb_toluene.json")
    args = parser.parse_args()
    data = Path(args.md17_dir).expanduser() / "rmd17_toluene.npz"
    rows = []
    for name, overrides in ARMS.items():
        run = train_arm(name, overrides, data, args)
        for kept in ("best", "last"):
            model = run / f"{kept}.pt"
            row = {"arm": name, "kept": kept}
            sets = (("trained", TRAINED, "all"), ("held_out", HELD_OUT, "all"), ("test", data, "test"))
            for label, path, split in sets:
                metrics = evaluate_file(model, path, split=split)
                row[f"{label}_force_mae_mev_per_a"] = metrics["force_mae_mev_per_a"]
                row[f"{label}_energy_mae_mev"] = metrics["energy_mae_mev"]
            rows.append(row)
    write_json(args.out, rows)
    columns = list(rows[0])
    print(format_table([[row[c] for c in columns] for row in rows], columns, floatfmt=".1f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
