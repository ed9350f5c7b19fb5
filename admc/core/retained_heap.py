"""Keep freed memory inside the process while a build runs (glibc), and give it back when the build ends.

Why: a build's passes allocate and free weight-sized arrays one after another (a scaled copy, a quantised
copy, a realised copy: 285 MB each at 36M weights). glibc serves every allocation above its mmap threshold
(32 MB at most) with a fresh mapping and unmaps it on free, so each of those arrays is faulted in page by
page again, in the kernel, however much the process freed a moment before. On the 2-core development VM that
kernel time was most of several passes at 36M weights (canonicalise 0.06 s user against 0.69 s system; state
scaling 0.03 against 0.66) and none at 3.9M, where the arrays fit under the threshold and glibc reuses its heap:
the passes' growth exponents above 1.15 in issue 25 came from there. With the heap retained, canonicalisation
at 36M took 0.07 s (benchmarks/scaling.py; docs/scaling.md has the figures).

Requires: nothing; where the C library is not glibc (musl, macOS, Windows) ``retained_heap`` does nothing.
Guarantees: inside ``with retained_heap():`` every allocation comes from the heap (no per-array mappings) and
freed memory is not trimmed, so a later array of the build reuses pages already faulted in. On exit glibc's
default limits are set again and ``malloc_trim`` returns the free heap to the system. Nested uses keep the
outermost one's scope. glibc adapts its thresholds only until they are first set, so after a build the
process keeps the static defaults (arrays above 128 KiB mapped and unmapped individually).
"""

from __future__ import annotations

import ctypes
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters and glibc's defaults (malloc.h; malloc/malloc.c).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_MAX = 65536
# mallopt takes an int: trimming only once 2 GiB at the heap's top are free, which a build's frees never reach
# in one piece below ~100M weights.
LARGEST_TRIM_THRESHOLD = 2**31 - 1

_depth = 0
_lock = threading.Lock()


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        library = ctypes.CDLL(None)
        library.mallopt.argtypes, library.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        library.malloc_trim.argtypes, library.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return library


@contextmanager
def retained_heap() -> Iterator[None]:
    """Within the block, freed memory stays in the process for the next allocation (see the module)."""
    global _depth
    library = _glibc()
    if library is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            library.mallopt(M_MMAP_MAX, 0)
            library.mallopt(M_TRIM_THRESHOLD, LARGEST_TRIM_THRESHOLD)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                library.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                library.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                library.malloc_trim(0)
