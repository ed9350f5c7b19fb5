"""Conditioning in the build: the guidance pass, the conditioning interface, and the manifest's
``conditions`` section.

Every model has a conditioning interface; an unconditional model's is empty (no inputs, no parts), so the
build runs the same passes for every model and the data decide what is written.

Requires: a source signature (its condition inputs, none for an unconditional model). Guarantees:
- ``guide_network`` (the guidance pass) returns the canonical network to pack: unchanged without guidance,
  the guided twin chain with ``--guidance W`` (``passes.condition_interface.guided_network``); bad
  guidance options are refused naming the option, and so is a condition input the velocity does not
  depend on (``check_conditions_used``: verify could draw nothing meaningful for it).
- ``build_interface`` is the interface of the packed program (spine units); ``default_distribution`` the
  distribution verify draws conditions from (declared, else uniform over an embedding table's classes).
- ``conditions_output`` gives, for an interface with inputs, what a host needs to run the program for new
  conditions: the ``conditions`` section (the inputs, their distribution, the injection parts in the
  lowered program's voltage units as payloads, the interface size, and the guidance weight with the blocks
  that carry it and whether it can change per run) and the report's ``conditioning`` entry; for the empty
  interface, nothing (an unconditional bundle has no ``conditions`` section).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from admc.bundle.store import npy_bytes
from admc.compiler.packing import pack_for_target
from admc.core.errors import AdmcError
from admc.frontends.signature import Signature
from admc.ir.adm import AdmNetwork
from admc.ir.condition import is_condition_source, is_null_source
from admc.ir.graph import Graph
from admc.ir.program import BlockProgram
from admc.passes.condition_interface import condition_parts, guidance_blocks, guided_network, interface_size
from admc.runtime.condition_options import check_guidance_options
from admc.runtime.conditioning import ConditioningInterface

GLUE = ("Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten")


def embedding_classes(graph: Graph, name: str) -> int | None:
    """The row count of the embedding table (Gather) a class-index input selects from, if any."""
    aliases = {name}
    for op in graph.topological_ops():
        if op.op_type in GLUE and op.inputs and op.inputs[0] in aliases:
            aliases.add(op.outputs[0])
        elif op.op_type == "Gather" and len(op.inputs) > 1 and op.inputs[1] in aliases:
            table = graph.constants.get(op.inputs[0])
            if table is not None:
                return int(table.shape[int(op.attributes.get("axis", 0))])
    return None


def default_distribution(graph: Graph, signature: Signature, declared: dict[str, dict],
                         null_conditions: dict | None = None) -> dict[str, dict]:
    """Declared distributions, else uniform over the embedding table's rows for a class index (without the
    null token when guidance names the table's last row as the unconditional input)."""
    distribution = {}
    for condition in signature.conditions:
        if condition.name in declared:
            distribution[condition.name] = declared[condition.name]
        elif condition.kind == "index":
            classes = embedding_classes(graph, condition.name)
            null = (null_conditions or {}).get(condition.name)
            if classes is not None and null is not None and int(np.asarray(null).reshape(-1)[0]) == classes - 1:
                classes -= 1
            if classes is not None:
                distribution[condition.name] = {"kind": "uniform", "classes": classes}
    return distribution


def check_conditions_used(network: AdmNetwork, signature: Signature) -> None:
    """Refuse a condition input the canonical network's velocity does not read (an unused model input)."""
    used: set[str] = set()
    for node in [*network.nodes, network.output]:
        for atom in node.terms:
            if is_condition_source(atom.source):
                used |= set(network.conditions[atom.source].inputs)
    unused = [condition.name for condition in signature.conditions if condition.name not in used]
    if unused:
        raise AdmcError(f"{network.source}: input '{unused[0]}' is unused: the velocity does not depend on it, so "
                        "it is a condition with no effect; export the model without this input")


def guide_network(network: AdmNetwork, signature: Signature, guidance: float | None,
                  null_conditions: dict[str, np.ndarray] | None) -> AdmNetwork:
    """The guidance pass: the identity without ``guidance``; with W, (1 + W)·f(x, t, c) − W·f(x, t, ∅)."""
    check_conditions_used(network, signature)
    check_guidance_options(signature.conditions, guidance, null_conditions, network.source)
    if guidance is None:
        return network
    return guided_network(network, float(guidance), null_conditions)


def build_interface(network: AdmNetwork, program: BlockProgram, signature: Signature,
                    guidance: float | None, distribution: dict) -> ConditioningInterface:
    parts = condition_parts(network, program, guided=guidance is not None)
    blocks = guidance_blocks(program, network) if guidance is not None else {}
    return ConditioningInterface(signature.conditions, dict(network.conditions), parts, guidance, blocks,
                                 distribution)


def module_cost(guided: BlockProgram, unguided: BlockProgram, target: Any) -> dict:
    def weights(program: BlockProgram) -> int:
        return int(sum(block.matrix.size for block in program.blocks))

    cost = {"weights_guided": weights(guided), "weights_unguided": weights(unguided),
            "weight_ratio": weights(guided) / max(1, weights(unguided)),
            "state_channels_guided": guided.size, "state_channels_unguided": unguided.size}
    module = getattr(target, "module", None)
    if module is not None:
        def bound(program: BlockProgram) -> int:
            rows = sum(block.matrix.shape[0] for block in program.blocks)
            columns = sum(block.matrix.shape[1] for block in program.blocks)
            return -(-max(rows, columns) // int(module.ports))

        cost["module_lower_bound_guided"] = bound(guided)
        cost["module_lower_bound_unguided"] = bound(unguided)
    return cost


def runtime_guidance(target: Any) -> bool:
    """W can change per run without new images when the target has per-channel gains."""
    gain = getattr(target, "gain", None)
    return True if gain is None else bool(getattr(gain, "per_channel", False))


def guidance_section(interface: ConditioningInterface, null_conditions: dict[str, np.ndarray] | None,
                     target: Any, cost: dict | None) -> dict | None:
    """The ``conditions.guidance`` entry: the weight, the null condition, the blocks carrying W and whether
    W may change per run; None without guidance."""
    if interface.guidance is None:
        return None
    adjustable = runtime_guidance(target) and interface.guidance != 0.0
    return {
        "weight": interface.guidance,
        "null": {name: np.asarray(value).tolist() for name, value in sorted((null_conditions or {}).items())},
        "runtime_adjustable": adjustable,
        "why": ("per-channel gains carry (1 + W) and −W on the velocity's rows: W may change per run "
                "without new images" if adjustable else
                "W is in the weight images: the target has no per-channel gains; rebuild to change W"
                if not runtime_guidance(target) else
                "built with --guidance 0: the unconditional copy's output weights are zero; rebuild with a "
                "non-zero --guidance to change W at run time"),
        "blocks": interface.guided_blocks,
        "module_cost": cost,
    }


def conditions_section(interface: ConditioningInterface, null_conditions: dict[str, np.ndarray] | None,
                       target: Any, cost: dict | None, size: dict) -> tuple[dict, dict[str, bytes]]:
    """The ``conditions`` section of an interface already in the program's voltage units, and its payloads."""
    payloads: dict[str, bytes] = {}
    parts = []
    for index, part in enumerate(interface.parts):
        path = f"conditions/part_{index:04d}.npy"
        payloads[path] = npy_bytes(part.matrix)
        parts.append({"group": part.group, "source": part.source, "scale_class": part.scale_class,
                      "guidance": part.guidance, "payload": path,
                      "rows": int(part.matrix.shape[0]), "columns": int(part.matrix.shape[1])})
    boundaries = [{"atom": name, "features": value.features, "depends_on_time": value.depends_on_time,
                   "inputs": sorted(value.inputs)} for name, value in sorted(interface.boundaries.items())
                  if not is_null_source(name)]
    section = {
        "inputs": [condition.to_dict() for condition in interface.inputs],
        "distribution": interface.distribution,
        "interface": {"evaluated_by": "the bundled source model's condition subgraph (graph IR semantics)",
                      "boundaries": boundaries, "parts": parts, "size": size},
        "guidance": guidance_section(interface, null_conditions, target, cost),
    }
    return section, payloads


@dataclass(frozen=True)
class ConditionsOutput:
    """What conditioning adds to a bundle: manifest sections, payloads and report entries (all empty for
    an unconditional program)."""

    sections: dict = field(default_factory=dict)
    payloads: dict[str, bytes] = field(default_factory=dict)
    report: dict = field(default_factory=dict)


def conditions_output(compiled: Any) -> ConditionsOutput:
    """The conditioning of a compiled program (after every pass ran), in the lowered program's units."""
    interface = compiled.condition_interface.scaled(compiled.program)
    if not interface.inputs:  # an unconditional program: its bundle has no ``conditions`` section
        return ConditionsOutput()
    size = interface_size(compiled.network, interface.parts)
    cost = None
    if interface.guidance is not None:
        unguided = pack_for_target(compiled.canonical_network, bool(compiled.target.linear_channels))
        cost = module_cost(compiled.program, unguided, compiled.target)
        if "modules_used" in compiled.report:
            cost["modules_used_guided"] = compiled.report["modules_used"]
    section, payloads = conditions_section(interface, compiled.null_conditions, compiled.target, cost, size)
    report = {"inputs": [condition.to_dict() for condition in interface.inputs], "interface": size,
              "guidance": interface.guidance, "module_cost": cost}
    return ConditionsOutput({"conditions": section}, payloads, {"conditioning": report})
