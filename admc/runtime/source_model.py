"""Run the *source* model (the user's ONNX file or PyTorch program) as a float64 velocity function.

Requires: an ONNX file, a ``.pt2`` file written by ``torch.export.save``, a ``torch.export.ExportedProgram``
or an ``nn.Module``, whose two inputs are the state x [B, d] and the time t ([B] or [B, 1]).
Guarantees: ``velocity(x, t)`` takes x float64 [B, d] and t float64 [B] (a scalar is broadcast) and returns
float64 [B, d], computed in float64 end to end where the model allows it:
- ONNX: every float tensor in the model (initializers, Constant / ConstantOfShape values, Cast targets,
  ``dtype`` attributes, graph input / output / value_info types, subgraphs) is rewritten to double, and
  onnxruntime runs it on the CPU with one thread and no graph optimisations, so runs are reproducible and
  the arithmetic is the model's own.
- torch: parameters, buffers and tensor constants are converted to float64, and in an exported graph every
  op that creates a tensor with an explicit low-precision float ``dtype`` is rewritten to float64. An
  ``nn.Module`` that still computes in float32 internally (``x.float()``, a float32 constant created in
  ``forward``) cannot be rewritten: if its output is not float64 the result is float32-accurate only, so
  ``output_dtype`` records the dtype and a ``RuntimeWarning`` says so once.
Unreadable files and models that are not of the expected form raise ``AdmcError`` naming the path.
Nothing is unpickled: ``.pt2`` files are read with ``torch.export.load``.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import numpy_helper

from admc.core.errors import AdmcError
from admc.frontends.onnx_import import load_onnx_model
from admc.frontends.signature import Signature, identify_signature
from admc.frontends.torch_export import _check_archive_is_safe
from admc.ir.graph import GraphInput

_LOW_PRECISION_ONNX = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
_LOW_PRECISION_TORCH = {torch.float32, torch.float16, torch.bfloat16}


class Velocity(ABC):
    """A float64 velocity function f(x, t) of a source model; subclasses implement ``_evaluate``."""

    source: str
    signature: Signature | None

    def __call__(self, x: np.ndarray, t: np.ndarray | float,
                 conditions: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """``conditions``: per-sample condition inputs ``name → [B, ...]`` for conditional models."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise AdmcError(f"{self.source}: state must be [B, d], got shape {x.shape}")
        if self.signature is not None and x.shape[1] != self.signature.state_dimension:
            raise AdmcError(
                f"{self.source}: state has {x.shape[1]} features, the model's input "
                f"'{self.signature.state_input}' has {self.signature.state_dimension}"
            )
        # Own, writable, contiguous copies: runners may hand them to torch without copying.
        t = np.array(np.broadcast_to(np.asarray(t, dtype=np.float64).reshape(-1), (x.shape[0],)))
        if conditions:
            result = np.asarray(self._evaluate(np.array(x), t, conditions))
        else:
            result = np.asarray(self._evaluate(np.array(x), t))
        if result.shape != x.shape:
            raise AdmcError(
                f"{self.source}: the model returned shape {result.shape} for a state of shape {x.shape}; "
                "a velocity must have the state's shape"
            )
        return result.astype(np.float64, copy=False)

    @abstractmethod
    def _evaluate(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The model on contiguous float64 x [B, d] and t [B]."""


# ---------------------------------------------------------------- ONNX


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
    inputs = []
    for value in model.graph.input:
        if value.name in initializer_names:
            continue
        shape: list[int | str | None] = []
        for dimension in value.type.tensor_type.shape.dim:
            if dimension.HasField("dim_value"):
                shape.append(int(dimension.dim_value))
            elif dimension.HasField("dim_param"):
                shape.append(dimension.dim_param)
            else:
                shape.append(None)
        integer = value.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
        inputs.append(GraphInput(value.name, tuple(shape), integer))
    return inputs


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
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise AdmcError(f"{path}: onnxruntime cannot run the model in float64: {reason}") from None
        self._output = model.graph.output[0].name

    def _evaluate(self, x: np.ndarray, t: np.ndarray, conditions: dict | None = None) -> np.ndarray:
        assert self.signature is not None
        time = t if self.signature.time_rank == 1 else t.reshape(-1, 1)
        feeds = {
            self.signature.state_input: x.astype(self.input_dtype),
            self.signature.time_input: time.astype(self.input_dtype),
        }
        for condition in self.signature.conditions:
            if conditions is None or condition.name not in conditions:
                raise AdmcError(f"{self.source}: condition input '{condition.name}' was not given")
            dtype = self._condition_dtypes[condition.name]
            if np.issubdtype(dtype, np.floating):
                dtype = self.input_dtype
            value = np.asarray(conditions[condition.name]).reshape((x.shape[0], *condition.shape))
            feeds[condition.name] = value.astype(dtype)
        try:
            (result,) = self._session.run([self._output], feeds)
        except Exception as error:  # onnxruntime's error types are not a stable public API.
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise AdmcError(f"{self.source}: onnxruntime failed on a batch of {x.shape[0]}: {reason}") from None
        return result


# ---------------------------------------------------------------- torch


def _to_float64_dtype(value: Any) -> Any:
    if isinstance(value, torch.dtype) and value in _LOW_PRECISION_TORCH:
        return torch.float64
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float64_dtype(item) for item in value)
    return value


def _module_to_float64(module: torch.nn.Module, exported: bool = False) -> torch.nn.Module:
    """``module`` in float64; explicit float dtypes in an fx graph are rewritten.

    ``exported`` marks the module of an ``ExportedProgram``: fresh (so converted in place) and already
    fixed in eval semantics (it refuses ``.eval()``). Any other module is copied and put in eval mode.
    """
    module = (module if exported else copy.deepcopy(module)).to(torch.float64)
    registered = {id(tensor) for tensor in list(module.parameters()) + list(module.buffers())}
    for submodule in module.modules():
        # Lifted constants of an exported program are plain tensor attributes that .to() does not touch.
        for name, value in list(vars(submodule).items()):
            if isinstance(value, torch.Tensor) and id(value) not in registered and value.dtype in _LOW_PRECISION_TORCH:
                setattr(submodule, name, value.to(torch.float64))
    if isinstance(module, torch.fx.GraphModule):
        for node in module.graph.nodes:
            node.args = _to_float64_dtype(node.args)
            node.kwargs = {key: _to_float64_dtype(value) for key, value in node.kwargs.items()}
        module.recompile()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module if exported else module.eval()


def _dimension(size: Any) -> int | str:
    return int(size) if isinstance(size, int) else str(size)


def _exported_inputs(program: torch.export.ExportedProgram) -> list[GraphInput]:
    user_inputs = set(program.graph_signature.user_inputs)
    inputs = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            shape = tuple(_dimension(size) for size in value.shape) if value is not None else ()
            integer = value is not None and not value.is_floating_point()
            inputs.append(GraphInput(node.name, shape, integer))
    return inputs


def _example_inputs(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[GraphInput]:
    try:
        names = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        names = []
    if len(names) != len(example_inputs):
        names = [f"input{index}" for index in range(len(example_inputs))]
    # The batch dimension is symbolic; the rest is what the example shows.
    return [
        GraphInput(name, ("B", *(int(size) for size in tensor.shape[1:])) if tensor.dim() else (),
                   not tensor.is_floating_point())
        for name, tensor in zip(names, example_inputs, strict=True)
    ]


class TorchVelocity(Velocity):
    """A PyTorch program or module run in float64 under ``torch.no_grad()``.

    ``nn.Module`` without ``example_inputs`` is called as ``module(x, t)`` with t of shape [B]; give example
    inputs (in the module's argument order) when t is [B, 1] or the arguments are in another order.
    """

    def __init__(
        self,
        program_or_module: torch.export.ExportedProgram | torch.nn.Module | str | Path,
        example_inputs: tuple[torch.Tensor, ...] | None = None,
        time_input: str | None = None,
        condition_inputs: tuple[str, ...] = (),
    ) -> None:
        source = program_or_module
        if isinstance(source, (str, Path)):
            self.source = str(source)
            # Refuse archives that would make torch unpickle objects or load native code.
            _check_archive_is_safe(Path(source))
            try:
                source = torch.export.load(str(source))
            except Exception as error:  # torch.export.load raises many types for bad archives.
                raise AdmcError(f"{self.source}: cannot read .pt2 program ({type(error).__name__}: {error})") from None
        else:
            self.source = type(source).__name__
        self._state_position = 0
        if isinstance(source, torch.export.ExportedProgram):
            self.signature = identify_signature(_exported_inputs(source), self.source, time_input,
                                                tuple(condition_inputs))
            names = [graph_input.name for graph_input in _exported_inputs(source)]
            module = source.module()
        elif isinstance(source, torch.nn.Module):
            module = source
            if example_inputs is not None:
                inputs = _example_inputs(module, tuple(example_inputs))
                self.signature = identify_signature(inputs, self.source, time_input, tuple(condition_inputs))
                names = [graph_input.name for graph_input in inputs]
            else:
                self.signature = None
                names = ["x", "t"]
        else:
            raise AdmcError(f"{self.source}: expected a torch.export.ExportedProgram, an nn.Module or a .pt2 path")
        if self.signature is not None:
            self._state_position = names.index(self.signature.state_input)
        self._names = names
        # program.module() builds a fresh module that nobody else holds; a user's module is copied.
        self._module = _module_to_float64(module, exported=isinstance(source, torch.export.ExportedProgram))
        self.output_dtype: torch.dtype | None = None

    @property
    def precision_loss(self) -> bool:
        """True when the model returned a lower-precision float: the reference is then not float64-exact."""
        return self.output_dtype is not None and self.output_dtype != torch.float64

    def _arguments(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        time = t if self.signature is None or self.signature.time_rank == 1 else t.reshape(-1, 1)
        return (x, time) if self._state_position == 0 else (time, x)

    def _check_output(self, output: Any) -> torch.Tensor:
        if isinstance(output, (tuple, list)) and len(output) == 1:
            output = output[0]
        if not isinstance(output, torch.Tensor):
            raise AdmcError(f"{self.source}: the model returned {type(output).__name__}, expected one tensor [B, d]")
        if self.output_dtype is None:
            self.output_dtype = output.dtype
            if self.precision_loss:
                warnings.warn(
                    f"{self.source}: the model computes in {output.dtype} internally; the float64 reference "
                    "is only as accurate as that dtype",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return output

    def _conditioned_arguments(self, x: torch.Tensor, t: torch.Tensor, conditions: dict | None) -> tuple:
        """All inputs in the model's order, conditions as given per sample (class indices as int64)."""
        assert self.signature is not None
        time = t if self.signature.time_rank == 1 else t.reshape(-1, 1)
        values = {self.signature.state_input: x, self.signature.time_input: time}
        for condition in self.signature.conditions:
            if conditions is None or condition.name not in conditions:
                raise AdmcError(f"{self.source}: condition input '{condition.name}' was not given")
            value = np.asarray(conditions[condition.name]).reshape((x.shape[0], *condition.shape))
            values[condition.name] = torch.from_numpy(
                value.astype(np.int64) if condition.kind == "index" else value.astype(np.float64))
        return tuple(values[name] for name in self._names)

    def _evaluate(self, x: np.ndarray, t: np.ndarray, conditions: dict | None = None) -> np.ndarray:
        with torch.no_grad():
            try:
                if self.signature is not None and self.signature.conditions:
                    arguments = self._conditioned_arguments(torch.from_numpy(x), torch.from_numpy(t), conditions)
                else:
                    arguments = self._arguments(torch.from_numpy(x), torch.from_numpy(t))
                output = self._module(*arguments)
            except AdmcError:
                raise
            except Exception as error:  # a module can raise anything; report it against the source.
                raise AdmcError(f"{self.source}: the model failed on a batch of {x.shape[0]}: {error}") from None
            return self._check_output(output).to(torch.float64).numpy()

    def jacobian(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Per-sample Jacobian ∂f/∂x, [B, d, d], by reverse-mode autograd (samples are independent)."""
        state = torch.from_numpy(np.array(x, dtype=np.float64)).requires_grad_(True)
        time = torch.from_numpy(np.broadcast_to(np.asarray(t, dtype=np.float64), (x.shape[0],)).copy())
        with torch.enable_grad():
            output = self._check_output(self._module(*self._arguments(state, time))).to(torch.float64)
            rows = []
            for feature in range(output.shape[1]):
                # Each output row depends only on its own sample, so the batch sum separates the samples.
                (gradient,) = torch.autograd.grad(output[:, feature].sum(), state, retain_graph=True)
                rows.append(gradient)
        return torch.stack(rows, dim=1).numpy()


def make_velocity(
    model_path_or_module: str | Path | torch.nn.Module | torch.export.ExportedProgram,
    time_input: str | None = None,
    condition_inputs: tuple[str, ...] = (),
) -> Velocity:
    """``OnnxVelocity`` for ``.onnx`` paths; ``TorchVelocity`` for ``.pt2`` paths, modules and programs."""
    conditions = tuple(condition_inputs)
    if isinstance(model_path_or_module, (torch.nn.Module, torch.export.ExportedProgram)):
        return TorchVelocity(model_path_or_module, time_input=time_input, condition_inputs=conditions)
    path = Path(model_path_or_module)
    if not path.exists():
        raise AdmcError(f"{path}: no such model file")
    if path.suffix == ".onnx":
        return OnnxVelocity(path, time_input=time_input, condition_inputs=conditions)
    if path.suffix == ".pt2":
        return TorchVelocity(path, time_input=time_input, condition_inputs=conditions)
    raise AdmcError(f"{path}: unknown model format '{path.suffix}'; expected .onnx or .pt2")
