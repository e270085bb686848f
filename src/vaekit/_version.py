"""The package version, in a module of its own so nothing has to import the package ``__init__``."""

__version__ = "0.1.0"
