"""Liquid water end to end: a box, GFN1-xTB data, a trained periodic potential, NVT checks.

Stages (each a library call or an `mlff` command; rerunning resumes `mlff data generate`):

1. build: OUT/box.extxyz, N waters at 1 g/cm^3 (`build_box.py`; 32 waters: a 9.86 A box);
2. generate: `mlff data generate --xyz OUT/box.extxyz --method gfn1-xtb` -> OUT/data.extxyz:
   MD frames of the box (periodic: no optimisation, no constraints, cell and pbc kept); GFN1, not
   GFN2: its D3 dispersion makes the periodic box ~5x cheaper than GFN2's D4 (README.md);
3. train: the first 80% of the trajectory (OUT/train.extxyz) with `mlff train examples/water/water.yaml`
   -> OUT/train, `mlff export` -> OUT/water.pt, and `mlff eval` on the last 20% (OUT/heldout.extxyz,
   held back) -> OUT/heldout.json;
4. check: NVT at 300 K of the box with the trained potential in the torch engine and in OpenMM
   (`mlff.dynamics.run_md`), stability (intramolecular O-H bonds under minimum image) and the
   O-O h(r) (minimum image, up to half the box) against the xTB frames', as an MAE; OUT/check.json
   (the MD summaries) and OUT/water_model.json (a row per engine: test errors on the held-back xTB
   frames, stability, h(r) MAE, steps/s; docs/periodic.md's table reads its copy in results/).

The full size (`python examples/water/pipeline.py`) is ~1.7 CPU-hours of xTB: see README.md. `--tiny`
(4 waters, 20 frames, 2 epochs, 20 MD steps) runs the whole chain in minutes, as a test.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import ase.io
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_box import liquid_box_length, water_box  # noqa: E402

from mlff.data.reference import half_width, hr_density, hr_mae, pair_distance_counts  # noqa: E402
from mlff.dynamics.frame import Frame  # noqa: E402
from mlff.utils import atomic_path, write_json  # noqa: E402

# The labels' level of theory (mlff.methods): GFN1-xTB, ~5x cheaper per periodic call than GFN2-xTB (README.md).
METHOD = "gfn1-xtb"
# Full: 0.5 ps equilibration, then 1,000 frames every 3 fs (steps of 1 fs): 3,500 xTB calls, 3.5 ps of MD.
FULL = {
    "molecules": 32, "temperatures": "300", "md_frames": 1000, "equilibration": 500, "every": 3, "timestep_fs": 1.0,
    "epochs": None,
}  # fmt: skip
TINY = {
    "molecules": 4, "temperatures": "300", "md_frames": 20, "equilibration": 0, "every": 2, "timestep_fs": 0.5,
    "epochs": 2,
}  # fmt: skip
BINS = 100
# The last fifth of the xTB trajectory is held back from training for the test (`split_trajectory`).
HELD_BACK = 0.2


class PairHrObserver:
    """O-O distance counts (minimum image) of every saved frame of a run (an `Observer`)."""

    name = "oo_hr"

    def __init__(self, numbers: np.ndarray, cell: np.ndarray, pbc: np.ndarray, r_max_a: float) -> None:
        self.numbers, self.cell, self.pbc, self.r_max_a = numbers, cell, pbc, r_max_a
        self.counts = np.zeros(BINS, dtype=np.int64)

    def observe(self, frame: Frame) -> None:
        for positions in frame.positions_a:
            pairs = pair_distance_counts(self.numbers, positions, self.cell, self.pbc, self.r_max_a, BINS)
            self.counts = self.counts + pairs["O-O"]

    def summary(self) -> dict[str, Any]:
        return {"frames_counted": int(self.counts.sum())}

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.counts}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.counts = saved["counts"]


def mlff(threads: int, *arguments: str) -> None:
    arguments = ("--threads", str(threads), *arguments)
    command = [sys.executable, "-m", "mlff.cli.main", *arguments]
    print("+ mlff", " ".join(arguments), flush=True)
    subprocess.run(command, check=True)


def check(potential: Path, box_path: Path, data_path: Path, out: Path, steps: int, engines: list[str]) -> dict:
    """NVT at 300 K in each engine; stability and the O-O h(r) MAE against the xTB frames."""
    from mlff.dynamics import MDSettings, run_md

    box = ase.io.read(box_path)
    cell, pbc = np.array(box.cell.array), np.array(box.pbc)
    r_max = half_width(cell, pbc)
    xtb = ase.io.read(data_path, index=":")
    reference = sum(pair_distance_counts(a.numbers, a.positions, cell, pbc, r_max, BINS)["O-O"] for a in xtb)
    results = {}
    for engine in engines:
        observer = PairHrObserver(box.numbers, cell, pbc, r_max)
        settings = MDSettings(steps=steps, timestep_fs=0.5, temperature_k=300.0, save_every=max(1, steps // 20))
        summary = run_md(potential, str(box_path), settings, out / f"nvt_{engine}", engine=engine, observers=[observer])
        mae = hr_mae(hr_density(observer.counts, r_max), hr_density(reference, r_max), r_max)
        results[engine] = {"summary": summary, "oo_hr_mae": mae}
        print(f"{engine}: O-O h(r) MAE {mae:.3f} (0 same, 2 disjoint); r <= {r_max:.2f} A", flush=True)
    return results


def newer(source: Path, target: Path) -> bool:
    """Whether `target` is missing or older than `source` (a stage to run again)."""
    return not target.is_file() or target.stat().st_mtime < source.stat().st_mtime


def split_trajectory(data_path: Path, train_path: Path, heldout_path: Path) -> None:
    """The xTB frames in time order: the first 80% to train on, the last 20% held back for the test.

    Frames 3 fs apart are alike, so a random test set would sit beside training frames; the last
    stretch of the trajectory is further from them (0.6 ps at the full size).
    """
    frames = ase.io.read(data_path, index=":")
    cut = len(frames) - max(1, round(HELD_BACK * len(frames)))
    for path, part in ((train_path, frames[:cut]), (heldout_path, frames[cut:])):
        with atomic_path(path, suffix=".extxyz") as temporary:
            ase.io.write(temporary, part, format="extxyz")


def model_rows(results: dict, heldout: dict, xtb_frames: int, molecules: int) -> list[dict[str, Any]]:
    """One row per engine of the check (OUT/water_model.json, the table of docs/periodic.md)."""
    rows = []
    for engine, result in results.items():
        summary = result["summary"]
        stability, throughput = summary["stability"], summary["throughput"]
        rows.append(
            {
                "engine": engine,
                "waters": molecules,
                "atoms": summary["atoms"][0],
                "xtb_frames": xtb_frames,
                "heldout_frames": heldout["frames"],
                "heldout_force_mae_mev_per_a": heldout["force_mae_mev_per_a"],
                "heldout_energy_mae_mev_per_atom": heldout["energy_mae_mev_per_atom"],
                "md_ps": stability["length_ps"],
                "collapsed": stability["collapsed"],
                "stable_time_ps": stability["stable_time_ps"],
                "largest_bond_deviation_a": stability["largest_bond_deviation_a"],
                "mean_temperature_k": stability["mean_temperature_k"],
                "oo_hr_mae": result["oo_hr_mae"],
                "steps_per_second": throughput["steps_per_second"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/water"))
    parser.add_argument("--tiny", action="store_true", help="4 waters, 20 frames, 2 epochs: minutes")
    parser.add_argument("--md-steps", type=int, default=None, help="NVT steps of the check (default 20000; tiny 20)")
    parser.add_argument("--engines", nargs="+", default=["torch", "openmm"])
    parser.add_argument("--skip", nargs="*", default=[], choices=["generate", "train", "check"])
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of each step (default 1)")
    args = parser.parse_args(argv)
    size = TINY if args.tiny else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    box_path, data_path = args.out / "box.extxyz", args.out / "data.extxyz"
    train_path, heldout_path = args.out / "train.extxyz", args.out / "heldout.extxyz"
    potential, heldout_json = args.out / "water.pt", args.out / "heldout.json"

    if not box_path.exists():
        box = water_box(size["molecules"], liquid_box_length(size["molecules"]), seed=0)
        ase.io.write(box_path, box, format="extxyz")
    if "generate" not in args.skip:
        mlff(
            args.threads, "data", "generate", "--threads-per-worker", str(args.threads), "--method", METHOD,
            "--xyz", str(box_path), "--temperatures", size["temperatures"],
            "--md-frames", str(size["md_frames"]), "--equilibration-steps", str(size["equilibration"]),
            "--sample-every", str(size["every"]), "--timestep-fs", str(size["timestep_fs"]), "-o", str(data_path),
        )  # fmt: skip
    if "train" not in args.skip:
        split_trajectory(data_path, train_path, heldout_path)
        overrides = [f"data.path={train_path}", f"output_dir={args.out / 'train'}"]
        if args.tiny:
            overrides += [
                f"train.epochs={size['epochs']}", "data.n_val=4", "model.backbone_options.hidden=8",
                "model.backbone_options.layers=1", "model.encoding_size=4", "train.batch_size=4",
            ]  # fmt: skip
        # Checkpointed every epoch: a rerun continues the training where it stopped. A finished one
        # (results.json) is left alone: its best.pt, the exported file and so the check's MD
        # checkpoints stay valid (to train longer: mlff train --resume with a higher cap, by hand).
        if not (args.out / "train" / "results.json").is_file():
            resume = ["--resume"] if (args.out / "train" / "last.pt").is_file() else []
            mlff(args.threads, "train", "--no-progress", str(HERE / "water.yaml"), *overrides, *resume)
        # Exported and evaluated again only when out of date: a new file (export is not byte-for-byte
        # repeatable) would make the check's MD checkpoints refuse to resume.
        if newer(args.out / "train" / "best.pt", potential):
            mlff(args.threads, "export", str(args.out / "train" / "best.pt"), "-o", str(potential), "--no-card")
        if newer(potential, heldout_json):
            mlff(args.threads, "eval", str(potential), str(heldout_path), "--split", "all", "--json", str(heldout_json))
    if "check" not in args.skip:
        from mlff.threads import set_user_threads

        set_user_threads(args.threads)
        steps = args.md_steps if args.md_steps is not None else (20 if args.tiny else 20000)
        results = check(potential, box_path, data_path, args.out, steps, args.engines)
        write_json(args.out / "check.json", results)
        heldout, xtb_frames = json.loads(heldout_json.read_text()), len(ase.io.read(data_path, index=":"))
        rows = model_rows(results, heldout, xtb_frames, size["molecules"])
        write_json(args.out / "water_model.json", rows)  # copied to examples/water/results/ for the docs table
        for engine, result in results.items():
            print(f"{engine}: O-O h(r) MAE {result['oo_hr_mae']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
