"""Data sets and readers. Everything returns plain numpy arrays in a ``Dataset``."""
from .builtin import BUILTIN, digits, pinwheel, sine
from .core import Dataset, load, split
from .readers import read_array

__all__ = ["BUILTIN", "Dataset", "digits", "load", "pinwheel", "read_array", "sine", "split"]
