"""Small sweeps: the spline encoding's n_bins, size s and smoothness weight lambda; then the optimiser.

Gao et al. 2022 state none of these. Each variant trains EGNN on rMD17 ethanol
split 0 for the same short budget; the table gives validation force MAE
(meV/A, EMA weights) and test metrics. Usage:

    python examples/sweep_spline.py [--grid encoding|optimisation] [--epochs 30] [--workers 2] [--out runs/sweep]
"""

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

BASE = "examples/rmd17_ethanol.yaml"
ENCODING_VARIANTS: dict[str, list[str]] = {
    "bins64_s32_lam0.01": ["model.encoding_options.n_bins=64"],
    "bins16_s32_lam0.01": ["model.encoding_options.n_bins=16"],
    "bins128_s32_lam0.01": ["model.encoding_options.n_bins=128"],
    "bins64_s16_lam0.01": ["model.encoding_size=16"],
    "bins64_s64_lam0.01": ["model.encoding_size=64"],
    "bins64_s32_lam0": ["model.encoding_options.n_bins=64", "train.loss_weights.smoothness=0.0"],
    "bins64_s32_lam0.1": ["model.encoding_options.n_bins=64", "train.loss_weights.smoothness=0.1"],
    "bins64_s32_lam1": ["model.encoding_options.n_bins=64", "train.loss_weights.smoothness=1.0"],
}
# With the encoding chosen (16 bins, s = 32, lambda = 0.01): the optimiser settings.
OPTIMISATION_VARIANTS: dict[str, list[str]] = {
    "lr2e-3_bs16_wF100": [],
    "lr5e-3_bs16_wF100": ["train.lr=5.0e-3"],
    "lr2e-3_bs8_wF100": ["train.batch_size=8"],
    "lr2e-3_bs16_wF1000": ["train.loss_weights.forces=1000.0"],
}
GRIDS = {"encoding": ENCODING_VARIANTS, "optimisation": OPTIMISATION_VARIANTS}


def run_variant(name: str, overrides: list[str], epochs: int, out: str, data: str | None) -> dict:
    import torch

    torch.set_num_threads(1)
    from mlff.training import load_config, train

    extra = [f"train.epochs={epochs}", f"output_dir={out}/{name}", "train.max_minutes=0"]
    if data:
        extra.append(f"data.path={data}")
    result = train(load_config(BASE, overrides + extra), progress=False)
    return {"variant": name, "best_val_force_mae_mev_per_a": result.best_val_force_mae, "test": result.test_metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument("--data", default=None, help="dataset path (default: the config's)")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="encoding")
    args = parser.parse_args()
    variants = GRIDS[args.grid]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_variant, n, o, args.epochs, args.out, args.data) for n, o in variants.items()]
        rows = [future.result() for future in futures]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "sweep.json").write_text(json.dumps(rows, indent=2))
    print(f"{'variant':24s} {'val F MAE':>10s} {'test F MAE':>11s} {'test E MAE':>11s}")
    for row in rows:
        test = row["test"]
        print(
            f"{row['variant']:24s} {row['best_val_force_mae_mev_per_a']:10.2f} "
            f"{test['force_mae_mev_per_a']:11.2f} {test['energy_mae_mev']:11.2f}"
        )


if __name__ == "__main__":
    main()
