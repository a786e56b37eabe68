"""The package version (kept in step with pyproject.toml and CITATION.cff by a test)."""

__version__ = "0.1.0"
