#!/usr/bin/env bash
# The GPU session's one device call (issues 22 and 17), about 9 minutes on one CUDA GPU.
#   1. Training on the GPU (issue 17): first `mlff bench train` of the aspirin step at batch 256, eager
#      against train.compile with and without CUDA graphs (the eager step was all host time, 41 ms on
#      the H200: docs/compiled.md#gpu-session); then one process fine-tunes the shipped aspirin file
#      on rMD17 for TRAIN_MINUTES of wall time (its best.pt comes back).
#   2. Meanwhile: the gpu-marked tests, scripts/gpu_physics.py on the device (finite differences,
#      invariances, periodic supercell and stress, compiled = eager MD), and the AOTInductor packages
#      of ethanol and aspirin compiled there (for that GPU and torch).
#   3. Then, with the GPU otherwise idle, the timings: `mlff bench md` aspirin x1 and x BIG, torch eager,
#      torch-compiled (CUDA graphs), torch-sim, and the AOTI package; `mlff bench speed` TorchScript vs AOTI.
# Every stage has a timeout under a global DEADLINE (seconds), so the results are packed in time.
# Run from the repository root: bash scripts/gpu_check.sh. Wheels of the packages the device image lacks
# in .gpu/whl, the rMD17 files in .gpu/data (both ignored by git; see docs/compiled.md#gpu-session).
# A dry run on the CPU: DEV=cpu TRAIN_MINUTES=0.2 BIG=4 STEPS=5 AOTI=0 OUT=/tmp/gpu bash scripts/gpu_check.sh
set -uo pipefail
START=$(date +%s)
OUT="${OUT:-gpu_out}"
DEV="${DEV:-cuda}"
DEADLINE="${DEADLINE:-540}"
TRAIN_MINUTES="${TRAIN_MINUTES:-4}"
BIG="${BIG:-1024}"
STEPS="${STEPS:-200}"
AOTI="${AOTI:-1}"
EAGER_EXTRA=(${EAGER_EXTRA:-})  # e.g. EAGER_EXTRA="torch-sim:1024"
DATA="${DATA:-.gpu/data}"
WORK="${WORK:-/tmp/gpu_work}"
R="$WORK/results"
mkdir -p "$OUT" "$R" "$WORK/train"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# Seconds left before the deadline, at most $1.
left() { local remaining=$((DEADLINE - ($(date +%s) - START))); ((remaining < $1)) && echo $((remaining > 1 ? remaining : 1)) || echo "$1"; }
stamp() { echo "[$(($(date +%s) - START)) s] $*" | tee -a "$R/timeline.txt"; }

if [ -d .gpu/whl ] && ! python3 -c "import ase" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
fi
if ! command -v mlff > /dev/null; then
    mkdir -p /tmp/bin
    printf '#!/bin/sh\nexec python3 -c "import sys; from mlff.cli.main import main; sys.exit(main())" "$@"\n' > /tmp/bin/mlff
    chmod +x /tmp/bin/mlff
    export PATH="/tmp/bin:$PATH" PYTHONPATH="${PYTHONPATH:-$PWD}"
fi
# Not installed: the data packages that pyproject's package-dir maps into mlff (potentials/, md/, examples/).
if ! python3 -c "import mlff.potentials" 2> /dev/null; then
    ln -sfn ../potentials mlff/potentials && ln -sfn ../md mlff/protocols && ln -sfn ../examples mlff/examples
fi
nvidia-smi > "$R/nvidia-smi.txt" 2>&1
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda')" \
    | tee "$R/versions.txt"
stamp "set up"

# 0. AOTInductor packages for this device and torch, in the background (CPU-heavy compilation).
if [ "$AOTI" = 1 ]; then
    (
        export TORCHINDUCTOR_COMPILE_THREADS=8
        for molecule in ${AOTI_MOLECULES:-aspirin ethanol}; do
            timeout "$(left 200)" mlff export "potentials/$molecule.pt" --format aoti --device "$DEV" --no-card \
                -o "$WORK/$molecule-$DEV.pt2" > "$R/export_aoti_$molecule.txt" 2>&1
            echo "exit $?" >> "$R/export_aoti_$molecule.txt"
        done
    ) &
    EXPORTS=$!
fi

# 1. Training, in the background.
train() {  # name config batch lr [overrides...]
    local name=$1 config=$2 batch=$3 lr=$4
    shift 4
    timeout "$(left $((${TRAIN_MINUTES%.*} * 60 + 150)))" mlff --threads 1 train --no-progress "$config" \
        "data.path=$DATA/rmd17_${name%%_*}.npz" train.device="$DEV" train.batch_size="$batch" train.lr="$lr" \
        train.epochs=100000 train.max_minutes="$TRAIN_MINUTES" train.max_cpu_minutes=0 \
        output_dir="$WORK/train/$name" "$@" > "$R/train_$name.txt" 2>&1
    echo "exit $?" >> "$R/train_$name.txt"
}
TRAINING=()
if [ "${TRAIN:-1}" = 1 ]; then
    # Eager, compiled (train.compile) and compiled with CUDA graphs, batch 256, alternating rounds.
    timeout "$(left 240)" mlff --threads 1 bench train potentials/configs/aspirin.yaml \
        examples/compiled_training/aspirin_compiled.yaml examples/compiled_training/aspirin_cudagraphs.yaml \
        --steps 10 --rounds 3 --warmup 3 --data "$DATA/rmd17_aspirin.npz" \
        --set train.device="$DEV" train.batch_size=256 -o "$R/bench_train_compiled.json" > "$R/bench_train_compiled.txt" 2>&1
    stamp "bench train compiled: exit $?"
    train aspirin_ft256 potentials/configs/aspirin.yaml 256 2.0e-3 init_from=potentials/aspirin.pt train.warmup_epochs=1 &
    TRAINING+=($!)
fi
stamp "training started"

# 2b. Correctness on the device (timings do not matter here).
timeout "$(left 150)" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_compiled.py tests/test_noise.py \
    > "$R/tests_gpu.txt" 2>&1
stamp "gpu tests: $(tail -1 "$R/tests_gpu.txt")"
timeout "$(left 200)" python3 scripts/gpu_physics.py --device "$DEV" -o "$R/gpu_physics.json" > "$R/gpu_physics.txt" 2>&1
stamp "physics: $(tail -1 "$R/gpu_physics.txt")"

[ ${#TRAINING[@]} -gt 0 ] && wait "${TRAINING[@]}"
stamp "training done"
for run in "$WORK"/train/*/; do
    name=$(basename "$run")
    mkdir -p "$R/$name"
    cp "$run"/{best.pt,results.json,config.yaml,metrics.jsonl} "$R/$name/" 2> /dev/null
done
tar -czf "$OUT/train.tar.gz" -C "$R" . && stamp "training results packed"

# 3. Timings, the GPU otherwise idle: compiled (compilation first; the rows still missing), eager with the
#    one-launch Langevin noise (mlff.dynamics.noise; torch-sim's row is in docs/compiled.md), then AOTI.
bench() {  # label seconds potential engines...
    local label=$1 seconds=$2 potential=$3
    shift 3
    timeout "$(left "$seconds")" mlff bench md "$potential" --device "$DEV" --dtype float32 --steps "$STEPS" \
        --rounds 3 --warmup 20 --engines "$@" -o "$R/bench_md_$label.json" > "$R/bench_md_$label.txt" 2>&1
    stamp "bench md $label: exit $?"
}
bench compiled 150 potentials/aspirin.pt torch-compiled:1 "torch-compiled:$BIG"
bench eager 45 potentials/aspirin.pt torch:1 "torch:$BIG" "${EAGER_EXTRA[@]}"
[ -n "${EXPORTS:-}" ] && wait "$EXPORTS" 2> /dev/null
stamp "AOTI exports: $(tail -qn1 "$R"/export_aoti_*.txt 2> /dev/null | tr '\n' ' ')"
if [ -f "$WORK/aspirin-$DEV.pt2" ]; then
    # Load, first and steady calls of the package beside the TorchScript file, printed as they come.
    timeout "$(left 60)" python3 scripts/aoti_calls.py "$WORK/aspirin-$DEV.pt2" potentials/aspirin.pt --device "$DEV" \
        > "$R/aoti_calls.txt" 2>&1
    stamp "aoti calls: exit $?"
    bench aoti_1 40 "$WORK/aspirin-$DEV.pt2" torch:1
    bench aoti_64 40 "$WORK/aspirin-$DEV.pt2" torch:64  # x1024 ran past 75 s on 2026-11-29
fi
for molecule in ethanol aspirin; do
    if [ -f "$WORK/$molecule-$DEV.pt2" ]; then
        timeout "$(left 30)" mlff bench speed "potentials/$molecule.pt" "$WORK/$molecule-$DEV.pt2" --device "$DEV" \
            -o "$R/speed_$molecule.json" > "$R/speed_$molecule.txt" 2>&1
    fi
done
stamp "done"
tar -czf "$OUT/results.tar.gz" -C "$R" --exclude='*.pt' . && ls -la "$OUT"
