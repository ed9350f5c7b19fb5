"""ONNX frontend: an ``.onnx`` file (opset 13 or newer) to the graph IR.

Requires: a readable ONNX model whose graph uses ONNX operators. Guarantees: a ``Graph`` whose ops keep
their ONNX names and attributes, whose initializers and ``Constant`` nodes are float64 / int64 numpy
constants, and whose inputs are the graph inputs that are not initializers, with their declared shapes.
Unsupported ops are refused later, by canonicalisation, with the node named.

Import checks (issue 13, item 3), each an AdmcError naming the file and the node or initializer: the file is
a regular file within the size limit; ``onnx.checker`` full check and strict shape and type inference pass
(so conflicting value_info types and shapes an op cannot take are refused); no sparse initializers; the
dtype policy — float initializers are float32 or float64 (float16, bfloat16, float8 refused), integer
initializers (int32/int64) only where an op reads shapes, axes or indices, and nothing else (bool, string,
complex, uint8, …); node names unique; float attributes finite (a Gemm alpha of NaN is refused); no
operator domain declared at an opset newer than the installed onnx and onnxruntime know (``check_opsets``:
onnx's checker accepts opset 99, onnxruntime cannot run it, so verify would fail on the bundle's copy).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

from admc.core import limits
from admc.core.errors import AdmcError
from admc.core.safe_files import check_regular
from admc.frontends.messages import quote
from admc.ir.graph import Graph, GraphInput, Op

MINIMUM_OPSET = 13
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
INTEGER_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
# (op type, input position) pairs that read shapes, axes or indices: the only places integers are accepted.
INTEGER_INPUTS = {("Reshape", 1), ("Unsqueeze", 1), ("Squeeze", 1), ("Slice", 1), ("Slice", 2), ("Slice", 3),
                  ("Slice", 4), ("Gather", 1), ("Expand", 1), ("Tile", 1), ("Split", 1), ("ReduceSum", 1),
                  ("ReduceMean", 1), ("ConstantOfShape", 0), ("Range", 0), ("Range", 1), ("Range", 2),
                  ("Cast", 0), ("Pad", 1)}


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


def graph_input(value_info: onnx.ValueInfoProto) -> GraphInput:
    """A graph input with its declared shape (a named dynamic size as its name, an unnamed one as None)."""
    tensor_type = value_info.type.tensor_type
    shape: list[int | str | None] = []
    for dimension in tensor_type.shape.dim if tensor_type.HasField("shape") else ():
        if dimension.HasField("dim_value"):
            shape.append(int(dimension.dim_value))
        elif dimension.HasField("dim_param"):
            shape.append(dimension.dim_param)
        else:
            shape.append(None)
    return GraphInput(value_info.name, tuple(shape), tensor_type.elem_type in INTEGER_TYPES)


def load_onnx_model(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file (see the module docstring); any failure is an AdmcError naming the file."""
    path = Path(path)
    check_regular(path, "model file")
    if path.stat().st_size > limits.MODEL_BYTES:
        raise AdmcError(f"{path}: model file is larger than {limits.MODEL_BYTES} bytes")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # onnx raises several unrelated types for damaged files
        raise AdmcError(f"{path}: not a readable ONNX model ({quote(error)})") from None
    check_graph(model.graph, path)  # first: its messages name the initializer or node admc objects to
    check_opsets(model, path)
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as error:
        raise AdmcError(f"{path}: not a valid ONNX model ({quote(error)})") from None
    return model


def check_graph(graph: onnx.GraphProto, path: Path) -> None:
    """The dtype policy, sparse initializers, unique node names and finite attributes (module docstring)."""
    if len(graph.sparse_initializer):
        raise AdmcError(f"{path}: sparse initializer '{graph.sparse_initializer[0].values.name}': sparse "
                        "weights are not supported; store them dense")
    readers: dict[str, list[tuple[str, int, str]]] = {}
    names: set[str] = set()
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        if name in names:
            raise AdmcError(f"{path}: node '{name}' op {node.op_type}: another node has the same name")
        names.add(name)
        for position, value in enumerate(node.input):
            readers.setdefault(value, []).append((node.op_type, position, name))
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.FLOAT and not np.isfinite(attribute.f):
                raise AdmcError(f"{path}: node '{name}' op {node.op_type}: attribute {attribute.name} is "
                                f"{attribute.f}, not a finite number")
            if attribute.type == onnx.AttributeProto.FLOATS and not np.all(np.isfinite(list(attribute.floats))):
                raise AdmcError(f"{path}: node '{name}' op {node.op_type}: attribute {attribute.name} holds "
                                "non-finite numbers")
    for initializer in graph.initializer:
        kind = onnx.TensorProto.DataType.Name(initializer.data_type)
        if initializer.data_type in FLOAT_TYPES:
            continue
        if initializer.data_type in INTEGER_TYPES:
            uses = [(op, position, node) for op, position, node in readers.get(initializer.name, [])
                    if (op, position) not in INTEGER_INPUTS]
            if not uses:
                continue
            op, _, node = uses[0]
            raise AdmcError(f"{path}: initializer '{initializer.name}' ({kind}) read by node '{node}' op {op}: "
                            "integer weights are not supported; weights must be float32 or float64")
        raise AdmcError(f"{path}: initializer '{initializer.name}' has dtype {kind}; admc accepts float32 or "
                        "float64 weights (and int32/int64 shapes, axes or indices)")


# The newest ai.onnx opset every onnxruntime admc installs with runs (onnxruntime>=1.17 in pyproject.toml runs up
# to opset 20): a model at or below it is not checked against onnxruntime, whose import would cost a build ~0.1 s.
OPSET_EVERY_ONNXRUNTIME_RUNS = 20


def _newest(schemas) -> dict[str, int]:
    newest: dict[str, int] = {}
    for schema in schemas:
        newest[schema.domain] = max(newest.get(schema.domain, 0), schema.since_version)
    return newest


@functools.cache  # the installed packages do not change while admc runs
def newest_opsets(runtime: bool = True) -> dict[str, int]:
    """The newest opset of each operator domain ('' for ai.onnx) the installed onnx knows (the highest
    ``since_version`` of its operator schemas) and, with ``runtime``, that onnxruntime knows too (its own
    registry: the onnx it was built with may be older)."""
    newest = _newest(onnx.defs.get_all_schemas_with_history())
    if not runtime:
        return newest
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema
    except ImportError:
        return newest
    known = _newest(get_all_operator_schema())
    return {domain: min(version, known.get(domain, version)) for domain, version in newest.items()}


def check_opsets(model: onnx.ModelProto, path: Path) -> None:
    """Refuse an operator domain declared at an opset newer than the installed onnx and onnxruntime support
    (domains neither knows are left to the custom-domain check of ``import_onnx``)."""
    for entry in model.opset_import:
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        if domain not in newest_opsets(runtime=False):
            continue
        newest = newest_opsets(runtime=domain != "" or entry.version > OPSET_EVERY_ONNXRUNTIME_RUNS)
        if entry.version > newest[domain]:
            import onnxruntime

            raise AdmcError(f"{path}: declares opset {entry.version} of domain '{domain or 'ai.onnx'}'; the installed "
                            f"onnx {onnx.__version__} and onnxruntime {onnxruntime.__version__} run up to opset "
                            f"{newest[domain]}: re-export with opset_version={newest[domain]} or lower")


def self_contained_bytes(path: str | Path) -> bytes:
    """The model as one protobuf, with any external weight files (``*.onnx.data``, as torch's dynamo
    exporter writes them) folded in, so a bundle's copy of the source is complete on its own."""
    model = load_onnx_model(path)
    external_data_helper.convert_model_from_external_data(model)
    return model.SerializeToString()


def import_onnx(path: str | Path) -> Graph:
    """Translate an ONNX file into the graph IR."""
    return graph_of(load_onnx_model(path), Path(path))


def open_onnx(path: str | Path) -> tuple[Graph, bytes]:
    """``import_onnx`` and ``self_contained_bytes`` of one file, read and checked once (at 36M weights each read
    parses, checks and shape-infers 144 MB of protobuf: about a second)."""
    path = Path(path)
    model = load_onnx_model(path)
    graph = graph_of(model, path)  # reads the model only; the external data is folded in after
    external_data_helper.convert_model_from_external_data(model)
    return graph, model.SerializeToString()


def graph_of(model: onnx.ModelProto, path: Path) -> Graph:
    """The graph IR of a model ``load_onnx_model`` read from ``path`` (errors name that file)."""
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
    inputs = [graph_input(value) for value in graph.input if value.name not in constants]
    return Graph(ops, inputs, [value.name for value in graph.output], constants, str(path))
