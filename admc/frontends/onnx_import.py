"""ONNX frontend: an ``.onnx`` file (opset 13 or newer) to the graph IR.

Requires: a readable ONNX model whose graph uses ONNX operators. Guarantees: a ``Graph`` whose ops keep
their ONNX names and attributes, whose initializers and ``Constant`` nodes are float64 / int64 numpy
constants, and whose inputs are the graph inputs that are not initializers, with their declared shapes.
Nothing is interpreted here: unsupported ops are refused later, by canonicalisation, with the node named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

from admc.errors import AdmcError
from admc.ir.graph import Graph, GraphInput, Op

MINIMUM_OPSET = 13


def _as_float64_or_int64(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float64)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return array.astype(np.int64)
    return array


def _attributes(node: onnx.NodeProto) -> dict:
    values = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list):
            value = [item.decode("utf-8", "replace") if isinstance(item, bytes) else item for item in value]
        values[attribute.name] = value
    return values


_INTEGER_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


def _input_shape(value_info: onnx.ValueInfoProto) -> tuple[int | str | None, ...]:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return ()
    shape: list[int | str | None] = []
    for dimension in tensor_type.shape.dim:
        if dimension.HasField("dim_value"):
            shape.append(int(dimension.dim_value))
        elif dimension.HasField("dim_param"):
            shape.append(dimension.dim_param)
        else:
            shape.append(None)
    return tuple(shape)


def load_onnx_model(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file; any failure is an AdmcError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AdmcError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:  # onnx raises several unrelated types for damaged files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AdmcError(f"{path}: not a readable ONNX model ({reason})") from None
    return model


def self_contained_bytes(path: str | Path) -> bytes:
    """The model as one protobuf, with any external weight files (``*.onnx.data``, as torch's dynamo
    exporter writes them) folded in, so a bundle's copy of the source is complete on its own."""
    model = load_onnx_model(path)
    external_data_helper.convert_model_from_external_data(model)
    return model.SerializeToString()


def import_onnx(path: str | Path) -> Graph:
    """Translate an ONNX file into the graph IR."""
    path = Path(path)
    model = load_onnx_model(path)
    opset = max((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), default=0)
    if opset < MINIMUM_OPSET:
        raise AdmcError(f"{path}: opset {opset} is older than the supported minimum {MINIMUM_OPSET}")
    graph = model.graph
    constants = {
        initializer.name: _as_float64_or_int64(numpy_helper.to_array(initializer))
        for initializer in graph.initializer
    }
    ops: list[Op] = []
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        attributes = _attributes(node)
        if node.op_type == "Constant":
            value = attributes.get("value")
            if value is None:
                for key in ("value_float", "value_floats", "value_int", "value_ints"):
                    if key in attributes:
                        value = np.asarray(attributes[key])
            if value is None:
                raise AdmcError(f"{path}: node '{name}' op Constant: unsupported constant attribute")
            constants[node.output[0]] = _as_float64_or_int64(np.asarray(value))
            continue
        if node.domain not in ("", "ai.onnx"):
            raise AdmcError(f"{path}: node '{name}' op {node.domain}.{node.op_type}: custom operator domain")
        ops.append(Op(name, node.op_type, tuple(node.input), tuple(node.output), attributes, node.op_type))
    inputs = [
        GraphInput(value.name, _input_shape(value), value.type.tensor_type.elem_type in _INTEGER_TYPES)
        for value in graph.input if value.name not in constants
    ]
    return Graph(ops, inputs, [value.name for value in graph.output], constants, str(path))
