"""Handlers of the torch.export frontend for shape glue: concatenation, reshapes, (un)squeezes, transposes,
expansion, slicing, indexing and embedding lookups.

Requires: an fx node of a known aten op, its arguments bound to the op schema's names, and the importer that
holds the growing graph. Guarantees: each handler appends the ONNX ops (with their int64 shape, axes and bound
constants) that compute what the aten op computes; a dynamic size is copied from the input where ONNX can
express it, and an AdmcError naming the node is raised where it cannot. ``HANDLERS`` maps each aten overload
packet name to its handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from admc.frontends.torch_nodes import INT64_MAX, normalise_axis, shape_of

if TYPE_CHECKING:  # the importer dispatches to these handlers, so it imports this module
    from admc.frontends.torch_importer import TorchImporter

Handler = Callable[["TorchImporter", torch.fx.Node, dict[str, Any]], None]

TRANSPOSES = {"t", "numpy_T", "permute", "transpose"}
RESHAPES = {"view", "reshape", "_unsafe_view"}


def import_concat(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    parts = [importer.value(node, part, f"tensors{index}") for index, part in enumerate(arguments["tensors"])]
    axis = normalise_axis(int(arguments.get("dim", 0)), len(node.meta["val"].shape))
    importer.emit(node, "Concat", parts, {"axis": axis})


def import_reshape(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    data = arguments["self"]
    shape = reshape_target(importer, node, shape_of(data), shape_of(node))
    importer.emit(node, "Reshape", [importer.value(node, data, "self"),
                                    importer.integer_constant(node, "shape", shape)])


def reshape_target(importer: TorchImporter, node: torch.fx.Node, source: tuple[int | str, ...],
                   target: tuple[int | str, ...]) -> list[int]:
    """ONNX Reshape sizes: a symbolic size is copied (0) when the input has it on the same axis, else -1."""
    sizes: list[int] = []
    for axis, size in enumerate(target):
        if isinstance(size, int):
            sizes.append(size)
        elif axis < len(source) and source[axis] == size:
            sizes.append(0)
        else:
            sizes.append(-1)
    if sizes.count(-1) > 1 or (0 in sizes and any(size == 0 for size in target)):
        raise importer.error(node, f"cannot express reshape to {list(target)} with one inferred dimension")
    return sizes


def import_unsqueeze(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    axis = normalise_axis(int(arguments["dim"]), len(shape_of(node)))
    data = importer.value(node, arguments["self"], "self")
    importer.emit(node, "Unsqueeze", [data, importer.integer_constant(node, "axes", [axis])])


def import_squeeze(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    shape = shape_of(arguments["self"])
    requested = arguments.get("dim")
    if requested is None:
        requested = range(len(shape))
    elif isinstance(requested, int):
        requested = [requested]
    # torch ignores squeezing a dimension that is not 1; ONNX rejects it, so only true unit axes remain.
    axes = sorted({normalise_axis(int(axis), len(shape)) for axis in requested})
    axes = [axis for axis in axes if shape[axis] == 1]
    data = importer.value(node, arguments["self"], "self")
    if axes:
        importer.emit(node, "Squeeze", [data, importer.integer_constant(node, "axes", axes)])
    else:
        importer.emit(node, "Identity", [data])


def import_flatten(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    source = shape_of(arguments["self"])
    rank = len(source)
    start = normalise_axis(int(arguments.get("start_dim", 0)), max(rank, 1))
    end = normalise_axis(int(arguments.get("end_dim", -1)), max(rank, 1))
    data = importer.value(node, arguments["self"], "self")
    if rank >= 2 and start == 1 and end == rank - 1:
        importer.emit(node, "Flatten", [data], {"axis": 1})
        return
    shape = reshape_target(importer, node, source, shape_of(node))
    importer.emit(node, "Reshape", [data, importer.integer_constant(node, "shape", shape)])


def import_transpose(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    rank = len(shape_of(arguments["self"]))
    packet = node.target.overloadpacket.__name__
    if packet == "permute":
        perm = [normalise_axis(int(axis), rank) for axis in arguments["dims"]]
    elif packet == "transpose":
        perm = list(range(rank))
        first = normalise_axis(int(arguments["dim0"]), rank)
        second = normalise_axis(int(arguments["dim1"]), rank)
        perm[first], perm[second] = perm[second], perm[first]
    else:
        perm = list(reversed(range(rank)))
    importer.emit(node, "Transpose", [importer.value(node, arguments["self"], "self")], {"perm": perm})


def import_expand(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    source = shape_of(arguments["self"])
    target = shape_of(node)
    offset = len(target) - len(source)
    sizes = []
    for axis, size in enumerate(target):
        source_size = source[axis - offset] if axis >= offset else 1
        if isinstance(size, int):
            sizes.append(size)
        elif source_size == size:
            sizes.append(1)  # ONNX Expand broadcasts both ways: 1 keeps the input's (dynamic) size
        else:
            raise importer.error(node, f"expands to the dynamic size {size}; only static expansion is supported")
    data = importer.value(node, arguments["self"], "self")
    importer.emit(node, "Expand", [data, importer.integer_constant(node, "shape", sizes)])


def import_slice(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    shape = shape_of(arguments["self"])
    axis = normalise_axis(int(arguments.get("dim", 0)), len(shape))
    start = slice_bound(importer, node, arguments.get("start"), shape[axis], 0)
    end = slice_bound(importer, node, arguments.get("end"), shape[axis], INT64_MAX)
    step = int(arguments.get("step", 1))
    data = importer.value(node, arguments["self"], "self")
    reaches_end = end == INT64_MAX or (isinstance(shape[axis], int) and end >= shape[axis])
    if start == 0 and step == 1 and reaches_end:
        importer.emit(node, "Identity", [data])
        return
    emit_slice(importer, node, data, start, end, axis, step)


def emit_slice(importer: TorchImporter, node: torch.fx.Node, data: str, start: int, end: int, axis: int,
               step: int, role: str = "") -> str:
    prefix = f"{role}_" if role else ""
    inputs = [
        data,
        importer.integer_constant(node, f"{prefix}starts", [start]),
        importer.integer_constant(node, f"{prefix}ends", [end]),
        importer.integer_constant(node, f"{prefix}axes", [axis]),
        importer.integer_constant(node, f"{prefix}steps", [step]),
    ]
    return importer.emit(node, "Slice", inputs, role=role)


def slice_bound(importer: TorchImporter, node: torch.fx.Node, bound: Any, size: int | str, default: int) -> int:
    if bound is None:
        return default
    if isinstance(bound, int):
        return min(bound, INT64_MAX)
    symbol = bound.meta.get("val") if isinstance(bound, torch.fx.Node) else bound
    if str(symbol) == str(size):
        return INT64_MAX  # slicing up to the dynamic size itself means "to the end"
    raise importer.error(node, f"slice bound {symbol} depends on the input shape")


def import_embedding(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    # nn.Embedding: rows of the table selected by class indices (ONNX Gather on axis 0).
    table = importer.value(node, arguments["weight"], "weight")
    importer.emit(node, "Gather", [table, importer.value(node, arguments["indices"], "indices")], {"axis": 0})


def import_select(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    """``x[:, i]`` → Slice(i, i+1) then Squeeze, the ONNX form of an integer index."""
    shape = shape_of(arguments["self"])
    axis = normalise_axis(int(arguments["dim"]), len(shape))
    index = int(arguments["index"])
    end = INT64_MAX if index == -1 else index + 1
    data = importer.value(node, arguments["self"], "self")
    sliced = emit_slice(importer, node, data, index, end, axis, 1, role="slice")
    importer.emit(node, "Squeeze", [sliced, importer.integer_constant(node, "axes", [axis])])


HANDLERS: dict[str, Handler] = {
    **dict.fromkeys(TRANSPOSES, import_transpose),
    **dict.fromkeys(RESHAPES, import_reshape),
    "cat": import_concat,
    "concat": import_concat,
    "unsqueeze": import_unsqueeze,
    "squeeze": import_squeeze,
    "flatten": import_flatten,
    "expand": import_expand,
    "slice": import_slice,
    "select": import_select,
    "embedding": import_embedding,
}
