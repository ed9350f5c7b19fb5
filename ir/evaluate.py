"""Numerical semantics of the graph IR's ops, in numpy float64.

Used for constant folding and for evaluating the parts of a network that do not depend on the diffusion
state (time embeddings) at compile time, and as an independent executor of an imported graph in tests.
Every op follows ONNX semantics (numpy broadcasting, ``Gemm`` attributes, ``Reshape`` with 0 and -1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from admc.core.errors import AdmcError
from admc.ir.adm import activate, algebraic_sigmoid
from admc.ir.graph import Graph, Op


def _gemm(op: Op, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    if op.attributes.get("transA", 0):
        a = a.T
    if op.attributes.get("transB", 0):
        b = b.T
    result = float(op.attributes.get("alpha", 1.0)) * (a @ b)
    if c is not None:
        result = result + float(op.attributes.get("beta", 1.0)) * c
    return result


def _reshape(op: Op, data: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = [int(size) for size in np.asarray(shape).reshape(-1)]
    if not op.attributes.get("allowzero", 0):
        target = [data.shape[axis] if size == 0 else size for axis, size in enumerate(target)]
    return data.reshape(target)


def _flatten(op: Op, data: np.ndarray) -> np.ndarray:
    axis = int(op.attributes.get("axis", 1))
    axis = axis + data.ndim if axis < 0 else axis
    return data.reshape(int(np.prod(data.shape[:axis], dtype=np.int64)), -1)


def _axes(op: Op, axes_input: np.ndarray | None) -> list[int]:
    if axes_input is not None:
        return [int(axis) for axis in np.asarray(axes_input).reshape(-1)]
    return [int(axis) for axis in op.attributes.get("axes", [])]


def _unsqueeze(op: Op, data: np.ndarray, axes_input: np.ndarray | None = None) -> np.ndarray:
    axes = _axes(op, axes_input)
    rank = data.ndim + len(axes)
    for axis in sorted(axis + rank if axis < 0 else axis for axis in axes):
        data = np.expand_dims(data, axis)
    return data


def _squeeze(op: Op, data: np.ndarray, axes_input: np.ndarray | None = None) -> np.ndarray:
    axes = _axes(op, axes_input)
    if not axes:
        return np.squeeze(data)
    return np.squeeze(data, axis=tuple(axis + data.ndim if axis < 0 else axis for axis in axes))


def _transpose(op: Op, data: np.ndarray) -> np.ndarray:
    perm = op.attributes.get("perm")
    return np.transpose(data, axes=None if perm is None else [int(axis) for axis in perm])


def _concat(op: Op, *parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts, axis=int(op.attributes.get("axis", 0)))


def _slice(op: Op, data: np.ndarray, starts, ends, axes=None, steps=None) -> np.ndarray:
    starts = np.asarray(starts).reshape(-1)
    ends = np.asarray(ends).reshape(-1)
    axes = np.arange(len(starts)) if axes is None else np.asarray(axes).reshape(-1)
    steps = np.ones(len(starts), dtype=np.int64) if steps is None else np.asarray(steps).reshape(-1)
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[int(axis)] = slice(int(start), int(end), int(step))
    return data[tuple(index)]


def _unary(function: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda op, value: function(value)


def _binary(function: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda op, left, right: function(left, right)


def _sigmoid(value: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-value))


def _gather(op: Op, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    # Embedding tables: class indices (integers, possibly carried as float64) select rows.
    return np.take(data, np.asarray(indices).astype(np.int64), axis=int(op.attributes.get("axis", 0)))


OP_SEMANTICS: dict[str, Callable[..., np.ndarray]] = {
    "Gemm": _gemm,
    "MatMul": _binary(np.matmul),
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
    "Pow": _binary(np.power),
    "Neg": _unary(np.negative),
    "Tanh": _unary(np.tanh),
    "Sin": _unary(np.sin),
    "Cos": _unary(np.cos),
    "Exp": _unary(np.exp),
    "Log": _unary(np.log),
    "Sqrt": _unary(np.sqrt),
    "Reciprocal": _unary(np.reciprocal),
    "Sigmoid": _unary(_sigmoid),
    "Relu": _unary(lambda value: np.maximum(value, 0.0)),
    "Abs": _unary(np.abs),
    "AlgebraicSigmoid": lambda op, value: activate(
        algebraic_sigmoid(op.attributes["exponent"], op.attributes.get("outer")), value),
    "Identity": _unary(lambda value: value),
    "Cast": _unary(lambda value: value),
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Transpose": _transpose,
    "Concat": _concat,
    "Slice": _slice,
    "Gather": _gather,
    "Expand": lambda op, data, shape: data * np.ones([int(size) for size in np.asarray(shape)]),
}


def evaluate_op(op: Op, arguments: list[np.ndarray | None]) -> np.ndarray:
    """Evaluate one op on numpy arguments (``None`` stands for an omitted optional input)."""
    semantics = OP_SEMANTICS.get(op.op_type)
    if semantics is None:
        raise AdmcError(f"{op.describe()}: no numerical semantics for this op")
    while arguments and arguments[-1] is None:
        arguments = arguments[:-1]
    return semantics(op, *arguments)


def evaluate_graph(graph: Graph, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run the whole graph in float64 on the given inputs; returns the graph outputs in order."""
    values: dict[str, np.ndarray] = {name: np.asarray(value) for name, value in graph.constants.items()}
    for name, value in inputs.items():
        values[name] = np.asarray(value, dtype=np.float64)
    for op in graph.topological_ops():
        arguments = [values[name] if name else None for name in op.inputs]
        values[op.outputs[0]] = evaluate_op(op, arguments)
    return [values[name] for name in graph.outputs]
