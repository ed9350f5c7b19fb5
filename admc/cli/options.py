"""Validated command-line values: argparse ``type=`` functions and output-path checks (issue 13, item 2).

Every function here either returns the parsed value or raises ``argparse.ArgumentTypeError`` with the
accepted range stated, so a bad option is refused while parsing — before any work is done. Adding an option
to the CLI stays a one-hunk change: ``parser.add_argument("--x", type=integer(1, 100))``.

Output paths are checked as the parser reads them too: a file output needs an existing parent directory
and must not be a directory; a directory output (a bundle, ``--report``, ``--dump-ir``) must not be an
existing file (nor, for a bundle, an existing directory that is not a bundle) and needs an existing parent.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

from admc.core import limits

ArgumentError = argparse.ArgumentTypeError


def integer(minimum: int, maximum: int):
    """An int in [minimum, maximum] (range stated on refusal)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise ArgumentError(f"expected an integer in [{minimum}, {maximum}], got {text!r}") from None
        if not minimum <= value <= maximum:
            raise ArgumentError(f"expected an integer in [{minimum}, {maximum}], got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def positive_float(maximum: float = 1e12):
    """A finite float in (0, maximum]: NaN, infinities, zero and negatives are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ArgumentError(f"expected a number in (0, {maximum:g}], got {text!r}") from None
        if not math.isfinite(value) or not 0 < value <= maximum:
            raise ArgumentError(f"expected a finite number in (0, {maximum:g}], got {text}")
        return value

    parse.__name__ = "number"
    return parse


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": limits.KIB, "M": limits.MIB, "G": limits.GIB, "T": 1024 * limits.GIB}


def memory_size(text: str) -> int:
    """A byte count such as ``8G``, ``512MiB`` or ``1000000`` (at least 64 MiB)."""
    match = _SIZE.match(text)
    if not match:
        raise ArgumentError(f"expected a size such as 8G or 512M, got {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if not limits.MIB * 64 <= value <= 1024 ** 5:
        raise ArgumentError(f"expected a size between 64M and 1024T, got {text!r}")
    return int(value)


STEPS = integer(1, limits.STEPS)
FP_ITERATIONS = integer(1, limits.FP_ITERATIONS)
LOOP_ITERATIONS = integer(1, limits.LOOP_ITERATIONS)
SAMPLES = integer(1, limits.SAMPLES)
REPEATS = integer(1, limits.REPEATS)
SEED = integer(0, limits.SEED_MAX)
FINETUNE_STEPS = integer(1, 1_000_000)
WORKERS = integer(1, 4096)


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _check_parent(path: Path) -> None:
    parent = _parent(path)
    if not parent.exists():
        raise ArgumentError(f"{path}: the parent directory {parent} does not exist")
    if not parent.is_dir():
        raise ArgumentError(f"{path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArgumentError(f"{path}: the directory {parent} is not writable")


def output_file(text: str) -> str:
    """A file to (over)write: its parent exists; it is not a directory or another non-regular file."""
    path = Path(text)
    if not text or path.name in ("", ".", ".."):
        raise ArgumentError(f"{text!r} is not a file name")
    _check_parent(path)
    if path.is_dir():
        raise ArgumentError(f"{path}: is a directory, expected a file name")
    if path.exists() and not path.is_file():
        raise ArgumentError(f"{path}: exists and is not a regular file")
    return text


def output_directory(text: str) -> str:
    """A directory to create or fill: not an existing file; its parent exists."""
    path = Path(text)
    if not text or path.name in ("", ".", ".."):
        raise ArgumentError(f"{text!r} is not a directory name")
    _check_parent(path)
    if path.exists() and not path.is_dir():
        raise ArgumentError(f"{path}: exists and is not a directory")
    return text


def new_directory(text: str) -> str:
    """A directory that must not exist yet (``--dump-ir``): nothing of the user's is overwritten."""
    output_directory(text)
    if Path(text).exists() and any(Path(text).iterdir()):
        raise ArgumentError(f"{text}: exists and is not empty")
    return text


def output_bundle(text: str) -> str:
    """A bundle directory: new, or an existing bundle (replaced atomically); anything else is refused."""
    output_directory(text)
    path = Path(text)
    if path.exists() and not (path / "manifest.json").is_file():
        raise ArgumentError(f"{path}: exists and is not an admc bundle; refusing to overwrite it")
    return text


REPORT_FILES = frozenset({"verify.json", "report.md", "samples.png", "nrmse.png", "residuals.png"})


def output_report(text: str) -> str:
    """A ``verify --report`` directory: new, empty, or an earlier report (which is replaced)."""
    output_directory(text)
    path = Path(text)
    if path.exists() and not {entry.name for entry in path.iterdir()} <= REPORT_FILES:
        raise ArgumentError(f"{path}: exists and holds files that are not an admc report; refusing to replace it")
    return text


def input_file(text: str) -> str:
    """A file to read; existence and type are checked by the reader (which names the file)."""
    if not text:
        raise ArgumentError("expected a file name, got ''")
    return text


def schedule_arguments(parser, solver_default: str = "the target's") -> None:
    """``--solver``, ``--steps`` and ``--fp-iterations``: the schedule a build compiles (``admc build`` and
    ``admc reference``, and ``admc finetune``, whose fitted structure must be the one the user builds)."""
    from admc.passes.solvers import SOLVER_ALIASES, SOLVERS

    parser.add_argument("--solver", default=None,
                        help=f"{' | '.join(SOLVERS)} (aliases: {', '.join(SOLVER_ALIASES)}; default: {solver_default})")
    parser.add_argument("--steps", type=STEPS, default=16, metavar="T", help="uniform grid t_n = n/T (default 16)")
    parser.add_argument("--fp-iterations", type=FP_ITERATIONS, metavar="N",
                        help="fixed-point iterations per implicit step, the explicit-Euler warm start counted as the "
                             "first")
