"""Which target kinds have a digital twin, and how a sweep runs one chip of it.

Requires: a verified bundle whose target kind is listed in :data:`TWINS`.
Guarantees: :func:`run_twin` runs the kind's twin through its public entry points only (the twin class, the
non-idealities class's ``from_mapping``) with the bundle's own non-idealities overridden by ``overrides``
(nested mapping, merged like a target's ``inherits:``) and the chip's ``seed`` (its static errors and read
noise); it returns the twin's result. A new target kind with a twin is one entry here.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from admc.bundle.store import Bundle
from admc.targets.description_schema import deep_merge

# target kind -> (module, twin class, module of its non-idealities, non-idealities class)
TWINS: dict[str, tuple[str, str, str, str]] = {
    "aoc": ("admc.targets.aoc.twin", "AocTwin", "admc.targets.aoc.nonidealities", "NonIdealities"),
}


def has_twin(kind: str) -> bool:
    return kind in TWINS


def _attribute(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def chip_nonidealities(bundle: Bundle, overrides: dict) -> Any:
    """The bundle's non-idealities with ``overrides`` merged in."""
    target = bundle.manifest["target"]
    _, _, module, name = TWINS[target["kind"]]
    return _attribute(module, name).from_mapping(deep_merge(target.get("nonidealities", {}), overrides))


def run_twin(bundle: Bundle, noise: np.ndarray, overrides: dict, seed: int, options: dict) -> Any:
    """One chip: ``options`` are the twin's mode, loop_iterations and repeats (None: the twin's default)."""
    module, name, _, _ = TWINS[bundle.manifest["target"]["kind"]]
    twin_class = _attribute(module, name)
    twin = twin_class(bundle, chip_nonidealities(bundle, overrides), seed=seed, mode=options.get("mode", "discrete"),
                      loop_iterations=options.get("loop_iterations"), repeats=options.get("repeats"))
    return twin, twin.run(noise)
