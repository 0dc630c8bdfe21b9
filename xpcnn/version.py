"""The version, in one place: the package, model files and the CLI read it from here."""

__version__ = "0.1.0"
