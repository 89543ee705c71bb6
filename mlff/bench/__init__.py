"""Benchmarks, each a library call behind an `mlff bench` subcommand; each writes JSON and prints a table.

- `speed`: energy+force calls per second of potential files (the deployment path).
- `openmm`: MD steps/s through OpenMM's TorchForce, a PythonForce and ASE.
- `md`: steps/s, ns/day and atom-steps/s of the MD engines (torch with R replicas, OpenMM, ASE).
- `stability`: the MD17 stability table (MDsim protocol: stable time, h(r) MAE) of shipped potentials.
- `ablation`: the encoding ablation of Gao et al. 2022, Table 1, beside the paper's numbers (`paper`).
- `train`: speed of the training step of several configs on the same data.
"""
