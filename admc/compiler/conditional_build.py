"""Conditional models in the driver and the bundle: guidance, the conditioning interface, the manifest's
``conditions`` section, and reading it back.

Requires: a source whose signature lists condition inputs. Guarantees:
- ``prepare_network`` returns the canonical network to pack: unchanged without guidance, the guided twin
  chain with ``--guidance W`` (``passes.condition_interface.guided_network``); bad guidance options are
  refused naming the option.
- ``conditions_section`` writes (for an interface already in the program's voltage units) what a host
  needs to run the program for new conditions: the condition
  inputs, their declared distribution (uniform over classes by default for a class index read through an
  embedding table), the injection parts (in the program's voltage units) as payloads, the interface size,
  and the guidance weight with the blocks that carry it and whether it can change per run.
- ``read_interface`` rebuilds the ``ConditioningInterface`` from a verified bundle: the boundary values
  are evaluated by the bundled source model's own condition subgraph (graph IR semantics), the injection
  matrices are the stored payloads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from admc.bundle.store import Bundle, npy_bytes
from admc.core.errors import AdmcError
from admc.frontends.signature import ConditionInput, Signature
from admc.ir.adm import AdmNetwork
from admc.ir.condition import NULL_SUFFIX, is_null_source
from admc.ir.graph import Graph
from admc.ir.program import BlockProgram
from admc.passes.condition_interface import (
    ConditionPart,
    condition_parts,
    guidance_blocks,
    guided_network,
    interface_size,
)
from admc.runtime.condition_drive import ConditioningInterface

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


def prepare_network(network: AdmNetwork, signature: Signature, guidance: float | None,
                    null_conditions: dict[str, np.ndarray] | None) -> AdmNetwork:
    if guidance is None:
        if null_conditions:
            raise AdmcError("--null-condition needs --guidance W (classifier-free guidance)")
        return network
    if not signature.conditions:
        raise AdmcError(f"{network.source}: --guidance needs a conditional model; this one has no condition "
                        "inputs (name them with --condition)")
    if not null_conditions:
        names = ", ".join(signature.condition_names)
        raise AdmcError(f"--guidance needs --null-condition NAME=VALUE for the unconditional copy (conditions: "
                        f"{names}; VALUE a class index or 'zeros')")
    if not np.isfinite(guidance) or guidance < 0:
        raise AdmcError(f"--guidance must be a finite number ≥ 0, got {guidance}")
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


def conditions_section(interface: ConditioningInterface, distribution: dict,
                       null_conditions: dict[str, np.ndarray] | None, target: Any,
                       cost: dict | None, size: dict) -> tuple[dict, dict[str, bytes]]:
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
    section: dict = {
        "inputs": [condition.to_dict() for condition in interface.inputs],
        "distribution": distribution,
        "interface": {"evaluated_by": "the bundled source model's condition subgraph (graph IR semantics)",
                      "boundaries": boundaries, "parts": parts, "size": size},
        "guidance": None,
    }
    if interface.guidance is not None:
        adjustable = runtime_guidance(target) and interface.guidance != 0.0
        section["guidance"] = {
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
    return section, payloads


def read_interface(bundle: Bundle) -> ConditioningInterface | None:
    """The bundle's conditioning interface, or None for an unconditional program."""
    section = bundle.manifest.get("conditions")
    if not section:
        return None
    from admc.frontends.onnx_import import import_onnx
    from admc.frontends.torch_export import load_pt2
    from admc.passes.canonicalize import canonicalize

    source = bundle.manifest["source"]
    try:
        inputs = tuple(ConditionInput.from_dict(entry) for entry in section["inputs"])
        path = bundle.path / source["payload"]
        graph = import_onnx(path) if source["format"] == "onnx" else load_pt2(path)
        graph.state_input, graph.time_input = source["state_input"], source["time_input"]
        graph.condition_inputs = tuple(condition.name for condition in inputs)
        boundaries = dict(canonicalize(graph).conditions)
        guidance = section.get("guidance")
        if guidance:
            null = {name: np.asarray(value, dtype=np.int64 if _kind(inputs, name) == "index" else np.float64)
                    for name, value in guidance["null"].items()}
            boundaries.update({name + NULL_SUFFIX: value.at_fixed_conditions(null)
                               for name, value in list(boundaries.items())})
        parts = []
        for entry in section["interface"]["parts"]:
            matrix = bundle.array(entry["payload"])
            value = boundaries.get(entry["source"])
            if value is None or value.features != matrix.shape[1]:
                raise AdmcError(f"{bundle.path}/manifest.json: condition part {entry['payload']} reads "
                                f"'{entry['source']}', which the bundled source model does not provide with "
                                f"{matrix.shape[1]} features")
            parts.append(ConditionPart(entry["group"], entry["source"], matrix, entry["scale_class"],
                                       entry.get("guidance", "")))
        blocks = guidance["blocks"] if guidance else {}
        weight = float(guidance["weight"]) if guidance else None
    except (KeyError, TypeError, ValueError) as error:
        raise AdmcError(f"{bundle.path}/manifest.json: malformed conditions section ({error!r})") from None
    return ConditioningInterface(inputs, boundaries, parts, weight, blocks, dict(section.get("distribution", {})))


def _kind(inputs: tuple[ConditionInput, ...], name: str) -> str:
    return next((condition.kind for condition in inputs if condition.name == name), "vector")


def apply_runtime_guidance(program: BlockProgram, interface: ConditioningInterface, bundle: Bundle,
                           guidance: float | None) -> BlockProgram:
    """The program with the guided blocks rescaled for run-time guidance ``guidance`` (ideal execution)."""
    if guidance is None or interface.guidance is None or guidance == interface.guidance:
        return program
    check_runtime_guidance(bundle, interface, guidance)
    from dataclasses import replace

    from admc.passes.condition_interface import guidance_factors

    factors = guidance_factors(interface.guidance, guidance)
    blocks = list(program.blocks)
    for role, indices in interface.guided_blocks.items():
        for index in indices:
            blocks[index] = replace(blocks[index], matrix=factors[role] * blocks[index].matrix)
    return replace(program, blocks=blocks)


def check_runtime_guidance(bundle: Bundle, interface: ConditioningInterface | None, guidance: float | None) -> None:
    if guidance is None:
        return
    section = (bundle.manifest.get("conditions") or {}).get("guidance")
    if interface is None or not section:
        raise AdmcError(f"{bundle.path}: --guidance needs a bundle built with --guidance (classifier-free "
                        "guidance); this one has no unconditional copy")
    if not np.isfinite(guidance) or guidance < 0:
        raise AdmcError(f"--guidance must be a finite number ≥ 0, got {guidance}")
    if guidance != interface.guidance and not section.get("runtime_adjustable"):
        raise AdmcError(f"{bundle.path}: the guidance weight {interface.guidance} is fixed in this bundle "
                        f"({section.get('why', 'not adjustable')}); rebuild with --guidance {guidance}")


def rescale_twin_gains(twin: Any, bundle: Bundle, interface: ConditioningInterface, guidance: float | None) -> None:
    """Run-time guidance on the AOC twin: the guided tiles' gains β scaled by the guidance ratios."""
    if guidance is None or interface.guidance is None or guidance == interface.guidance:
        return
    check_runtime_guidance(bundle, interface, guidance)
    from admc.passes.condition_interface import guidance_factors

    factors = guidance_factors(interface.guidance, guidance)
    role_of = {f"block_{index:04d}": role for role, indices in interface.guided_blocks.items() for index in indices}
    gain = bundle.manifest["target"].get("gain", {})
    for tile in bundle.manifest["aoc"]["tiles"]:
        role = role_of.get(tile["block"])
        if role:
            ports = slice(tile["output_port_start"], tile["output_port_start"] + tile["row_stop"] - tile["row_start"])
            twin.beta[tile["module"], ports] *= factors[role]
            peak = float(twin.beta[tile["module"], ports].max()) if tile["row_stop"] > tile["row_start"] else 0.0
            if "beta_max" in gain and peak > float(gain["beta_max"]) * (1 + 1e-12):
                raise AdmcError(f"{bundle.path}: --guidance {guidance} needs gain β = {peak:.4g} on "
                                f"{tile['block']} (module {tile['module']}), above the target's beta_max "
                                f"{float(gain['beta_max']):.4g}; rebuild with --guidance {guidance}")
    twin._operators.clear()


def parse_condition_options(signature: Signature, null_conditions: dict | list[str] | None,
                            distributions: dict | list[str] | None) -> tuple[dict | None, dict | None]:
    """``NAME=VALUE`` / ``NAME=SPEC`` strings (the CLI's) → dictionaries; dictionaries pass through."""
    from admc.runtime.condition_drive import parse_distribution, parse_null

    if isinstance(null_conditions, list | tuple):
        null_conditions = dict(parse_null(text, signature.conditions) for text in null_conditions)
    elif null_conditions is not None:
        known = {condition.name: condition for condition in signature.conditions}
        for name in null_conditions:
            if name not in known:
                raise AdmcError(f"null condition '{name}' is not a condition input "
                                f"({', '.join(known) or 'the model has none'})")
        null_conditions = {name: np.asarray(value, dtype=np.int64 if known[name].kind == "index" else np.float64)
                           .reshape(known[name].shape) for name, value in null_conditions.items()}
    if isinstance(distributions, list | tuple):
        distributions = dict(parse_distribution(text, signature.conditions) for text in distributions)
    return null_conditions, distributions


CALIBRATION_SAMPLES = 256
CALIBRATION_SEED = 0


def calibration_drive(compiled: Any, samples: int = CALIBRATION_SAMPLES, seed: int = CALIBRATION_SEED):
    """The conditioning drive for the state-scaling pass's calibration run (its noise: ``samples`` seeded
    Gaussian draws), with conditions drawn from the declared distribution (standard normal for vector
    conditions without one), so the voltage scales cover the injected conditions; None if unconditional."""
    interface = compiled.condition_interface
    if interface is None:
        return None
    from admc.runtime.condition_drive import sample_conditions

    declared = interface.distribution
    distribution = {condition.name: declared.get(condition.name, {"kind": "normal"})
                    for condition in interface.inputs}
    conditions = sample_conditions(interface.inputs, distribution, samples, seed + 1)
    return interface.drive_function(compiled.program, interface.check(conditions, samples))


def attach_conditions(compiled: Any, unguided_program: BlockProgram | None,
                      null_conditions: dict | None) -> None:
    """The ``conditions`` manifest section, its payloads and the report's interface size and module cost."""
    # From here on the interface is in the lowered program's voltage units, as the bundle stores it.
    interface = compiled.condition_interface = compiled.condition_interface.scaled(compiled.program)
    distribution = interface.distribution
    size = interface_size(compiled.network, interface.parts)
    cost = (module_cost(compiled.program, unguided_program, compiled.target)
            if unguided_program is not None else None)
    if cost is not None and "modules_used" in compiled.report:
        cost["modules_used_guided"] = compiled.report["modules_used"]
    section, payloads = conditions_section(interface, distribution, null_conditions,
                                           compiled.target, cost, size)
    compiled.extra_sections["conditions"] = section
    compiled.extra_payloads.update(payloads)
    compiled.report["conditioning"] = {"inputs": [condition.to_dict() for condition in interface.inputs],
                                       "interface": size, "guidance": interface.guidance, "module_cost": cost}
