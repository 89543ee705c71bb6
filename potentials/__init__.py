"""The shipped potentials (installed as the data package `mlff.potentials`; see mlff.resources)."""
