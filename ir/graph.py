"""The graph IR: the imported network as a graph of ops, before canonicalisation.

Frontends (ONNX, torch.export) translate into this one vocabulary so that everything after import is
frontend-agnostic. Op names follow ONNX (``Gemm``, ``MatMul``, ``Add``, ``Tanh``, ``Concat`` ...); a frontend
maps its own ops onto them and keeps the original op name in ``source_op`` for error messages.

Values are named; constants (weights, folded shapes) live in ``constants`` as float64/int64 numpy arrays.
Every value the network reads at run time is a graph input; the diffusion state ``x`` ([B, d]) and the time
``t`` ([B] or [B, 1]) are identified by the frontend (``state_input`` / ``time_input``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from admc.core.errors import AdmcError


@dataclass(frozen=True)
class Op:
    """One operation: ``outputs = op_type(inputs; attributes)``."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict)
    source_op: str = ""

    def describe(self) -> str:
        original = f" ({self.source_op})" if self.source_op and self.source_op != self.op_type else ""
        return f"node '{self.name}' op {self.op_type}{original}"


@dataclass(frozen=True)
class GraphInput:
    name: str
    shape: tuple[int | str | None, ...]
    # Integer inputs (class indices) can only be condition inputs, never x or t.
    integer: bool = False


@dataclass
class Graph:
    """An imported network. ``source`` names the file (or module) it came from, for error messages."""

    ops: list[Op]
    inputs: list[GraphInput]
    outputs: list[str]
    constants: dict[str, np.ndarray]
    source: str
    state_input: str = ""
    time_input: str = ""
    # Inputs other than x and t (class index, condition vector, guidance scale): see passes/condition_interface.
    condition_inputs: tuple[str, ...] = ()

    def producers(self) -> dict[str, Op]:
        return {output: op for op in self.ops for output in op.outputs}

    def topological_ops(self) -> list[Op]:
        """Ops in an order where every op comes after the producers of its inputs (stable on ties)."""
        dependency_graph = nx.DiGraph()
        position = {op.name: index for index, op in enumerate(self.ops)}
        producers = self.producers()
        for op in self.ops:
            dependency_graph.add_node(op.name)
            for value in op.inputs:
                if value in producers:
                    dependency_graph.add_edge(producers[value].name, op.name)
        by_name = {op.name: op for op in self.ops}
        if len(by_name) != len(self.ops):
            seen: set[str] = set()
            twice = next(op for op in self.ops if op.name in seen or seen.add(op.name))
            raise AdmcError(f"{self.source}: {twice.describe()}: another node has the same name")
        try:
            order = list(nx.lexicographical_topological_sort(dependency_graph, key=lambda name: position[name]))
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(dependency_graph)
            raise AdmcError(f"{self.source}: node '{cycle[0][0]}' depends on its own output (a cycle through "
                            f"{len(cycle)} nodes)") from None
        return [by_name[name] for name in order]
