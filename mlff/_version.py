"""The package version, in one place (read by pyproject and the potential metadata)."""

__version__ = "0.1.0"
