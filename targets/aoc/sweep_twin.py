"""One chip of a sweep on the AOC twin: the bundle's non-idealities with the chip's overrides merged in.

Requires: a verified AOC bundle. Guarantees: :func:`make_twin` (the AOC backend's ``make_twin``) builds the
twin through its public constructor with :func:`chip_nonidealities` (the bundle's own non-idealities, the
overrides merged like a description's ``inherits:``), the chip's seed (its static errors and read noise) and
the sweep's twin options.
"""

from __future__ import annotations

from typing import Any

from admc.targets.aoc.nonidealities import NonIdealities
from admc.targets.description_schema import deep_merge


def chip_nonidealities(bundle: Any, overrides: dict) -> NonIdealities:
    """The bundle's non-idealities with ``overrides`` (nested mapping) merged in."""
    return NonIdealities.from_mapping(deep_merge(bundle.manifest["target"].get("nonidealities", {}), overrides))


def make_twin(bundle: Any, overrides: dict, seed: int, options: dict) -> Any:
    """One chip's twin; ``options``: mode, loop_iterations and repeats (None: the twin's default)."""
    from admc.targets.aoc.twin import AocTwin  # torch and the twin load only when a chip runs

    return AocTwin(bundle, chip_nonidealities(bundle, overrides), seed=seed, mode=options.get("mode", "discrete"),
                   loop_iterations=options.get("loop_iterations"), repeats=options.get("repeats"))
