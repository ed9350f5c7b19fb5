"""Condition-interface pass: split the condition-only subgraphs off as the program's digital conditioning
interface, and build the classifier-free-guided twin chain.

Requires: a graph whose ``condition_inputs`` are identified (class index, condition vector, guidance scale).
Guarantees:
- During canonicalisation (``ConditionBoundaries``): every value computed from conditions and t only
  (never x) stays a ``ConditionValue``; where one enters a state-dependent value through an addition, a
  concatenation or a Gemm bias it becomes a boundary atom ``condition:k`` of the canonical network (linear
  algebra after the boundary is folded into the node matrices as usual). A condition value that would
  multiply a state-dependent value (a condition-dependent weight, which a fixed weight image cannot hold)
  is refused naming the node, its op and the condition inputs.
- ``guided_network``: the network computing (1 + W)·f(x, t, c) − W·f(x, t, ∅): the hidden chain twice (the
  second copy, ``<node>_null``, reads the boundaries at the null condition), both reading the same state;
  the output rows combine the copies with (1 + W) and −W. Its fixed points are the guided implicit steps.
- ``condition_parts``: per program row group, the matrices injecting each boundary's per-sample value, with
  their scale class (``fixed`` for hidden rows, ``step`` for the state rows, ``feedback`` for folded rows)
  and guidance role; ``guidance_blocks``: which blocks carry (1 + W) and which −W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from admc.core.errors import AdmcError
from admc.ir.adm import IDENTITY, STATE, AdmNetwork, AdmNode, Atom
from admc.ir.affine import Form
from admc.ir.condition import (
    CONDITION_PREFIX,
    NULL_SUFFIX,
    ConditionContext,
    ConditionValue,
    is_condition_source,
    is_null_source,
)
from admc.ir.graph import Op
from admc.ir.program import FEEDBACK, FIXED, STEP, BlockProgram

ADDITIVE_OPS = ("Add", "Sub", "Concat")
NULL_COPY = "_null"
CONDITIONAL, NULL = "conditional", "null"


class ConditionBoundaries:
    """The canonicaliser's view of the condition inputs: their values and the boundary atoms made so far."""

    def __init__(self, canonicaliser) -> None:
        self.canonicaliser = canonicaliser
        graph = canonicaliser.graph
        self.boundaries: dict[str, ConditionValue] = {}
        self._atoms: dict[int, str] = {}
        trial_conditions = {}
        for name in graph.condition_inputs:
            graph_input = next(entry for entry in graph.inputs if entry.name == name)
            shape = tuple(int(size) for size in graph_input.shape[1:])
            canonicaliser.values[name] = ConditionValue.condition_input(name, shape)
            dtype = np.int64 if graph_input.integer else np.float64
            trial_conditions[name] = np.zeros((1, *shape), dtype=dtype)
        self.trial = ConditionContext(np.zeros(1), trial_conditions)

    def apply(self, op: Op, arguments: list):
        canonicaliser = self.canonicaliser
        forms = [argument for argument in arguments if isinstance(argument, Form)]
        if not forms:
            try:
                return ConditionValue.from_op(op, arguments, self.trial)
            except AdmcError:
                raise canonicaliser.fail(op, "op not supported (on the condition path)") from None
            except Exception as error:  # numpy shape errors in a malformed graph
                raise canonicaliser.fail(op, f"cannot evaluate the condition subgraph ({error})") from None
        if op.op_type in ADDITIVE_OPS:
            converted = [self.form(argument, op, forms[0]) if isinstance(argument, ConditionValue) else argument
                         for argument in arguments]
            return canonicaliser._apply(op, converted)
        if (op.op_type == "Gemm" and len(arguments) > 2 and isinstance(arguments[2], ConditionValue)
                and not any(isinstance(argument, ConditionValue) for argument in arguments[:2])):
            product = canonicaliser._apply(Op(op.name, op.op_type, op.inputs[:2], op.outputs, op.attributes,
                                              op.source_op), arguments[:2])
            bias = self.form(arguments[2], op, product).scaled(np.asarray(float(op.attributes.get("beta", 1.0))))
            return product.plus(bias)
        names = sorted(set().union(*(argument.inputs for argument in arguments
                                     if isinstance(argument, ConditionValue))))
        raise canonicaliser.fail(
            op, f"condition input(s) {', '.join(names) or '(time-and-condition value)'} scale a value that "
                "depends on the state x: a condition-dependent weight cannot live in a fixed weight image, "
                "and the target does not support condition-dependent weights")

    def form(self, value: ConditionValue, op: Op, like: Form) -> Form:
        """The boundary atom carrying ``value``, broadcast like ``like`` (``Add``/``Sub``) or on its own
        features (``Concat``)."""
        columns = value.features
        if op.op_type == "Concat":
            if len(value.shape) > 1:
                raise self.canonicaliser.fail(op, f"condition value of shape [B, {', '.join(map(str, value.shape))}]"
                                                  ": only [B, features] values can be concatenated")
            features, matrix = columns, np.eye(columns)
        else:
            features = like.features
            if columns == features:
                matrix = np.eye(features)
            elif columns == 1:
                matrix = np.ones((features, 1))
            else:
                raise self.canonicaliser.fail(op, f"condition value of shape [B, {columns}] does not broadcast "
                                                  f"to {features} features")
        key = id(value)
        if key not in self._atoms:
            self._atoms[key] = f"{CONDITION_PREFIX}{len(self._atoms)}"
            self.boundaries[self._atoms[key]] = value
        shape = (features,) if op.op_type == "Concat" else like.shape
        return Form({Atom(self._atoms[key], IDENTITY): matrix}, np.zeros(features), [], shape)


# ----------------------------------------------------------------------------- classifier-free guidance


def guided_network(network: AdmNetwork, weight: float, null_values: dict[str, np.ndarray]) -> AdmNetwork:
    """(1 + W)·f(x, t, c) − W·f(x, t, ∅) as one network: two hidden chains reading the same state."""
    rename = {node.name: f"{node.name}{NULL_COPY}" for node in network.nodes}

    def null_atom(atom: Atom) -> Atom:
        if atom.source == STATE:
            return atom
        if is_condition_source(atom.source):
            return Atom(atom.source + NULL_SUFFIX, atom.activation)
        return Atom(rename[atom.source], atom.activation)

    null_nodes = [AdmNode(rename[node.name], node.size,
                          {null_atom(atom): matrix for atom, matrix in node.terms.items()},
                          node.bias, list(node.time_terms), node.activation) for node in network.nodes]
    terms: dict[Atom, np.ndarray] = {}
    for atom, matrix in network.output.terms.items():
        if atom.source == STATE:
            # (1 + W)·M − W·M: the state's own terms are the same in both copies.
            terms[atom] = matrix
            continue
        terms[atom] = (1.0 + weight) * matrix
        terms[null_atom(atom)] = -weight * matrix
    output = AdmNode(network.output.name, network.output.size, terms, network.output.bias,
                     list(network.output.time_terms))
    conditions = dict(network.conditions)
    conditions.update({name + NULL_SUFFIX: value.at_fixed_conditions(null_values)
                       for name, value in network.conditions.items()})
    return AdmNetwork(network.state_dimension, [*network.nodes, *null_nodes], output, network.source, conditions)


def guidance_role(column_group: str, null_groups: set[str], conditional_groups: set[str]) -> str:
    if column_group in null_groups or is_null_source(column_group):
        return NULL
    if column_group in conditional_groups or is_condition_source(column_group):
        return CONDITIONAL
    return ""


def guidance_blocks(program: BlockProgram, network: AdmNetwork) -> dict[str, list[int]]:
    """Indices of the blocks that carry (1 + W) (``conditional``) and −W (``null``): the velocity's blocks
    (``step``, and ``feedback`` when folded) reading the last hidden values of either copy."""
    null_groups = {node.name for node in network.nodes if node.name.endswith(NULL_COPY)}
    conditional_groups = {node.name for node in network.nodes} - null_groups
    roles: dict[str, list[int]] = {CONDITIONAL: [], NULL: []}
    for index, block in enumerate(program.blocks):
        if block.scale_class in (STEP, FEEDBACK):
            role = guidance_role(block.column_group, null_groups, conditional_groups)
            if role:
                roles[role].append(index)
    return roles


def guidance_factors(built: float, requested: float) -> dict[str, float]:
    """Ratios turning a program built for guidance ``built`` into one for ``requested``."""
    if requested == built:
        return {CONDITIONAL: 1.0, NULL: 1.0, "": 1.0}
    if built == 0.0:
        raise AdmcError("the program was built with --guidance 0: its unconditional copy's output weights are "
                        "zero, so the guidance cannot be changed at run time; rebuild with a non-zero --guidance")
    return {CONDITIONAL: (1.0 + requested) / (1.0 + built), NULL: requested / built, "": 1.0}


# ----------------------------------------------------------------------------- injection parts


@dataclass
class ConditionPart:
    """``matrix @ value(source)`` enters ``group`` each iteration, scaled by ``scale_class`` and, for the
    guided velocity's rows, by the guidance factor of ``guidance`` (``conditional``/``null``/"")."""

    group: str
    source: str
    matrix: np.ndarray
    scale_class: str
    guidance: str = ""


def condition_parts(network: AdmNetwork, program: BlockProgram, guided: bool) -> list[ConditionPart]:
    """The program's per-sample condition injections (see module docstring)."""
    from admc.passes.fold_input import LINEAR_STATE

    names = {group.name for group in program.groups}
    parts: list[ConditionPart] = []
    for node in network.nodes:
        for atom, matrix in sorted(node.terms.items()):
            if is_condition_source(atom.source):
                if node.name not in names:
                    raise AdmcError(f"internal: condition injection into missing group '{node.name}'")
                parts.append(ConditionPart(node.name, atom.source, matrix, FIXED))
    output_atoms = [(atom, matrix) for atom, matrix in sorted(network.output.terms.items())
                    if is_condition_source(atom.source)]
    if not output_atoms:
        return parts
    if program.layout == "folded-input":
        rows = [program.readout_group]
        for node in network.nodes:
            linear = node.terms.get(LINEAR_STATE)
            if linear is not None:
                for atom, matrix in output_atoms:
                    role = guidance_role(atom.source, set(), set()) if guided else ""
                    parts.append(ConditionPart(node.name, atom.source, linear @ matrix, FEEDBACK, role))
    else:
        rows = [group.name for group in program.groups if group.role == "state"]
    for row in rows:
        for atom, matrix in output_atoms:
            role = guidance_role(atom.source, set(), set()) if guided else ""
            parts.append(ConditionPart(row, atom.source, matrix, STEP, role))
    return parts


def interface_size(network: AdmNetwork, parts: list[ConditionPart]) -> dict:
    """Parameters and multiply-adds of the digital conditioning interface (per sample, per phase)."""
    conditional = {name: value for name, value in network.conditions.items() if not is_null_source(name)}
    once = [value for value in conditional.values() if not value.depends_on_time]
    per_phase = [value for value in conditional.values() if value.depends_on_time]
    operations = frozenset().union(*(value.operations for value in network.conditions.values()))
    once_work = sum(work for _, _, work in frozenset().union(*(value.operations for value in once)))
    phase_work = sum(work for _, _, work in frozenset().union(*(value.operations for value in per_phase)))
    timed = {name for name, value in network.conditions.items() if value.depends_on_time}
    injection_once = sum(int(np.count_nonzero(part.matrix)) for part in parts
                         if not is_null_source(part.source) and part.source not in timed)
    injection_phase = sum(int(np.count_nonzero(part.matrix)) for part in parts
                          if not is_null_source(part.source) and part.source in timed)
    null_work = sum(int(np.count_nonzero(part.matrix)) for part in parts if is_null_source(part.source))
    return {
        "boundaries": len(conditional),
        "boundary_features": int(sum(value.features for value in conditional.values())),
        "parameters": int(sum(parameters for _, parameters, _ in operations)
                          + sum(int(np.count_nonzero(part.matrix)) for part in parts)),
        "multiply_adds_per_sample": int(once_work + injection_once),
        "multiply_adds_per_sample_per_phase": int(phase_work + injection_phase),
        # The null condition's injections are the same for every sample: once per phase time, shared.
        "null_condition_multiply_adds_per_phase": int(null_work),
        "depends_on_time": bool(per_phase),
    }
