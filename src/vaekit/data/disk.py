"""Arrays larger than memory: rows of an ``.npy`` file read from disk on demand.

``DiskArray`` looks enough like a numpy array for vaekit (``shape``, ``len``, slicing, row
gathers, ``np.asarray``) but never holds the file in memory: each access reads the rows it
needs with positioned reads (``preadv``) straight into a fresh buffer and returns them as
float32. It deliberately does not use a memory map for the reads: pages of a mapped file count
towards the process's resident memory, and on current Linux kernels a single random row can
map a whole large folio (up to megabytes) of the page cache, so a memory-mapped gather over an
epoch makes resident memory grow with the file. Plain reads go through the operating system's
page cache (which keeps hot data for the next epoch) without charging it to the process.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError


def npy_header(f, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header bytes) of the ``.npy`` stream ``f`` (at its start), read
    without allocating the array. Whatever is wrong with the header (bad magic, an unbalanced
    bracket, a shape that is not a tuple of integers, an unknown dtype) is one ``DataError``."""
    import numpy.lib.format as npy_format

    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        else:  # format 3.0 (utf-8 field names) has no public reader
            shape, fortran, dtype = npy_format._read_array_header(f, version)
        offset = f.tell()
    except (OSError, zlib.error, zipfile.BadZipFile):
        raise  # reading failed (a damaged archive member, a disk error), not the header's content
    except Exception as err:  # numpy raises ValueError, tokenize.TokenError, SyntaxError, EOFError, ...
        text = (err.args[0] if err.args and isinstance(err.args[0], str) else str(err)).strip().splitlines()
        raise DataError(
            f"cannot read {name}: its .npy header is broken "
            f"({text[0][:160] if text else type(err).__name__}); save it again with numpy.save"
        ) from None
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise DataError(f"{name} has a broken .npy header (shape {shape!r}); save it again with numpy.save")
    return tuple(shape), bool(fortran), np.dtype(dtype), int(offset)


def check_npy_dtype(dtype: np.dtype, name: str) -> None:
    """Only real numbers (and booleans) are data: refuse objects, text, records and complex numbers."""
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(
            f"{name} holds {'Python objects' if dtype.hasobject else 'records'} (dtype {dtype}), not a numeric "
            "array; save a plain float or integer array"
        )
    if dtype.kind == "c":
        raise DataError(
            f"{name} holds complex numbers (dtype {dtype}); vaekit models real values: save x.real, or the "
            "real and imaginary parts as separate features"
        )
    if dtype.kind not in "biuf":
        raise DataError(f"{name} does not hold a numeric array (dtype {dtype})")


class _RowFile:
    """One open ``.npy`` file: where its rows start, their shape and dtype, and positioned reads."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.row_items = math.prod(shape[1:])
        self.row_bytes = self.row_items * dtype.itemsize
        nbytes = offset + shape[0] * self.row_bytes
        size = path.stat().st_size
        if size < nbytes:
            raise DataError(f"{path.name} is truncated: its header promises {nbytes} bytes, the file has {size}")
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except (OSError, AttributeError, TypeError):
            pass

    def _read_into(self, buf: memoryview, position: int) -> None:
        done = 0
        while done < len(buf):
            if hasattr(os, "preadv"):
                n = os.preadv(self.fd, [buf[done:]], position + done)
            else:  # pragma: no cover - platforms without preadv
                os.lseek(self.fd, position + done, os.SEEK_SET)
                n = os.readv(self.fd, [buf[done:]])
            if n <= 0:
                raise DataError(f"{self.path.name} ended early: it was truncated while being read")
            done += n

    def read(self, rows: np.ndarray | slice) -> np.ndarray:
        """Rows (a slice, or sorted row numbers) as float32, (n, *shape[1:])."""
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(self.shape[0])
            runs = [(start, max(start, stop))]
        else:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.size == 0:
                runs = []
            else:  # consecutive row numbers become one read
                breaks = np.flatnonzero(np.diff(rows) != 1) + 1
                starts = np.concatenate([[0], breaks])
                ends = np.concatenate([breaks, [len(rows)]])
                runs = [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, ends)]
        n = sum(b - a for a, b in runs)
        raw = np.empty((n, self.row_items), dtype=self.dtype)
        view = memoryview(raw.view(np.uint8).reshape(-1)) if raw.size else None
        at = 0
        for a, b in runs:
            size = (b - a) * self.row_bytes
            if size:
                self._read_into(view[at : at + size], self.offset + a * self.row_bytes)
            at += size
        return raw.astype(np.float32, copy=False).reshape(n, *self.shape[1:])


class DiskArray:
    """A read-only, row-addressable float32 view of an ``.npy`` file (C order), optionally of
    a subset of its rows (``index``) and optionally thresholded (``threshold``: rows come back
    as ``row > threshold``, static binarisation without a copy of the file). Nothing of the
    file stays in memory between reads."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        index: np.ndarray | None = None,
        threshold: float | None = None,
        _file: _RowFile | None = None,
    ) -> None:
        if _file is None:
            path = Path(path)
            try:
                with open(path, "rb") as f:
                    shape, _, dtype, offset = npy_header(f, path.name)
            except OSError as err:
                raise DataError(f"cannot read {path}: {err.strerror or err}") from None
            check_npy_dtype(dtype, path.name)
            if math.prod(shape) == 0:
                raise DataError(f"{path.name} holds no examples")
            need, size = offset + math.prod(shape) * dtype.itemsize, path.stat().st_size
            if size < need:
                raise DataError(
                    f"{path.name} is truncated: its header promises {shape} values ({need} bytes), the file has {size}"
                )
            try:
                header = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as err:
                raise DataError(
                    f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
                ) from None
            if not isinstance(header, np.memmap):
                raise DataError(f"{path.name} cannot be memory-mapped")
            _file = _from_memmap(header)
            del header
        self._m = _file
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self.threshold = threshold

    @classmethod
    def from_memmap(cls, x: np.memmap) -> DiskArray:
        """Wrap an array from ``np.load(path, mmap_mode="r")`` (or ``np.memmap``)."""
        return cls(x.filename, _file=_from_memmap(x))

    # -- array-like surface ------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._m.path

    @property
    def shape(self) -> tuple[int, ...]:
        n = self._m.shape[0] if self.index is None else len(self.index)
        return (n, *self._m.shape[1:])

    @property
    def ndim(self) -> int:
        return len(self._m.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def file_dtype(self) -> np.dtype:
        return self._m.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DiskArray({str(self.path)!r}, shape={self.shape}, file dtype {self._m.dtype})"

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            k = int(key) + (len(self) if key < 0 else 0)
            return self.rows(np.array([k]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if self.index is None and step == 1:
                return self._finish(self._m.read(slice(start, stop)))
            return self.rows(np.arange(start, stop, step))
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        if key.ndim == 1 and np.issubdtype(key.dtype, np.integer):
            return self.rows(key)
        raise TypeError("a DiskArray is indexed by rows only: an int, a slice or an array of row numbers")

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate(list(self.chunks())) if len(self) else np.empty(self.shape, np.float32)
        return out if dtype is None else out.astype(dtype)

    # -- rows ----------------------------------------------------------------------------
    def rows(self, idx: np.ndarray) -> np.ndarray:
        """float32 copies of rows ``idx`` (numbers within this view), in that order. Rows are
        read in file order (a sorted gather), which is what the disk likes."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        file_rows = idx if self.index is None else self.index[idx]
        order = np.argsort(file_rows, kind="stable")
        out = np.empty((len(idx), *self._m.shape[1:]), dtype=np.float32)
        out[order] = self._m.read(file_rows[order])
        return self._finish(out)

    def _finish(self, out: np.ndarray) -> np.ndarray:
        if self.threshold is not None:
            out = (out > self.threshold).astype(np.float32)
        return out

    def chunks(self, rows: int | None = None) -> Iterator[np.ndarray]:
        """Consecutive blocks of rows (about 16 MB each unless ``rows`` says otherwise)."""
        rows = rows or max(1, (16 * 2**20) // (4 * max(1, math.prod(self._m.shape[1:]))))
        for start in range(0, len(self), rows):
            yield self[start : start + rows]

    def subset(self, index: np.ndarray) -> DiskArray:
        index = np.asarray(index, dtype=np.int64)
        base = index if self.index is None else self.index[index]
        return DiskArray(self.path, index=base, threshold=self.threshold, _file=self._m)

    def binarized(self, threshold: float) -> DiskArray:
        return DiskArray(self.path, index=self.index, threshold=float(threshold), _file=self._m)

    def __getstate__(self):
        return {"path": str(self.path), "index": self.index, "threshold": self.threshold}

    def __setstate__(self, state):
        fresh = DiskArray(state["path"], index=state["index"], threshold=state["threshold"])
        self.__dict__.update(fresh.__dict__)


def _from_memmap(x: np.memmap) -> _RowFile:
    if x.filename is None or not _whole(x):
        raise DataError(
            "only a whole memory-mapped file can be streamed (np.load(path, mmap_mode='r')), not a view of one"
        )
    if x.ndim < 1:
        raise DataError(f"{Path(x.filename).name} holds a scalar, not rows of data")
    if not x.flags.c_contiguous:
        raise DataError(
            f"{Path(x.filename).name} is stored in Fortran order; rows can only be streamed from "
            "C order (save it with np.save(path, np.ascontiguousarray(x)))"
        )
    check_npy_dtype(np.dtype(x.dtype), Path(x.filename).name)
    return _RowFile(Path(x.filename), int(x.offset), tuple(int(s) for s in x.shape), np.dtype(x.dtype))


def _whole(x: np.memmap) -> bool:
    import mmap

    return isinstance(x.base, mmap.mmap)


def is_streamed(x) -> bool:
    """True for data that are read from disk batch by batch rather than held in memory."""
    return isinstance(x, (DiskArray, np.memmap))


def as_streamed(x):
    """A whole C-order ``np.memmap`` -> ``DiskArray`` (read without mapping pages into memory);
    anything else unchanged."""
    if isinstance(x, np.memmap) and x.filename is not None and _whole(x) and x.flags.c_contiguous:
        return DiskArray.from_memmap(x)
    return x
