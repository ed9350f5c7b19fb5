"""Silence what native solver libraries print straight to the process's standard output.

HiGHS (through highspy, behind cvxpy's MILP interface) prints a banner to file descriptor 1 when a solver
object is constructed, before any option can switch logging off. admc's standard output carries results
(``wrote ...``, JSON of ``inspect``), so a solve runs with descriptor 1 pointed at the null device.
Guarantees: descriptor 1 and ``sys.stdout`` are restored on exit, also when the body raises.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

STANDARD_OUTPUT = 1  # the descriptor native code writes to, whatever object ``sys.stdout`` is at the time


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    sys.stdout.flush()
    try:
        saved = os.dup(STANDARD_OUTPUT)
    except OSError:  # no standard output to guard
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), STANDARD_OUTPUT)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, STANDARD_OUTPUT)
        os.close(saved)
