"""Retrain, export and benchmark the shipped MD17 potentials from potentials/configs/, resumably.

    python scripts/retrain_potentials.py pretrain --xtb-dir DIR      # the xTB-MD17 pretraining the configs start from
    python scripts/retrain_potentials.py train --md17-dir DIR --slot 0 --slots 2 &   # two slots, one thread each
    python scripts/retrain_potentials.py train --md17-dir DIR --slot 1 --slots 2 &
    python scripts/retrain_potentials.py learn --md17-dir DIR --only toluene   # mlff learn at PBE from a trained run
    python scripts/retrain_potentials.py ship --md17-dir DIR [--only naphthalene toluene]
    python scripts/retrain_potentials.py status

Each step is the `mlff` command a user would type (printed before it runs), so the cards record
them: `mlff --threads 1 train potentials/configs/<m>.yaml data.path=DIR/rmd17_<m>.npz [--resume]`
(a finished run, one with results.json, is skipped; a started one resumes from its last.pt);
`ship` exports each finished run's best.pt over potentials/<m>.pt (core repulsion, reference
statistics and check frames from the rMD17 file) and runs the 50 ps stability protocol into
potentials/stability-cpu with --update-cards. Kill and rerun at any time.

`learn` runs `mlff learn examples/learn/pbe_ethanol.yaml` for another molecule (its settings are
not ethanol's own: the training config, start and data are overrides): a committee of two
fine-tuned from runs/potentials/<m>/best.pt, PBE/def2-SVP labels, until 5 of 5 replicas hold 50 ps,
into runs/learn/pbe_<m>.

A config is the run of the shipped file's card. Most start from the xTB pretraining (`pretrain`);
one whose MD needed `mlff learn` starts from the loop's last committee and its header names the
earlier stages (potentials/configs/ethanol.yaml: ethanol_base.yaml, then
examples/learn/pbe_ethanol.yaml, then itself).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "potentials" / "configs"
MOLECULES = ("aspirin", "benzene", "ethanol", "malonaldehyde", "naphthalene", "salicylic", "toluene", "uracil")
PRETRAIN = CONFIGS / "pretrain_xtb.yaml"
CORE_REPULSION = "50"


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def output_dir(config: Path) -> Path:
    return ROOT / yaml.safe_load(config.read_text())["output_dir"]


def dataset(md17_dir: str, molecule: str) -> str:
    return str(Path(md17_dir).expanduser() / f"rmd17_{molecule}.npz")


def train_command(config: Path, overrides: list[str]) -> list[str]:
    command = ["mlff", "--threads", "1", "train", str(config.relative_to(ROOT)), *overrides]
    return [*command, "--resume"] if (output_dir(config) / "last.pt").is_file() else command


def pretrain(args: argparse.Namespace) -> None:
    if (output_dir(PRETRAIN) / "results.json").is_file():
        print(f"{PRETRAIN.name}: finished")
        return
    xtb = Path(args.xtb_dir).expanduser()
    files = ", ".join(str(xtb / f"xtb_{molecule}.npz") for molecule in MOLECULES)
    run(train_command(PRETRAIN, [f"data.path=[{files}]"]))


def train(args: argparse.Namespace) -> None:
    for index, molecule in enumerate(args.only or MOLECULES):
        if index % args.slots != args.slot:
            continue
        config = CONFIGS / f"{molecule}.yaml"
        if (output_dir(config) / "results.json").is_file():
            print(f"{molecule}: finished")
            continue
        init_from = yaml.safe_load(config.read_text()).get("init_from")
        if init_from and not (ROOT / init_from).is_file():
            sys.exit(f"{molecule}: its init_from {init_from} does not exist: run the stage its config's header names")
        run(train_command(config, [f"data.path={dataset(args.md17_dir, molecule)}"]))


def learn(args: argparse.Namespace) -> None:
    for molecule in args.only or MOLECULES:
        config = CONFIGS / f"{molecule}.yaml"
        if (CONFIGS / f"{molecule}_base.yaml").is_file():
            print(f"{molecule}: its shipped config is already the stage after the loop; skipped")
            continue
        run_dir = output_dir(config)
        if not (run_dir / "results.json").is_file():
            print(f"{molecule}: training not finished; skipped")
            continue
        out = Path("runs") / "learn" / f"pbe_{molecule}"
        training = [f"data.path={dataset(args.md17_dir, molecule)}", "train.max_cpu_minutes=0", "train.epochs=6"]
        training += ["train.lr=1.0e-3", "data.extra_energies=false"]
        command = ["mlff", "--threads", "1", "learn", "examples/learn/pbe_ethanol.yaml", f"output_dir={out}"]
        command += [
            f"training.config={config.relative_to(ROOT)}",
            f"training.init_from={run_dir.relative_to(ROOT)}/best.pt",
        ]
        command += [f"training.overrides=[{', '.join(training)}]"]
        run([*command, "--resume"] if (ROOT / out / "learn_state.json").is_file() else command)


def ship(args: argparse.Namespace) -> None:
    for molecule in args.only or MOLECULES:
        run_dir = output_dir(CONFIGS / f"{molecule}.yaml")
        if not (run_dir / "results.json").is_file():
            print(f"{molecule}: training not finished; skipped")
            continue
        data = dataset(args.md17_dir, molecule)
        potential = f"potentials/{molecule}.pt"
        run(
            ["mlff", "--threads", "1", "export", str((run_dir / "best.pt").relative_to(ROOT)), "-o", potential]
            + ["--dtype", "float32", "--core-repulsion", CORE_REPULSION, "--reference-data", data, "--check-data", data]
        )
        run(
            ["mlff", "--threads", "1", "bench", "stability", "--molecules", molecule, "--update-cards"]
            + ["-o", "potentials/stability-cpu"]
        )


def status(args: argparse.Namespace) -> None:
    for config in [PRETRAIN, *(CONFIGS / f"{molecule}.yaml" for molecule in MOLECULES)]:
        if not config.is_file():
            continue
        folder = output_dir(config)
        metrics = folder / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.is_file() else []
        last = json.loads(lines[-1]) if lines else {}
        state = "finished" if (folder / "results.json").is_file() else ("running/stopped" if lines else "not started")
        print(
            f"{config.stem:14s} {state:16s} epoch {last.get('epoch', '-')!s:>5} "
            f"CPU-h {last.get('cpu_seconds_total', 0) / 3600:.2f} val F {last.get('val_force_mae_mev_per_a', '-')}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["pretrain", "train", "learn", "ship", "status"])
    parser.add_argument("--md17-dir", default="~/.cache/mlff/datasets", help="folder of the rmd17_<molecule>.npz files")
    parser.add_argument("--xtb-dir", default="~/.cache/mlff/datasets", help="folder of the xtb_<molecule>.npz files")
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=MOLECULES, help="these molecules only")
    args = parser.parse_args()
    {"pretrain": pretrain, "train": train, "learn": learn, "ship": ship, "status": status}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
