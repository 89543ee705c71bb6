"""The shipped MD protocols (installed as the data package `mlff.protocols`; see mlff.resources)."""
