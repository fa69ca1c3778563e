"""The package version, in one place: read by ``hf_distill.__version__``, by pyproject.toml and by submodules
that record it in metadata (so they never import the package root)."""

__version__ = "0.1.0"
