"""The compiled block program's arrays as torch functions of the source weights, for a fixed structure.

Requires: a lowered ``CompiledProgram`` (``admc.compiler.driver.compile_source``), direct or folded-input
layout, conditional or not, guided or not. Guarantees: :class:`ProgramMap` ``.arrays(parameters)`` gives
the voltage-scaled program's blocks, per-class static injections at the table's times, injection matrices and
condition injection matrices (``conditions_torch``: the guided twin chain's forms with ``--guidance``), built
from the canonical forms (``canonical_torch``) by the packing rules (``passes/pack.py``,
``passes/fold_input.py``: the velocity's rows on the state groups with the ``step`` class, Δt·V·W ``feedback``
blocks for a folded first layer) and the compiled voltage scales (``passes/state_scaling.py``), all fixed. At
construction the arrays for the source's own weights are compared with the compiled program's and a mismatch
(a structure this map does not cover) is an ``AdmcError`` naming the array, so nothing silently differs.
``.condition_drive(parameters, arrays, times, conditions)`` is a conditional program's per-sample drive per scale
class (the boundary values computed in torch from the source weights, the null condition's for guidance).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from admc.core.errors import AdmcError
from admc.finetuning.canonical_torch import OUTPUT, CanonicalProbe
from admc.finetuning.conditions_torch import condition_drive, guided_forms, part_matrix, with_null
from admc.ir.adm import IDENTITY, STATE, Atom
from admc.ir.condition import NULL_SUFFIX
from admc.ir.program import FEEDBACK, FIXED, INJECT, SCALE_CLASSES, STEP, StateGroup

# The probe's float64 differences round at ~1e-16 of the pre-activations; anything beyond this is structure.
MATCH_TOLERANCE = 1e-9
LINEAR_STATE = Atom(STATE, IDENTITY)


def group_atom(group: StateGroup) -> Atom:
    """The atom a column group stands for: the state under its activation, or a hidden node's σ."""
    return Atom(STATE, group.activation) if group.role in ("state", "readout") else Atom(group.name, group.activation)


def _width(network, nodes: Mapping, atom: Atom) -> int:
    """How many columns an atom has: the state's dimension, a boundary's features or a hidden node's size."""
    if atom.source == STATE:
        return network.state_dimension
    if atom.source in network.conditions:
        return network.conditions[atom.source].features
    return nodes[atom.source].size


@dataclass
class ProgramArrays:
    """Scaled program arrays: ``blocks`` in the program's order; ``static`` per class [S, n] at ``times``
    (constant and time parts summed); ``injections`` in the program's order; ``conditions`` the condition
    injection parts' matrices in the interface's order."""

    blocks: list[torch.Tensor]
    static: dict[str, torch.Tensor]
    injections: list[torch.Tensor]
    conditions: list[torch.Tensor]


class ProgramMap:
    """Source weights → program arrays for one compiled structure (see the module docstring)."""

    def __init__(self, compiled, initial: Mapping[str, torch.Tensor]):
        program = compiled.program
        self.program = program
        self.groups = {group.name: group for group in program.groups}
        self.interface, self.null = compiled.condition_interface, compiled.null_conditions or {}
        # The probe reads the network before guidance; the guided copy is made from its forms (conditions_torch).
        network = compiled.canonical_network or compiled.network
        nodes = {node.name: node for node in network.nodes}
        reads = {name: sorted(node.terms) for name, node in nodes.items()}
        reads[OUTPUT] = sorted(network.output.terms)
        sizes = {atom: _width(network, nodes, atom) for read in reads.values() for atom in read}
        self.probe = CanonicalProbe(compiled.source.graph, tuple(compiled.target.activations), reads, sizes)
        self.times = np.asarray(program.static_table.times, dtype=np.float64)
        with torch.no_grad():
            self._check(self.arrays(initial))

    def _scale(self, group: str) -> float:
        return float(self.groups[group].voltage_scale)

    def _feedback_factor(self, group: str, forms) -> torch.Tensor:
        return forms.matrices[group][LINEAR_STATE]

    def arrays(self, parameters: Mapping[str, torch.Tensor]) -> ProgramArrays:
        """The scaled program arrays for ``parameters`` (autograd through them)."""
        forms = self.probe.evaluate(parameters, self.times)
        if self.interface.guidance is not None:
            forms = guided_forms(forms, float(self.interface.guidance))
        blocks = []
        for block in self.program.blocks:
            atom = group_atom(self.groups[block.column_group])
            if block.scale_class == FIXED:
                matrix = forms.matrices[block.row_group][atom]
            elif block.scale_class == STEP:
                matrix = forms.matrices[OUTPUT][atom]
            else:
                matrix = self._feedback_factor(block.row_group, forms) @ forms.matrices[OUTPUT][atom]
            blocks.append(self._scale(block.row_group) * matrix)
        size, count = self.program.size, len(self.times)
        dtype = forms.constants[OUTPUT].dtype
        static = {name: torch.zeros(count, size, dtype=dtype) for name in SCALE_CLASSES}
        parts = {FIXED: [], STEP: [], FEEDBACK: []}
        for group in self.program.groups:
            if group.role in ("state", "readout"):
                parts[STEP].append((group, forms.constants[OUTPUT]))
            elif group.name in forms.constants:
                parts[FIXED].append((group, forms.constants[group.name]))
                if LINEAR_STATE in forms.matrices[group.name]:
                    factor = self._feedback_factor(group.name, forms)
                    parts[FEEDBACK].append((group, forms.constants[OUTPUT] @ factor.T))
        for name, entries in parts.items():
            columns = [torch.zeros(count, size, dtype=dtype)]
            for group, value in entries:
                placed = torch.nn.functional.pad(group.voltage_scale * value,
                                                 (group.offset, size - group.stop))
                columns.append(placed)
            static[name] = torch.stack(columns).sum(0)
        injections = []
        for part in self.program.injections:
            if part.kind == INJECT:
                injections.append(torch.as_tensor(part.matrix, dtype=dtype))
            else:
                injections.append(self._scale(part.group) * self._feedback_factor(part.group, forms))
        conditions = [self._scale(part.group) * part_matrix(part, forms) for part in self.interface.parts]
        return ProgramArrays(blocks, static, injections, conditions)

    def condition_drive(self, parameters: Mapping[str, torch.Tensor], arrays: ProgramArrays, times: torch.Tensor,
                        conditions: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per scale class the conditions' drive [B, n] of samples at ``times`` [B] (``conditions_torch``)."""
        values = self.probe.boundary_values(parameters, times, conditions)
        if self.null:
            nulled = self.probe.boundary_values(parameters, times, with_null(conditions, self.null, len(times)))
            values.update({name + NULL_SUFFIX: value for name, value in nulled.items()})
        return condition_drive(self.program, self.interface.parts, arrays.conditions, values)

    def _check(self, arrays: ProgramArrays) -> None:
        program = self.program
        pairs = [(f"block {index} ({block.row_group} ← {block.column_group})", arrays.blocks[index], block.matrix)
                 for index, block in enumerate(program.blocks)]
        table = program.static_table
        for name in SCALE_CLASSES:
            expected = np.asarray(table.constants.get(name, np.zeros(program.size)))[None, :] + (
                table.time_tables[name] if name in table.time_tables else 0.0)
            pairs.append((f"static injection ({name})", arrays.static[name], np.broadcast_to(
                expected, (len(self.times), program.size))))
        pairs += [(f"injection into {part.group}", arrays.injections[index], part.matrix)
                  for index, part in enumerate(program.injections)]
        pairs += [(f"condition injection of {part.source} into {part.group}", arrays.conditions[index], part.matrix)
                  for index, part in enumerate(self.interface.scaled(program).parts)]
        for what, value, expected in pairs:
            value = value.detach().cpu().numpy()
            if value.shape != np.shape(expected):
                raise AdmcError(f"fine-tuning: {what}: shape {value.shape} differs from the compiled "
                                f"{np.shape(expected)}; this model's structure is not supported yet")
            scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
            error = float(np.max(np.abs(value - expected), initial=0.0))
            if error > MATCH_TOLERANCE * scale:
                raise AdmcError(f"fine-tuning: {what} differs from the compiled program by {error:.3g}; this "
                                "model's structure is not supported yet")
