"""Inside ``retained_heap`` a freed weight-sized array's pages serve the next one without page faults; outside
it (glibc's defaults) the same pattern faults them in again; the scope nests and restores the defaults."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from admc.core import retained_heap as module
from admc.core.retained_heap import retained_heap

pytestmark = pytest.mark.skipif(module._glibc() is None, reason="glibc's allocator only")

SIZE = 64 * 2**20 // 8  # float64 entries of 64 MiB: above glibc's largest mmap threshold (32 MiB)


def _faults_of_second_array() -> int:
    """Minor page faults taken while filling an array allocated right after an equal one was freed."""
    first = np.ones(SIZE)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = np.ones(SIZE)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del second
    return faults


def test_freed_pages_are_reused_inside_and_faulted_again_outside():
    outside = _faults_of_second_array()
    with retained_heap():
        inside = _faults_of_second_array()
    assert inside <= 2 < outside


def test_nested_scopes_restore_the_defaults_once(monkeypatch):
    calls = []

    class Library:
        def mallopt(self, parameter, value):
            calls.append(("mallopt", parameter, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return 1

    monkeypatch.setattr(module, "_glibc", Library)
    with retained_heap():
        with retained_heap():
            pass
        assert calls == [("mallopt", module.M_MMAP_MAX, 0),
                         ("mallopt", module.M_TRIM_THRESHOLD, module.LARGEST_TRIM_THRESHOLD)]
    assert calls[2:] == [("mallopt", module.M_MMAP_MAX, module.DEFAULT_MMAP_MAX),
                         ("mallopt", module.M_TRIM_THRESHOLD, module.DEFAULT_TRIM_THRESHOLD), ("trim", 0)]
