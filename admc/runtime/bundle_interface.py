"""Read a bundle's conditioning interface back: what a host needs to run the program for new conditions.

Requires: a verified bundle (``admc.bundle.store.Bundle``). Guarantees: ``read_interface`` returns the
``ConditioningInterface`` the bundle was built with, in the stored program's voltage units; a bundle
without a ``conditions`` section reads as the empty interface (no inputs, no parts). The boundary values a
part reads are evaluated by the bundled source model's own condition subgraph (graph IR semantics), loaded
only when some part reads them; the injection matrices are the stored payloads. A malformed section, or a
part reading a value the source model does not provide, is an ``AdmcError`` naming the manifest.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.frontends.model_file import import_model
from admc.frontends.signature import ConditionInput
from admc.ir.condition import NULL_SUFFIX, ConditionValue
from admc.passes.canonicalize import canonicalize
from admc.passes.condition_interface import ConditionPart
from admc.runtime.conditioning import ConditioningInterface

# What a bundle built from an unconditional model holds in place of its (absent) ``conditions`` section.
UNCONDITIONED = {"inputs": [], "distribution": {}, "interface": {"parts": []}, "guidance": None}


def read_interface(bundle: Bundle) -> ConditioningInterface:
    """The bundle's conditioning interface (empty for a program without condition inputs)."""
    section = bundle.manifest.get("conditions") or UNCONDITIONED
    try:
        inputs = tuple(ConditionInput.from_dict(entry) for entry in section["inputs"])
        guidance = section.get("guidance")
        boundaries = cache(lambda: source_boundaries(bundle, inputs, guidance))
        parts = [_read_part(bundle, entry, boundaries()) for entry in section["interface"]["parts"]]
        read = {part.source: boundaries()[part.source] for part in parts}
        blocks = guidance["blocks"] if guidance else {}
        weight = float(guidance["weight"]) if guidance else None
    except (KeyError, TypeError, ValueError) as error:
        raise AdmcError(f"{bundle.path}/manifest.json: malformed conditions section ({error!r})") from None
    return ConditioningInterface(inputs, read, parts, weight, blocks, dict(section.get("distribution", {})))


def source_boundaries(bundle: Bundle, inputs: tuple[ConditionInput, ...],
                      guidance: dict | None) -> dict[str, ConditionValue]:
    """The boundary values of the bundled source model's canonical network (and, for guidance, their
    copies at the null condition)."""
    source = bundle.manifest["source"]
    path = bundle.path / source["payload"]
    graph = import_model(path, source["format"])
    graph.state_input, graph.time_input = source["state_input"], source["time_input"]
    graph.condition_inputs = tuple(condition.name for condition in inputs)
    boundaries = dict(canonicalize(graph).conditions)
    kinds = {condition.name: condition.kind for condition in inputs}
    null = {name: np.asarray(value, dtype=np.int64 if kinds.get(name) == "index" else np.float64)
            for name, value in (guidance or {}).get("null", {}).items()}
    boundaries.update({name + NULL_SUFFIX: value.at_fixed_conditions(null)
                       for name, value in list(boundaries.items()) if null})
    return boundaries


def _read_part(bundle: Bundle, entry: dict, boundaries: dict[str, ConditionValue]) -> ConditionPart:
    matrix = bundle.array(entry["payload"])
    value = boundaries.get(entry["source"])
    if value is None or value.features != matrix.shape[1]:
        raise AdmcError(f"{bundle.path}/manifest.json: condition part {entry['payload']} reads "
                        f"'{entry['source']}', which the bundled source model does not provide with "
                        f"{matrix.shape[1]} features")
    return ConditionPart(entry["group"], entry["source"], matrix, entry["scale_class"], entry.get("guidance", ""))
