"""Peak resident memory of this process over a stretch of work (Linux), for per-pass memory figures.

Requires nothing. Guarantees: ``reset_peak()`` sets the kernel's high-water mark of this process's resident set
(VmHWM) to its current size, ``peak_bytes()`` reads it, so the peak between the two is what the work in between
held resident at most (everything the process holds, not only what that work allocated). Where the kernel does
not offer these files (not Linux, or a restricted /proc), ``peak_bytes()`` returns None and nothing fails.
"""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> None:
    try:
        _CLEAR_REFS.write_text("5")  # "5" resets the peak resident set size (Linux ≥ 4.0, proc(5))
    except OSError:
        pass


def peak_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
