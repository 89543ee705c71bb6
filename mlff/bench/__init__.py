"""Benchmarks that write JSON: speed of energy+force calls (more to come: stability, ablation)."""
