"""IDX files: the format of MNIST and Fashion-MNIST (``train-images-idx3-ubyte``, gzip'd or not).

Layout (LeCun et al.): two zero bytes, a type code, the number of dimensions d, then d
big-endian uint32 sizes, then the values in big-endian C order. Type codes: 0x08 uint8,
0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..limits import require_memory

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_TYPE_CODES = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}


def is_idx(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith((".idx", "-ubyte", ".ubyte")) or "-idx" in name or ".idx" in name


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (plain or ``.gz``), in its own dtype and shape."""
    path = Path(path)
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path.name} is not an IDX file (it must start with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        raise DataError(
            f"{path.name} has unknown IDX type code 0x{code:02X}; known: " + ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        )
    if ndim == 0:
        raise DataError(f"{path.name} declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path.name} is truncated inside its header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[code])
    need = math.prod(shape) * dtype.itemsize
    have = len(raw) - header
    if have < need:
        raise DataError(
            f"{path.name} is truncated: its header promises {shape} values ({need} bytes), the file holds {have}"
        )
    if have > need:
        raise DataError(f"{path.name} has {have - need} bytes after the {shape} values its header declares")
    try:  # the native-order copy and the float32 one made from it
        require_memory(need + 4 * math.prod(shape), f"reading {path.name} (shape {shape})")
    except ValueError as err:
        raise DataError(str(err)) from None
    return (
        np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip'd when the name ends in ``.gz``)."""
    path = Path(path)
    a = np.ascontiguousarray(array)
    if a.dtype.newbyteorder("=") not in _TYPE_CODES:
        raise ValueError(f"IDX cannot hold dtype {a.dtype}; use uint8, int8, int16, int32, float32 or float64")
    code = _TYPE_CODES[a.dtype.newbyteorder("=")]
    body = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    body += a.astype(IDX_TYPES[code]).tobytes()
    if path.name.lower().endswith(".gz"):
        body = gzip.compress(body)
    path.write_bytes(body)
    return path


def labels_beside(path: Path) -> Path | None:
    """The labels file that goes with an images file by MNIST's naming
    (``train-images-idx3-ubyte[.gz]`` -> ``train-labels-idx1-ubyte[.gz]``), if it exists."""
    name = path.name
    if "images" not in name:
        return None
    candidates = {name.replace("images", "labels").replace("idx3", "idx1")}
    candidates |= {c[:-3] if c.endswith(".gz") else c + ".gz" for c in list(candidates)}
    for c in sorted(candidates):
        if (path.parent / c).is_file():
            return path.parent / c
    return None


def load_idx(path: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...] | None, dict]:
    """(x, labels, image_shape, info). 8-bit images (N, H, W) become float32 (N, 1, H, W) in [0, 1]
    (value / 255); other arrays keep their values. A labels file beside the images is read too."""
    a = read_idx(path)
    info: dict = {"path": str(path.resolve()), "idx_dtype": str(a.dtype)}
    image_shape = None
    if a.ndim == 3:  # (N, H, W) images: one grey channel
        image_shape = tuple(a.shape[1:])
        a = a[:, None]
    if a.dtype == np.uint8 and a.ndim == 4:
        x = a.astype(np.float32) / 255.0
        info["levels"] = 256
    else:
        x = a.astype(np.float32)
    labels = None
    lab_path = labels_beside(path)
    if lab_path is not None:
        lab = read_idx(lab_path)
        if lab.ndim != 1 or len(lab) != len(x):
            raise DataError(f"{lab_path.name} holds {lab.shape} labels for {len(x)} images in {path.name}")
        labels = lab.astype(np.int64)
        info["labels_file"] = str(lab_path.resolve())
    return x, labels, image_shape, info
