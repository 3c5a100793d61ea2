"""hgbench's version, in a leaf module of its own so that every layer may read it (pyproject.toml reads it too)."""

__version__ = "0.3.0"
