"""Reading torch.fx nodes of an exported program: their values, shapes, op names and bound arguments.

Requires: nodes of a ``torch.export`` graph, whose ``meta["val"]`` holds the traced value (a tensor, a list of
them, or a symbolic size). Guarantees: pure reads, nothing is modified; tensors become float64 (floating),
bool or int64 numpy arrays; a dynamic size is the string of its symbol; axes are normalised to be ≥ 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# ONNX Slice/Reshape use int64 limits for "to the end"; torch.export writes the same sentinel.
INT64_MAX = 9223372036854775807


def is_tensor_value(node: torch.fx.Node) -> bool:
    """Whether the node's traced value is one tensor (not a list or a symbolic size)."""
    return isinstance(node.meta.get("val"), torch.Tensor)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float64 (floating), bool or int64 numpy copy of ``tensor``."""
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        return tensor.to(torch.float64).numpy().copy()
    if tensor.dtype == torch.bool:
        return tensor.numpy().copy()
    return tensor.to(torch.int64).numpy().copy()


def scalar_array(value: Any) -> np.ndarray:
    """A Python scalar argument as a 0-d bool, int64 or float64 array."""
    if isinstance(value, bool):
        return np.asarray(value)
    if isinstance(value, int):
        return np.asarray(value, dtype=np.int64)
    return np.asarray(float(value), dtype=np.float64)


def dimension(size: Any) -> int | str:
    """A static size as an int, a dynamic one as the string of its symbol."""
    return int(size) if isinstance(size, int) else str(size)


def literal(value: Any) -> Any:
    """A plain Python form of an op argument, kept as an attribute for error messages and later stages."""
    if isinstance(value, (list, tuple)):
        return [literal(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def target_name(node: torch.fx.Node) -> str:
    """The node's op name: the aten overload (``aten.linear.default``) or the callable's name."""
    if isinstance(node.target, torch._ops.OpOverload):
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def bound_arguments(node: torch.fx.Node) -> dict[str, Any]:
    """Positional and keyword arguments matched to the op schema's names, defaults filled in."""
    bound: dict[str, Any] = {}
    for index, argument in enumerate(node.target._schema.arguments):
        if index < len(node.args) and not argument.kwarg_only:
            bound[argument.name] = node.args[index]
        elif argument.name in node.kwargs:
            bound[argument.name] = node.kwargs[argument.name]
        elif argument.has_default_value():
            bound[argument.name] = argument.default_value
    return bound


def flatten_arguments(argument: Any) -> list[Any]:
    """Nested lists and tuples of arguments as one flat list."""
    if isinstance(argument, (list, tuple)):
        return [item for element in argument for item in flatten_arguments(element)]
    return [argument]


def shape_of(node: Any) -> tuple[int | str, ...]:
    """The shape of a tensor-valued node (dynamic sizes as symbol strings); ``()`` for anything else."""
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    if not isinstance(value, torch.Tensor):
        return ()
    return tuple(dimension(size) for size in value.shape)


def rank(node: Any) -> int:
    """The number of dimensions of a tensor-valued node (0 for anything else)."""
    return len(shape_of(node))


def normalise_axis(axis: int, rank: int) -> int:
    """A negative axis counted from the end, as the non-negative axis it means."""
    return axis + rank if axis < 0 else axis
