"""Reading user array files (noise, time grids) as untrusted input.

Guarantees: :func:`read_npy` returns a real-valued float64 array from a regular ``.npy`` file (no pickles,
no ``.npz`` archives), after checking its header — dtype real numeric (complex, object, string, bool refused),
number of dimensions, non-empty shape, and a data size that matches the file and fits the memory limit — so
a header claiming 10^12 rows is refused before any allocation, and values are finite.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from admc.core import limits
from admc.core.errors import AdmcError
from admc.core.safe_files import read_file


def _header(buffer: io.BytesIO, label: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(buffer)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(buffer)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(buffer)
        raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, SyntaxError, TypeError) as error:
        raise AdmcError(f"{label}: not a .npy array ({error})") from None


def read_npy(path: str | Path, what: str, dimensions: int) -> np.ndarray:
    """A finite float64 array of ``dimensions`` dimensions (each ≥ 1) from a ``.npy`` file."""
    label = str(path)
    content = read_file(path, limits.ARRAY_FILE_BYTES, what)
    if zipfile.is_zipfile(io.BytesIO(content)):
        raise AdmcError(f"{label}: {what} is an .npz archive; give one array as a .npy file")
    buffer = io.BytesIO(content)
    shape, fortran, dtype = _header(buffer, label)
    if dtype.hasobject or dtype.kind not in "fiu":
        raise AdmcError(f"{label}: {what} has dtype {dtype}; expected real numbers (float or integer)")
    if len(shape) != dimensions or any(size < 1 for size in shape):
        raise AdmcError(f"{label}: {what} has shape {shape}; expected {dimensions} dimension(s), none empty")
    count = int(np.prod(shape, dtype=object))
    if count * dtype.itemsize != len(content) - buffer.tell():
        raise AdmcError(f"{label}: {what} header claims shape {shape} ({count * dtype.itemsize} bytes) but the "
                        f"file holds {len(content) - buffer.tell()} bytes of data")
    limits.require_memory(count * 8 * 4, f"{label}: {what} of shape {shape}")
    try:
        array = np.load(io.BytesIO(content), allow_pickle=False).astype(np.float64)
    except (ValueError, OSError) as error:
        raise AdmcError(f"{label}: damaged .npy array ({error})") from None
    if not np.all(np.isfinite(array)):
        raise AdmcError(f"{label}: {what} holds NaN or Inf")
    return array
