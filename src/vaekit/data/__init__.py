"""Data sets and readers. Everything returns plain numpy arrays in a ``Dataset``."""

from .builtin import BUILTIN, digits, pinwheel, sine
from .core import Dataset, split
from .disk import DiskArray
from .idx import read_idx, write_idx
from .readers import read_array, read_path
from .sources import load
from .tables import Schema, read_table

__all__ = [
    "BUILTIN",
    "Dataset",
    "DiskArray",
    "Schema",
    "digits",
    "load",
    "pinwheel",
    "read_array",
    "read_idx",
    "read_path",
    "read_table",
    "sine",
    "split",
    "write_idx",
]
