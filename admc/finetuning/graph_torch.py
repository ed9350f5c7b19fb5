"""The graph IR evaluated in torch, with its weights as tensors that can require grad.

Requires: a ``Graph`` whose state and time inputs are identified (``admc.compiler.driver.load_source``) and
whose ops have ONNX semantics (``ir/evaluate.py`` is the numpy reference this mirrors op for op).
Guarantees: :func:`run_graph` (:class:`TorchGraph` prepared once) computes the graph's values in torch from
``parameters`` (float tensors by
constant name; every other constant is read from the graph as float64), so autograd reaches the weights;
``overrides`` replaces the value of named intermediates (the probe of ``canonical_torch.py`` feeds the
activations' outputs this way). An op without torch semantics here is an ``AdmcError`` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from admc.core.errors import AdmcError
from admc.ir.adm import activate, algebraic_sigmoid
from admc.ir.graph import Graph, Op


def _ints(value) -> list[int]:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return [int(entry) for entry in array.reshape(-1)]


def _gemm(op: Op, a, b, c=None):
    if op.attributes.get("transA", 0):
        a = a.T
    if op.attributes.get("transB", 0):
        b = b.T
    result = float(op.attributes.get("alpha", 1.0)) * (a @ b)
    return result if c is None else result + float(op.attributes.get("beta", 1.0)) * c


def _reshape(op: Op, data, shape):
    target = _ints(shape)
    if not op.attributes.get("allowzero", 0):
        target = [data.shape[axis] if size == 0 else size for axis, size in enumerate(target)]
    return data.reshape(target)


def _flatten(op: Op, data):
    axis = int(op.attributes.get("axis", 1))
    axis = axis + data.dim() if axis < 0 else axis
    return data.reshape(int(np.prod(data.shape[:axis], dtype=np.int64)), -1)


def _axes(op: Op, axes_input) -> list[int]:
    return _ints(axes_input) if axes_input is not None else [int(axis) for axis in op.attributes.get("axes", [])]


def _unsqueeze(op: Op, data, axes_input=None):
    axes = _axes(op, axes_input)
    rank = data.dim() + len(axes)
    for axis in sorted(axis + rank if axis < 0 else axis for axis in axes):
        data = data.unsqueeze(axis)
    return data


def _squeeze(op: Op, data, axes_input=None):
    axes = _axes(op, axes_input)
    if not axes:
        return data.squeeze()
    for axis in sorted((axis + data.dim() if axis < 0 else axis for axis in axes), reverse=True):
        data = data.squeeze(axis)
    return data


def _slice(op: Op, data, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = list(range(len(starts))) if axes is None else _ints(axes)
    steps = [1] * len(starts) if steps is None else _ints(steps)
    index = [slice(None)] * data.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[axis] = slice(start, min(end, data.shape[axis]), step)
    return data[tuple(index)]


def _gather(op: Op, data, indices):
    """ONNX Gather: ``data``'s slices along ``axis`` at ``indices`` (any shape; negative counts from the end)."""
    axis = int(op.attributes.get("axis", 0))
    axis = axis + data.dim() if axis < 0 else axis
    index = torch.as_tensor(indices).long()
    index = torch.where(index < 0, index + data.shape[axis], index)
    picked = torch.index_select(data, axis, index.reshape(-1))
    return picked.reshape(*data.shape[:axis], *index.shape, *data.shape[axis + 1:])


def _unary(function: Callable) -> Callable:
    return lambda op, value: function(value)


def _binary(function: Callable) -> Callable:
    return lambda op, left, right: function(left, right)


TORCH_SEMANTICS: dict[str, Callable] = {
    "Gemm": _gemm,
    "MatMul": _binary(torch.matmul),
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(torch.div),
    "Pow": _binary(torch.pow),
    "Neg": _unary(torch.neg),
    "Tanh": _unary(torch.tanh),
    "Sin": _unary(torch.sin),
    "Cos": _unary(torch.cos),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Sqrt": _unary(torch.sqrt),
    "Reciprocal": _unary(torch.reciprocal),
    "Sigmoid": _unary(torch.sigmoid),
    "Relu": _unary(lambda value: value.clamp(min=0)),
    "Abs": _unary(torch.abs),
    "AlgebraicSigmoid": lambda op, value: activate(
        algebraic_sigmoid(op.attributes["exponent"], op.attributes.get("outer")), value),
    "Identity": _unary(lambda value: value),
    "Cast": _unary(lambda value: value),
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Transpose": lambda op, data: data.permute(*(op.attributes.get("perm") or reversed(range(data.dim())))),
    "Concat": lambda op, *parts: torch.cat(parts, dim=int(op.attributes.get("axis", 0))),
    "Slice": _slice,
    "Gather": _gather,
}


def trainable_names(graph: Graph) -> list[str]:
    """The graph's weights: its floating constants of more than one entry, or read as a Gemm/MatMul operand
    or bias (a scalar bias is a weight too). Integer constants (shapes, axes) never are."""
    weight_inputs = {name for op in graph.ops if op.op_type in ("Gemm", "MatMul", "Mul", "Add", "Sub")
                     for name in op.inputs}
    return [name for name, value in graph.constants.items()
            if np.issubdtype(np.asarray(value).dtype, np.floating)
            and (np.size(value) > 1 or name in weight_inputs)]


class TorchGraph:
    """A graph prepared once for repeated torch runs: its op order and its constants as tensors (fine-tuning runs
    the same graph twice a step; sorting it and converting its constants each time cost a millisecond)."""

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float64):
        self.graph, self.dtype = graph, dtype
        self.ops = graph.topological_ops()
        for op in self.ops:
            if op.op_type not in TORCH_SEMANTICS:
                raise AdmcError(f"{graph.source}: {op.describe()}: fine-tuning has no torch semantics for this op")
        self.constants = {name: torch.as_tensor(np.asarray(value), dtype=dtype)
                          if np.issubdtype(np.asarray(value).dtype, np.floating) else torch.as_tensor(np.asarray(value))
                          for name, value in graph.constants.items()}

    def run(self, parameters: Mapping[str, torch.Tensor], inputs: Mapping[str, torch.Tensor],
            overrides: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Every value of the graph for ``inputs`` (see the module docstring); returns the values by name."""
        values = dict(self.constants)
        values.update((name, value) for name, value in parameters.items() if name in values)
        values.update(inputs)
        overrides = overrides or {}
        for op in self.ops:
            arguments = [values[name] if name else None for name in op.inputs]
            while arguments and arguments[-1] is None:
                arguments = arguments[:-1]
            output = op.outputs[0]
            values[output] = overrides[output] if output in overrides else TORCH_SEMANTICS[op.op_type](op, *arguments)
        return values


def run_graph(graph: Graph, parameters: Mapping[str, torch.Tensor], inputs: Mapping[str, torch.Tensor],
              overrides: Mapping[str, torch.Tensor] | None = None, dtype: torch.dtype = torch.float64
              ) -> dict[str, torch.Tensor]:
    """Every value of the graph for ``inputs`` once (:class:`TorchGraph` for repeated runs)."""
    return TorchGraph(graph, dtype).run(parameters, inputs, overrides)


def condition_tensors(graph: Graph, conditions: Mapping[str, object], rows: int, dtype: torch.dtype = torch.float64
                      ) -> dict[str, torch.Tensor]:
    """Every condition input of ``graph`` as a tensor of its declared shape ([rows, ...]; int64 for an integer
    input): ``conditions``' values, zeros where a condition is absent."""
    result = {}
    for entry in graph.inputs:
        if entry.name in graph.condition_inputs:
            shape = [int(size) for size in entry.shape[1:]]
            kind = torch.int64 if entry.integer else dtype
            value = conditions.get(entry.name)
            result[entry.name] = torch.zeros(rows, *shape, dtype=kind) if value is None else (
                torch.as_tensor(value).to(kind).reshape(rows, *shape))
    return result


def graph_velocity(graph: Graph | TorchGraph, parameters: Mapping[str, torch.Tensor], x: torch.Tensor,
                   t: torch.Tensor, conditions: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """f(x, t[, c]) of the graph (the digital source model) in torch; t is [B] and shaped as the graph's input;
    ``conditions`` are the condition inputs' per-sample values, shaped as the graph's inputs."""
    prepared = graph if isinstance(graph, TorchGraph) else TorchGraph(graph, x.dtype)
    graph = prepared.graph
    shape = next(entry.shape for entry in graph.inputs if entry.name == graph.time_input)
    time = t.reshape(-1, 1) if len(shape) == 2 else t.reshape(-1)
    return prepared.run(parameters, {graph.state_input: x, graph.time_input: time, **(conditions or {})}
                        )[graph.outputs[0]]
