"""Run an ONNX source model in float64 with onnxruntime.

Requires: an ONNX file that ``admc.frontends.onnx_import.load_onnx_model`` accepts, with one output (the
velocity [B, d]) and inputs x, t and any named conditions.
Guarantees: every float tensor in the model (initializers, Constant / ConstantOfShape values, Cast targets,
``dtype`` attributes, graph input / output / value_info types, subgraphs) is rewritten to double, and onnxruntime
runs it on the CPU with one thread and no graph optimisations, so runs are reproducible and the arithmetic is the
model's own. A model onnxruntime cannot run, or a batch it fails on, is an ``AdmcError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper

from admc.core.errors import AdmcError
from admc.frontends.messages import quote
from admc.frontends.onnx_import import graph_input, load_onnx_model
from admc.frontends.signature import identify_signature
from admc.ir.graph import GraphInput
from admc.runtime.velocity import Velocity

_LOW_PRECISION_ONNX = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def _double_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    values = numpy_helper.to_array(tensor).astype(np.float64)
    return numpy_helper.from_array(values, tensor.name)


def _double_type(value_type: onnx.TypeProto) -> None:
    if value_type.HasField("tensor_type") and value_type.tensor_type.elem_type in _LOW_PRECISION_ONNX:
        value_type.tensor_type.elem_type = onnx.TensorProto.DOUBLE


def _double_node(node: onnx.NodeProto) -> None:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in _LOW_PRECISION_ONNX:
            attribute.t.CopyFrom(_double_tensor(attribute.t))
        elif attribute.type == onnx.AttributeProto.TENSORS:
            for tensor in attribute.tensors:
                if tensor.data_type in _LOW_PRECISION_ONNX:
                    tensor.CopyFrom(_double_tensor(tensor))
        elif attribute.type == onnx.AttributeProto.GRAPH:
            _double_graph(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for subgraph in attribute.graphs:
                _double_graph(subgraph)
        elif attribute.name in ("to", "dtype") and attribute.type == onnx.AttributeProto.INT:
            # Cast targets and the dtype of generator ops (EyeLike, RandomNormal ...).
            if attribute.i in _LOW_PRECISION_ONNX:
                attribute.i = onnx.TensorProto.DOUBLE
    if node.op_type == "Constant":
        # value_float(s) always produce float32; replace them by an equivalent double tensor.
        for attribute in list(node.attribute):
            if attribute.name in ("value_float", "value_floats"):
                values = attribute.f if attribute.name == "value_float" else list(attribute.floats)
                node.attribute.remove(attribute)
                node.attribute.append(
                    onnx.helper.make_attribute("value", numpy_helper.from_array(np.array(values, dtype=np.float64)))
                )
    if node.op_type == "ConstantOfShape" and not any(attribute.name == "value" for attribute in node.attribute):
        # Without a value attribute ConstantOfShape makes float32 zeros.
        zero = numpy_helper.from_array(np.zeros(1, dtype=np.float64))
        node.attribute.append(onnx.helper.make_attribute("value", zero))


def _double_graph(graph: onnx.GraphProto) -> None:
    for index, initializer in enumerate(graph.initializer):
        if initializer.data_type in _LOW_PRECISION_ONNX:
            graph.initializer[index].CopyFrom(_double_tensor(initializer))
    for node in graph.node:
        _double_node(node)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        _double_type(value.type)


def onnx_to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` in which every float32/float16/bfloat16 tensor and type is float64."""
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    _double_graph(converted.graph)
    return converted


def onnx_graph_inputs(model: onnx.ModelProto) -> list[GraphInput]:
    """The run-time inputs of an ONNX graph (older exporters also list initializers as inputs)."""
    initializer_names = {initializer.name for initializer in model.graph.initializer}
    return [graph_input(value) for value in model.graph.input if value.name not in initializer_names]


def _deterministic_session_options() -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # No fusions: the reference runs the model's own ops, not a rewritten graph.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # errors surface as exceptions, reported by admc in one line
    return options


class OnnxVelocity(Velocity):
    """An ONNX model converted to float64 and run by onnxruntime on the CPU."""

    def __init__(self, path: str | Path, time_input: str | None = None, float64: bool = True,
                 condition_inputs: tuple[str, ...] = ()) -> None:
        """``float64=False`` runs the model as stored (for comparisons only; the reference is float64)."""
        self.source = str(path)
        model = load_onnx_model(path)
        if len(model.graph.node) == 0:
            raise AdmcError(f"{path}: not an ONNX model (empty or truncated file: the graph has no nodes)")
        self.signature = identify_signature(onnx_graph_inputs(model), self.source, time_input,
                                            tuple(condition_inputs))
        self._condition_dtypes = {
            value.name: onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            for value in model.graph.input if value.name in self.signature.condition_names}
        if len(model.graph.output) != 1:
            names = ", ".join(output.name for output in model.graph.output)
            raise AdmcError(
                f"{path}: expected 1 output (the velocity [B, d]), found {len(model.graph.output)}: {names}"
            )
        runnable = onnx_to_float64(model) if float64 else model
        self.input_dtype = np.float64 if float64 else np.float32
        try:
            self._session = onnxruntime.InferenceSession(
                runnable.SerializeToString(),
                _deterministic_session_options(),
                providers=["CPUExecutionProvider"],
            )
        except Exception as error:  # onnxruntime raises its own exception types for invalid graphs.
            reason = quote(error)
            raise AdmcError(f"{path}: onnxruntime cannot run the model in float64: {reason}") from None
        self._output = model.graph.output[0].name

    def _evaluate(self, x: np.ndarray, t: np.ndarray, conditions: dict[str, np.ndarray]) -> np.ndarray:
        assert self.signature is not None
        time = t if self.signature.time_rank == 1 else t.reshape(-1, 1)
        feeds = {
            self.signature.state_input: x.astype(self.input_dtype),
            self.signature.time_input: time.astype(self.input_dtype),
        }
        for condition in self.signature.conditions:
            if condition.name not in conditions:
                raise AdmcError(f"{self.source}: condition input '{condition.name}' was not given")
            dtype = self._condition_dtypes[condition.name]
            if np.issubdtype(dtype, np.floating):
                dtype = self.input_dtype
            value = np.asarray(conditions[condition.name]).reshape((x.shape[0], *condition.shape))
            feeds[condition.name] = value.astype(dtype)
        try:
            (result,) = self._session.run([self._output], feeds)
        except Exception as error:  # onnxruntime's error types are not a stable public API.
            reason = quote(error)
            raise AdmcError(f"{self.source}: onnxruntime failed on a batch of {x.shape[0]}: {reason}") from None
        return result
