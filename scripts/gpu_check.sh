#!/usr/bin/env bash
# GPU check of the compiled fast path (issue 22), for a session with one CUDA GPU; a few minutes.
# Run from the repository root with the venv active: bash scripts/gpu_check.sh
# Writes JSON and logs to $OUT (default ./gpu_out). Not run on the CPU machine that wrote it.
set -uo pipefail
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/torch.txt"

# 1. gpu-marked tests (no host synchronisation per compiled step) and the physics tests on CUDA.
python -m pytest -q -m "gpu or not slow" tests/test_compiled.py 2>&1 | tail -20 | tee "$OUT/tests_compiled.txt"
python - <<'PY' 2>&1 | tee "$OUT/physics_cuda.txt"
# Physics on CUDA: the file on the GPU = on the CPU; compiled MD = eager MD over 100 float64 steps.
import numpy as np, torch
from ase import Atoms
from mlff.dynamics import MDSettings
from mlff.dynamics.compiled import CompiledTorchEngine
from mlff.dynamics.torch_engine import TorchEngine
from mlff.export import load_potential
cpu, gpu = load_potential("aspirin", dtype="float64"), load_potential("aspirin", device="cuda", dtype="float64")
reference = cpu.metadata["reference"]
atoms = Atoms(numbers=reference["atomic_numbers"], positions=np.array(reference["start_positions"])[0])
e0, f0 = cpu.energy_and_forces(atoms.numbers, atoms.positions)
e1, f1 = gpu.energy_and_forces(atoms.numbers, atoms.positions)
print("cuda vs cpu: energy", abs(e1 - e0), "eV, forces", np.abs(f1 - f0).max(), "eV/A")
settings = MDSettings(temperature_k=300.0, thermostat="nve", timestep_fs=0.5, seed=1)
eager, compiled = TorchEngine(gpu, [atoms] * 4, settings), CompiledTorchEngine(gpu, [atoms] * 4, settings)
eager.advance(100); compiled.advance(100)
print("compiled vs eager after 100 float64 steps:", (compiled.state.positions - eager.state.positions).abs().max().item(), "A")
PY

# 2. AOTInductor packages compiled here (for this GPU and torch), then their per-call speed.
for molecule in ethanol aspirin; do
    timeout 900 mlff export "potentials/$molecule.pt" --format aoti --device cuda --no-card \
        -o "$OUT/$molecule-cuda.pt2" > "$OUT/export_$molecule.txt" 2>&1
    timeout 300 mlff bench speed "potentials/$molecule.pt" "$OUT/$molecule-cuda.pt2" --device cuda \
        -o "$OUT/speed_$molecule.json" > "$OUT/speed_$molecule.txt" 2>&1
done

# 3. MD throughput, aspirin x1 and x1024: eager vs compiled (torch.compile, CUDA graphs) vs AOTI vs torch-sim.
timeout 900 mlff bench md potentials/aspirin.pt --device cuda --dtype float32 --steps 200 --rounds 3 --warmup 20 \
    --engines torch:1 torch:1024 torch-compiled:1 torch-compiled:1024 torch-sim:1024 \
    -o "$OUT/bench_md_aspirin_cuda.json" 2>&1 | tail -15 | tee "$OUT/bench_md.txt"
if [ -f "$OUT/aspirin-cuda.pt2" ]; then
    timeout 600 mlff bench md "$OUT/aspirin-cuda.pt2" --device cuda --steps 200 --rounds 3 --warmup 20 \
        --engines torch:1 torch:1024 -o "$OUT/bench_md_aspirin_cuda_aoti.json" 2>&1 | tail -8 \
        | tee "$OUT/bench_md_aoti.txt"
fi
ls -la "$OUT"
