"""Example training configs and scripts (installed as the data package `mlff.examples`; see mlff.resources)."""
