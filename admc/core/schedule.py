"""The time schedule of a sampling run: the points t_0 < t_1 < ... < t_T the solver steps through.

Requires: a number of steps T (uniform grid t_n = n / T on [0, 1]) or an explicit grid (a sequence or a
.npy / .txt file of numbers).
Guarantees: a 1-D float64 array with at least 2 finite, strictly increasing points; bad grids raise
``AdmcError`` naming the offending index (and the file when loaded from one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from admc.core import limits
from admc.core.array_files import read_npy
from admc.core.errors import AdmcError
from admc.core.safe_files import read_text


def _validate_grid(values: np.ndarray, source: str) -> np.ndarray:
    if values.ndim != 1:
        raise AdmcError(f"{source}: a time grid must be a 1-D list of numbers, got shape {values.shape}")
    if values.size < 2:
        raise AdmcError(f"{source}: a time grid needs at least 2 points, got {values.size}")
    for index, value in enumerate(values):
        if not np.isfinite(value):
            raise AdmcError(f"{source}: time grid point {index} is not finite ({value})")
    for index in range(1, values.size):
        if not values[index] > values[index - 1]:
            raise AdmcError(
                f"{source}: time grid is not strictly increasing at index {index} "
                f"(t[{index - 1}] = {values[index - 1]!r}, t[{index}] = {values[index]!r})"
            )
    return values


def time_grid(
    steps: int | None = None, grid: Sequence[float] | None = None, source: str = "time grid"
) -> np.ndarray:
    """Uniform grid of ``steps`` steps on [0, 1] or the validated user ``grid``; give exactly one."""
    if (steps is None) == (grid is None):
        which = "neither" if steps is None else "both"
        raise AdmcError(f"{source}: give either a number of steps or an explicit grid, not {which}")
    if grid is not None:
        try:
            values = np.array(grid, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise AdmcError(f"{source}: time grid is not a list of numbers ({error})") from None
        return _validate_grid(values, source)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise AdmcError(f"{source}: the number of steps must be a positive integer, got {steps!r}")
    # n / T rather than linspace so every point is the correctly rounded quotient.
    return np.arange(int(steps) + 1, dtype=np.float64) / float(steps)


def load_grid(path: str | Path) -> np.ndarray:
    """Read a time grid from a .npy file (never pickled objects) or a whitespace/comma separated text file
    (regular files of bounded size only; see ``admc.core.safe_files``)."""
    path = Path(path)
    if path.suffix == ".npy":
        values = read_npy(path, "time grid", dimensions=1)
    elif path.suffix in (".txt", ".csv", ""):
        text = read_text(path, limits.TEXT_FILE_BYTES, "time grid")
        try:
            values = np.array([float(item) for item in text.replace(",", " ").split()], dtype=np.float64)
        except ValueError as error:
            raise AdmcError(f"{path}: cannot read time grid ({error})") from None
    else:
        raise AdmcError(f"{path}: unknown time grid format '{path.suffix}'; use .npy or .txt")
    if values.size > limits.STEPS + 1:
        raise AdmcError(f"{path}: time grid has {values.size} points, more than {limits.STEPS + 1}")
    return time_grid(grid=np.asarray(values, dtype=np.float64), source=str(path))
