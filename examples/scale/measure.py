"""Scale-out measurements (docs/scale.md): data-parallel throughput and training from a packed corpus.

python examples/scale/measure.py ddp RMD17_ETHANOL.npz --out ddp.json
    `mlff train` on rMD17 ethanol with 1 process, then 2 gloo processes (torchrun), one thread
    each; training frames per second (wall) and CPU seconds per frame from metrics.jsonl.
python examples/scale/measure.py packed XTB_NPZ... --gb 2 --workdir /tmp/x --out packed.json
    Replicates the frames into a packed corpus of about --gb GB, trains from it for a few hundred
    steps and reports the file size and the training process's peak RSS; deletes the corpus.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# The example model of examples/rmd17_ethanol.yaml, a global batch of 16, a fixed number of frames.
DDP_OVERRIDES = ["data.n_train=480", "data.n_test=50", "train.batch_size=16", "train.epochs=2", "train.max_minutes=0"]


def _train_command(config: Path, overrides: list[str], ranks: int) -> list[str]:
    if ranks == 1:
        head = [sys.executable, "-m", "mlff.cli.main"]
    else:
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
        head += ["-m", "mlff.cli.main"]
    return [*head, "--threads", "1", "train", str(config), *overrides, "--no-progress"]


def measure_ddp(data: Path, workdir: Path) -> dict:
    config = Path(__file__).resolve().parents[1] / "rmd17_ethanol.yaml"
    results = {}
    for ranks in (1, 2):
        run = workdir / f"ddp_{ranks}"
        overrides = [*DDP_OVERRIDES, f"data.path={data}", f"output_dir={run}"]
        started = time.monotonic()
        subprocess.run(_train_command(config, overrides, ranks), check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        frames = 480 * len(records)
        seconds = sum(r["seconds"] for r in records)
        results[f"{ranks}_process"] = {
            "command": " ".join(_train_command(config, overrides, ranks)),
            "train_frames": frames,
            "train_wall_s": round(seconds, 2),
            "frames_per_s": round(frames / seconds, 2),
            "cpu_s_total_all_ranks": round(records[-1]["cpu_seconds_total"], 2),
            "cpu_ms_per_frame": round(1000 * records[-1]["cpu_seconds_total"] / frames, 2),
            "command_wall_s": round(time.monotonic() - started, 1),
            "load_average_1min_after": os.getloadavg()[0],
        }
    return results


def measure_packed(inputs: list[Path], gigabytes: float, workdir: Path) -> dict:
    from mlff.data import read_frames
    from mlff.data.packed import PackWriter

    corpus = workdir / "corpus.h5"
    parts = [read_frames(path) for path in inputs]
    bytes_per_copy = sum(p.positions.nbytes + p.forces.nbytes + p.atomic_numbers.size for p in parts)
    copies = max(1, round(gigabytes * 1e9 / bytes_per_copy))
    started = time.monotonic()
    with PackWriter(corpus) as writer:
        for _ in range(copies):
            for part in parts:
                writer.append(part)
    pack_s = time.monotonic() - started
    size = corpus.stat().st_size
    del parts
    run = workdir / "packed_run"
    overrides = [
        f"data.path={corpus}",
        f"output_dir={run}",
        "data.n_train=6400",
        "data.n_test=100",
        "train.batch_size=16",
        "train.epochs=1",
        "model.backbone_options.hidden=32",
        "model.backbone_options.layers=2",
    ]
    code = (
        "import resource, sys, time\n"
        "from mlff.cli.main import main\n"
        "t = time.monotonic(); c = time.process_time()\n"
        "code = main(sys.argv[1:])\n"
        "print('RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 'WALL', time.monotonic() - t,"
        " 'CPU', time.process_time() - c)\n"
        "sys.exit(code)\n"
    )
    config = Path(__file__).resolve().parents[1] / "pretrain_xtb.yaml"
    command = [sys.executable, "-c", code, "--threads", "1", "train", str(config), *overrides, "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    fields = done.stdout.split("RSS_KB")[1].split()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    corpus.unlink()
    return {
        "inputs": [str(p) for p in inputs],
        "copies": copies,
        "corpus_bytes": size,
        "pack_s": round(pack_s, 1),
        "train_steps": records[-1]["steps"],
        "train_wall_s": round(float(fields[2]), 1),
        "train_cpu_s": round(float(fields[4]), 1),
        "peak_rss_bytes": int(fields[0]) * 1024,
        "peak_rss_over_corpus": round(int(fields[0]) * 1024 / size, 3),
        "measure_process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "command": " ".join(command[3:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("ddp", "packed"))
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mlff-scale"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = (
        measure_ddp(args.data[0], args.workdir)
        if args.what == "ddp"
        else measure_packed(args.data, args.gb, args.workdir)
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
