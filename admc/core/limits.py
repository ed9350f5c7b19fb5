"""Every size, count and memory limit admc enforces on its inputs, in one place (issue 13, item 2).

The numbers are generous for the models admc targets (MLPs of a few thousand channels, a few hundred steps)
and small enough that no input can make admc hang, fill the disk or ask the kernel for tens of GiB.
Memory is estimated before large allocations and refused past ``--max-memory`` (:func:`require_memory`).
"""

from __future__ import annotations

import os

from admc.core.errors import AdmcError

KIB, MIB, GIB = 1024, 1024 ** 2, 1024 ** 3

MANIFEST_BYTES = 64 * MIB  # a bundle's manifest.json
MANIFEST_NESTING = 64  # deepest nesting of lists/objects in a manifest (a real one is < 10 deep)
PAYLOAD_BYTES = 4 * GIB  # one payload of a bundle
TEXT_FILE_BYTES = 16 * MIB  # target YAML, calibration files, grid text files
YAML_NESTING = 64
MODEL_BYTES = 4 * GIB  # an .onnx / .pt2 source model
ARRAY_FILE_BYTES = 4 * GIB  # noise and grid .npy files

STEPS = 100_000  # --steps and grid points
FP_ITERATIONS = 10_000  # --fp-iterations
PHASES = 200_000  # phases of a whole schedule (steps × phases per step): each is a manifest entry
LOOP_ITERATIONS = 1_000_000  # --loop-iterations (twin / ideal executor per closed phase)
SAMPLES = 10_000_000  # verify --samples (memory is checked separately)
REPEATS = 1_000_000  # twin repeats
SEED_MAX = 2 ** 63 - 1

DEFAULT_MAX_MEMORY_FRACTION = 0.75
DEFAULT_MAX_MEMORY_CAP = 16 * GIB


def default_max_memory() -> int:
    """¾ of physical memory, at most 16 GiB (where the machine does not say, 16 GiB)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_MAX_MEMORY_CAP
    return int(min(DEFAULT_MAX_MEMORY_CAP, DEFAULT_MAX_MEMORY_FRACTION * physical))


_max_memory = default_max_memory()


def set_max_memory(limit: int) -> None:
    """Set the process's memory budget (the CLI's ``--max-memory``)."""
    global _max_memory
    _max_memory = int(limit)


def max_memory() -> int:
    return _max_memory


def format_bytes(count: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"


class MemoryLimitError(AdmcError):
    """Work refused because its estimated memory exceeds ``--max-memory``."""


def require_memory(needed: float, what: str) -> None:
    """Refuse (MemoryLimitError) before allocating ``needed`` bytes for ``what`` past the budget."""
    if needed > _max_memory:
        raise MemoryLimitError(f"{what} needs about {format_bytes(needed)}, more than the memory limit "
                        f"{format_bytes(_max_memory)} (--max-memory)")
