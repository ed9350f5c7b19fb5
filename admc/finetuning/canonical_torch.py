"""The canonical ADM network's affine forms as torch functions of the source model's weights.

Why by probing: canonicalisation (``passes/canonicalize.py``) folds linear ops, residuals, glue and time
embeddings into node matrices with numpy algebra, so it is not differentiable. Every node's pre-activation is
affine in the node's atoms (σ of earlier nodes, the state x and tanh(x)) and its constant part depends on t
alone, for any weights: that is what canonicalisation checks. So the same graph, evaluated in torch with each
atom's value replaced by a probe (``graph_torch.TorchGraph`` overrides), gives each node's matrices as the
differences of its pre-activation between unit probes and the zero probe, and its bias and time terms at any t
as its pre-activation at the zero probe: one batched evaluation, exact to rounding, autograd through it. The
structure (which op is which node, which atoms a node reads) is the compiler's own, recorded while the numpy
canonicaliser runs, never re-derived.

Condition inputs: where a value computed from conditions (and t) alone enters the state-dependent network, the
compiler makes it a boundary atom ``condition:k`` (``passes/condition_interface.py``). The recorder notes which
graph value each boundary is; the probe feeds that value probe columns like an activation's output (so its
matrices come out like any atom's), and :meth:`CanonicalProbe.boundary_values` evaluates the same graph values
for given conditions and times in torch (an embedding table is a weight like any other).

Requires: a ``Graph`` with identified inputs (condition inputs among them, if any). Guarantees:
:class:`CanonicalProbe` ``.evaluate(parameters, times)`` returns per node (and ``output``) the matrix of every atom
it reads (boundary atoms included) and its constant part at each time; with the source's own weights they equal
the compiled canonical network's to rounding (``program_torch`` checks the program); ``.boundary_values`` gives
each boundary's per-sample value [B, features] as the compiler's conditioning interface computes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from admc.finetuning.graph_torch import TorchGraph, condition_tensors
from admc.ir.adm import IDENTITY, STATE, Atom
from admc.ir.affine import Form
from admc.ir.condition import ConditionValue
from admc.ir.graph import Graph
from admc.passes import canonicalize as canonical_pass
from admc.passes import fuse_algebraic_sigmoid

OUTPUT = "output"


class _RecordingCanonicaliser(canonical_pass._Canonicaliser):
    """The compiler's canonicaliser, noting which op's output is which atom and which op input is which
    node's pre-activation (the structure the probe reuses)."""

    def __init__(self, *arguments):
        super().__init__(*arguments)
        self.atom_values: dict[str, Atom] = {}  # op output name -> the atom it is
        self.node_inputs: dict[str, str] = {}  # node name -> the value its pre-activation is
        self.condition_names: dict[int, str] = {}  # id of a condition value meeting the state -> its graph name

    def _apply(self, op, arguments):
        if any(isinstance(argument, Form) for argument in arguments):
            self.condition_names.update((id(argument), name) for argument, name in zip(arguments, op.inputs,
                                                                                      strict=False)
                                        if isinstance(argument, ConditionValue))
        before = len(self.nodes)
        result = super()._apply(op, arguments)
        if op.op_type in canonical_pass.ACTIVATION_OPS and isinstance(result, Form) and len(result.terms) == 1:
            self.atom_values[op.outputs[0]] = next(iter(result.terms))
            if len(self.nodes) > before:
                self.node_inputs[self.nodes[-1].name] = op.inputs[0]
        return result


@dataclass
class CanonicalForms:
    """Per node name (and ``output``): {atom: matrix [size, atom size]} and the constant part [S, size]."""

    matrices: dict[str, dict[Atom, torch.Tensor]]
    constants: dict[str, torch.Tensor]


class CanonicalProbe:
    """The probe of one source graph (see the module docstring)."""

    def __init__(self, graph: Graph, activations: tuple[str, ...], reads: Mapping[str, list[Atom]],
                 sizes: Mapping[Atom, int]):
        """``reads``: node name → the atoms the compiled node reads; ``sizes``: each atom's width."""
        fused, _ = fuse_algebraic_sigmoid.apply(graph)
        recorder = _RecordingCanonicaliser(fused, activations, "the target")
        recorder.run()
        self.graph = fused
        # boundary atom name ("condition:k") -> (the graph value it is, its shape after the batch)
        self.boundaries = {name: (recorder.condition_names[id(value)], value.shape)
                           for name, value in recorder.conditions.boundaries.items()}
        self.prepared: dict[torch.dtype, TorchGraph] = {}  # the graph sorted and its constants converted, per dtype
        self.atom_values = recorder.atom_values
        self.node_inputs = {**recorder.node_inputs, OUTPUT: fused.outputs[0]}
        self.reads = dict(reads)
        atoms = sorted({atom for read in reads.values() for atom in read} | set(self.atom_values.values()))
        self.columns: dict[Atom, slice] = {}
        start = 0
        for atom in atoms:
            self.columns[atom] = slice(start, start + sizes[atom])
            start += sizes[atom]
        self.width = start
        shape = next(entry.shape for entry in fused.inputs if entry.name == fused.time_input)
        self.time_rank = len(shape)

    def evaluate(self, parameters: Mapping[str, torch.Tensor], times: np.ndarray,
                 dtype: torch.dtype = torch.float64) -> CanonicalForms:
        """Every node's matrices and constant parts for ``parameters`` (autograd through them)."""
        times = np.asarray(times, dtype=np.float64)
        rows = 1 + self.width + len(times)
        probe = torch.zeros(rows, self.width, dtype=dtype)
        probe[1:1 + self.width] = torch.eye(self.width, dtype=dtype)
        time = torch.zeros(rows, dtype=dtype)
        time[1 + self.width:] = torch.as_tensor(times, dtype=dtype)
        time = time.reshape(-1, 1) if self.time_rank == 2 else time
        linear = self.columns.get(Atom(STATE, IDENTITY))
        dimension = next(entry.shape[1] for entry in self.graph.inputs if entry.name == self.graph.state_input)
        state = probe[:, linear] if linear is not None else torch.zeros(rows, int(dimension), dtype=dtype)
        overrides = {name: probe[:, self.columns[atom]] for name, atom in self.atom_values.items()}
        # Condition values are replaced at their boundaries, so the condition inputs themselves are zeros here.
        inputs = {self.graph.state_input: state, self.graph.time_input: time,
                  **condition_tensors(self.graph, {}, rows, dtype)}
        for atom_name, (value_name, shape) in self.boundaries.items():
            if Atom(atom_name, IDENTITY) not in self.columns:  # a boundary no compiled node reads
                continue
            columns = probe[:, self.columns[Atom(atom_name, IDENTITY)]].reshape(rows, *shape)
            (inputs if value_name in inputs else overrides)[value_name] = columns
        values = self._prepared(dtype).run(parameters, inputs, overrides)
        matrices, constants = {}, {}
        for node, read in self.reads.items():
            value = values[self.node_inputs[node]].reshape(rows, -1)
            base = value[0]
            unit = value[1:1 + self.width] - base  # [width, size]: row j is the response to unit probe j
            matrices[node] = {atom: unit[self.columns[atom]].T for atom in read}
            constants[node] = value[1 + self.width:]
        return CanonicalForms(matrices, constants)

    def _prepared(self, dtype: torch.dtype) -> TorchGraph:
        if dtype not in self.prepared:
            self.prepared[dtype] = TorchGraph(self.graph, dtype)
        return self.prepared[dtype]

    def boundary_values(self, parameters: Mapping[str, torch.Tensor], times: torch.Tensor,
                        conditions: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each boundary atom's value [B, features] for per-sample ``times`` [B] and ``conditions`` (autograd
        through the weights of the condition subgraph)."""
        rows, dtype = times.shape[0], times.dtype
        dimension = next(entry.shape[1] for entry in self.graph.inputs if entry.name == self.graph.state_input)
        time = times.reshape(-1, 1) if self.time_rank == 2 else times.reshape(-1)
        inputs = {self.graph.state_input: torch.zeros(rows, int(dimension), dtype=dtype), self.graph.time_input: time,
                  **condition_tensors(self.graph, conditions, rows, dtype)}
        values = self._prepared(dtype).run(parameters, inputs)
        return {name: values[value_name].to(dtype).reshape(rows, -1)
                for name, (value_name, _) in self.boundaries.items()}
