"""The torch.export frontend: an ``ExportedProgram`` (or a ``.pt2`` archive, or a live module) → graph IR.

Requires: a program from ``torch.export.export`` in its default (pre-decomposition) aten dialect, or any
later dialect (core aten ops such as ``addmm``/``mm`` are mapped too); ``.pt2`` files written by
``torch.export.save`` in the current archive format.

Guarantees:
- Every aten op becomes IR ops with ONNX names and ONNX semantics (see ``admc.ir.evaluate``), so
  ``evaluate_graph`` on the result computes what the module computes, in float64. ``Op.name`` is the fx node
  name (auxiliary ops, e.g. the ``Mul`` for ``add``'s ``alpha``, are named ``<node>/<role>``) and
  ``Op.source_op`` the aten overload name (``aten.linear.default``).
- Known-unsupported ops keep a recognisable ONNX name (``Conv``, ``Softmax``, ``Gelu``, ``Attention`` ...)
  and any other op keeps its aten overload name as ``op_type``, so later stages refuse both uniformly.
- Parameters, buffers and lifted tensor constants become ``Graph.constants`` (float64 for floating dtypes,
  int64 for integers), named by their placeholder names (``p_l1_weight``). Ops without runtime tensor inputs
  (``arange``, ``full``, ``ones`` ...) are evaluated at import time and become constants too.
- ``Graph.inputs`` are the user inputs only, named by their placeholder names, which torch.export takes from
  the ``forward()`` parameter names; a dynamic dimension appears as the string of its symbol (``"s13"``).
  ``Graph.outputs`` are the user outputs. ``state_input``/``time_input`` are left empty.
- ``load_pt2`` inspects the archive before torch opens it and refuses members torch would unpickle or load
  as native code, so only tensor payloads and JSON are read from a file.
Bad input raises ``AdmcError`` naming the source, the node, the op and the reason.
"""

from __future__ import annotations

import io
import json
import operator
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from admc.core import limits
from admc.core.errors import AdmcError
from admc.core.safe_files import check_regular
from admc.ir.graph import Graph, GraphInput, Op

# ONNX Slice/Reshape use int64 limits for "to the end"; torch.export writes the same sentinel.
_INT64_MAX = 9223372036854775807

_UNARY = {
    "tanh": "Tanh",
    "sin": "Sin",
    "cos": "Cos",
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "reciprocal": "Reciprocal",
    "sigmoid": "Sigmoid",
    "relu": "Relu",
    "neg": "Neg",
    "abs": "Abs",
}

# Ops admc cannot compile, renamed so that every later stage refuses them by one ONNX name.
_REFUSED = {
    "conv1d": "Conv",
    "conv2d": "Conv",
    "conv3d": "Conv",
    "convolution": "Conv",
    "_convolution": "Conv",
    "conv_transpose1d": "Conv",
    "conv_transpose2d": "Conv",
    "conv_transpose3d": "Conv",
    "softmax": "Softmax",
    "_softmax": "Softmax",
    "gelu": "Gelu",
    "silu": "Silu",
    "scaled_dot_product_attention": "Attention",
    "_scaled_dot_product_flash_attention_for_cpu": "Attention",
    "_scaled_dot_product_efficient_attention": "Attention",
    "_scaled_dot_product_flash_attention": "Attention",
    "layer_norm": "LayerNormalization",
    "native_layer_norm": "LayerNormalization",
    "leaky_relu": "LeakyRelu",
    "elu": "Elu",
    "hardtanh": "HardTanh",
    "softplus": "Softplus",
}

_CASTS = {"_to_copy", "to", "type_as", "clone", "contiguous", "alias", "detach", "detach_", "lift_fresh"}
_FACTORIES = {"arange", "full", "ones", "zeros", "scalar_tensor", "lift_fresh_copy", "linspace", "eye"}
_TRANSPOSES = {"t", "numpy_T", "permute", "transpose"}
_RESHAPES = {"view", "reshape", "_unsafe_view"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow"}


def import_exported_program(program: ExportedProgram, source: str) -> Graph:
    """Translate an exported program into the graph IR; ``source`` names it in error messages."""
    return _Importer(program, source).run()


def export_module(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                  source: str = "<module>") -> ExportedProgram:
    """``torch.export`` of ``module`` in eval mode on ``example_inputs``.

    The leading (batch) dimension of every input with at least two rows is exported as ``Dim.AUTO``, so it
    stays symbolic unless the model ties it to a constant.
    """
    dynamic_shapes = tuple(
        {0: Dim.AUTO} if tensor.dim() >= 1 and tensor.shape[0] >= 2 else None for tensor in example_inputs
    )
    try:
        return torch.export.export(module.eval(), example_inputs, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as error:  # torch raises many types here; the user needs one line, not torch's stack
        raise AdmcError(f"{source}: torch.export failed: {_first_line(error)}") from None


def import_module(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], source: str = "<module>") -> Graph:
    """Export ``module`` (see ``export_module``) and import it."""
    return import_exported_program(export_module(module, example_inputs, source), source)


def load_pt2(path: str | Path) -> Graph:
    """Load a ``torch.export.save`` archive and import it; the path is the graph's ``source``."""
    path = Path(path)
    check_regular(path, "model file")
    if path.stat().st_size > limits.MODEL_BYTES:
        raise AdmcError(f"{path}: model file is larger than {limits.MODEL_BYTES} bytes")
    if path.suffix != ".pt2":
        raise AdmcError(f"{path}: not a .pt2 file (expected an archive written by torch.export.save)")
    _check_archive_is_safe(path)
    try:
        program = torch.export.load(str(path))
    except Exception as error:  # corrupt archives surface as many torch exception types
        raise AdmcError(f"{path}: cannot read torch.export archive: {_first_line(error)}") from None
    return import_exported_program(program, str(path))


def _first_line(error: BaseException) -> str:
    """The error's text on one line (the one-line formatter shortens it if needed)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


# --- archive safety ------------------------------------------------------------------------------------

_UNSAFE_DIRECTORIES = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")


def _check_archive_is_safe(path: Path) -> None:
    """Refuse archives whose loading would unpickle arbitrary objects or load compiled code."""
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                raise AdmcError(f"{path}: corrupt archive member")
            members = {_strip_root(name): name for name in archive.namelist()}
            _check_members(path, members)
            for member, name in members.items():
                if member.endswith("_config.json") and member.startswith(("data/weights/", "data/constants/")):
                    _check_payload_config(path, member, archive.read(name))
                elif member.startswith("data/sample_inputs/"):
                    _check_sample_inputs(path, member, archive.read(name))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError,
            RecursionError, NotImplementedError) as error:
        raise AdmcError(f"{path}: not a readable .pt2 archive ({_first_line(error)})") from None


def _strip_root(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else name


def _check_members(path: Path, members: dict[str, str]) -> None:
    if not any(member.startswith("models/") and member.endswith(".json") for member in members):
        raise AdmcError(f"{path}: no exported program in the archive (not written by torch.export.save?)")
    for member in members:
        if member.startswith(_UNSAFE_DIRECTORIES):
            raise AdmcError(f"{path}: archive member '{member}' holds compiled code; refusing to load it")
        if member.startswith(("data/weights/", "data/constants/")) and member.endswith(".pt"):
            raise AdmcError(f"{path}: archive member '{member}' is a pickle (legacy format); refusing to load it")


def _check_payload_config(path: Path, member: str, content: bytes) -> None:
    data = json.loads(content)
    config = data.get("config", {}) if isinstance(data, dict) else None
    if not isinstance(config, dict) or not all(isinstance(payload, dict) for payload in config.values()):
        raise AdmcError(f"{path}: {member} is not a weights configuration (a mapping of tensor entries)")
    for fully_qualified_name, payload in config.items():
        if payload.get("use_pickle") or not str(payload.get("path_name", "")).startswith(("weight_", "tensor_")):
            raise AdmcError(
                f"{path}: '{fully_qualified_name}' in {member} is a pickled object, not raw tensor data; "
                "refusing to unpickle it"
            )


def _check_sample_inputs(path: Path, member: str, content: bytes) -> None:
    # torch retries with an unrestricted unpickler when this fails, so it must succeed restricted first.
    try:
        torch.load(io.BytesIO(content), weights_only=True)
    except Exception:  # any failure of the restricted unpickler means the content is not plain tensors
        raise AdmcError(f"{path}: {member} is not plain tensor data; refusing to unpickle it") from None


# --- graph translation ---------------------------------------------------------------------------------


def _is_tensor_value(node: torch.fx.Node) -> bool:
    return isinstance(node.meta.get("val"), torch.Tensor)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        return tensor.to(torch.float64).numpy().copy()
    if tensor.dtype == torch.bool:
        return tensor.numpy().copy()
    return tensor.to(torch.int64).numpy().copy()


def _scalar_array(value: Any) -> np.ndarray:
    if isinstance(value, bool):
        return np.asarray(value)
    if isinstance(value, int):
        return np.asarray(value, dtype=np.int64)
    return np.asarray(float(value), dtype=np.float64)


def _dimension(size: Any) -> int | str:
    return int(size) if isinstance(size, int) else str(size)


def _literal(value: Any) -> Any:
    """A plain Python form of an op argument, kept as an attribute for error messages and later stages."""
    if isinstance(value, (list, tuple)):
        return [_literal(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class _Importer:
    """One translation; holds the growing op list and constants."""

    def __init__(self, program: ExportedProgram, source: str) -> None:
        self.program = program
        self.source = source
        self.ops: list[Op] = []
        self.constants: dict[str, np.ndarray] = {}
        self.constant_tensors: dict[str, torch.Tensor] = {}
        self.inputs: list[GraphInput] = []
        self.symbolic: set[str] = set()
        self.aliases: dict[str, str] = {}
        self.handlers = self._handlers()

    def run(self) -> Graph:
        self._import_placeholders()
        for node in self.program.graph.nodes:
            if node.op == "call_function":
                self._import_call(node)
        return Graph(
            ops=self.ops,
            inputs=self.inputs,
            outputs=self._user_outputs(),
            constants=self.constants,
            source=self.source,
        )

    # -- errors and names --

    def error(self, node: torch.fx.Node, reason: str) -> AdmcError:
        return AdmcError(f"{self.source}: node '{node.name}' op {_target_name(node)}: {reason}")

    def add_constant(self, name: str, value: np.ndarray) -> str:
        self.constants[name] = value
        return name

    def emit(
        self,
        node: torch.fx.Node,
        op_type: str,
        inputs: list[str],
        attributes: dict[str, Any] | None = None,
        role: str = "",
    ) -> str:
        """Append one op for ``node``; ``role`` names an auxiliary op, the node's own op has none."""
        name = f"{node.name}/{role}" if role else node.name
        self.ops.append(
            Op(
                name=name,
                op_type=op_type,
                inputs=tuple(inputs),
                outputs=(name,),
                attributes=attributes or {},
                source_op=_target_name(node),
            )
        )
        return name

    # -- placeholders and outputs --

    def _import_placeholders(self) -> None:
        placeholders = {node.name: node for node in self.program.graph.nodes if node.op == "placeholder"}
        for spec in self.program.graph_signature.input_specs:
            name = getattr(spec.arg, "name", None)
            node = placeholders.get(name) if name else None
            if spec.kind == InputKind.USER_INPUT:
                self._import_user_input(spec, node)
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                self._import_state(spec, name)
            elif node is not None and node.users:
                raise AdmcError(f"{self.source}: input '{name}' of kind {spec.kind.name} is not supported")

    def _import_user_input(self, spec: Any, node: torch.fx.Node | None) -> None:
        if node is None or not _is_tensor_value(node):
            if node is not None and node.users:
                raise AdmcError(f"{self.source}: input '{spec.arg.name}' is not a tensor; admc needs tensors")
            return
        shape = tuple(_dimension(size) for size in node.meta["val"].shape)
        integer = not node.meta["val"].is_floating_point()
        self.inputs.append(GraphInput(name=node.name, shape=shape, integer=integer))

    def _import_state(self, spec: Any, name: str) -> None:
        target = spec.target
        tensor = self.program.state_dict.get(target)
        if tensor is None:
            tensor = self.program.constants.get(target)
        if not isinstance(tensor, torch.Tensor):
            raise AdmcError(f"{self.source}: input '{name}' ({target}) has no tensor value in the program")
        self.constant_tensors[name] = tensor.detach()
        self.add_constant(name, _to_numpy(tensor))

    def _user_outputs(self) -> list[str]:
        outputs = []
        for spec in self.program.graph_signature.output_specs:
            if spec.kind != OutputKind.USER_OUTPUT:
                continue
            name = getattr(spec.arg, "name", None)
            if name is None:
                raise AdmcError(f"{self.source}: output {spec.arg} is not a tensor; admc needs tensor outputs")
            outputs.append(self.aliases.get(name, name))
        return outputs

    # -- argument helpers --

    def value(self, node: torch.fx.Node, argument: Any, role: str) -> str:
        """The IR value name of a tensor argument; Python scalars become constants named ``<node>/<role>``."""
        if isinstance(argument, torch.fx.Node):
            if argument.name in self.symbolic:
                raise self.error(node, f"argument '{role}' is a size computed from the input shape")
            return self.aliases.get(argument.name, argument.name)
        if argument is None:
            return ""
        if isinstance(argument, (bool, int, float)):
            return self.add_constant(f"{node.name}/{role}", _scalar_array(argument))
        raise self.error(node, f"argument '{role}' of type {type(argument).__name__} is not a tensor or scalar")

    def integer_constant(self, node: torch.fx.Node, role: str, values: list[int]) -> str:
        return self.add_constant(f"{node.name}/{role}", np.asarray(values, dtype=np.int64))

    # -- dispatch --

    def _import_call(self, node: torch.fx.Node) -> None:
        if node.target is operator.getitem:
            self._import_getitem(node)
            return
        value = node.meta.get("val")
        if not isinstance(node.target, torch._ops.OpOverload):
            if not isinstance(value, (torch.Tensor, list, tuple)):
                self.symbolic.add(node.name)
                return
            self._import_generic(node, _target_name(node))
            return
        packet = node.target.overloadpacket.__name__
        if packet.startswith(("_assert", "sym_constrain")) or packet == "sym_size" or value is None:
            self.symbolic.add(node.name)
            return
        if not isinstance(value, (torch.Tensor, list, tuple)):
            self.symbolic.add(node.name)
            return
        handler = self.handlers.get(packet)
        if handler is None:
            self._import_generic(node, _target_name(node))
        else:
            handler(node, _bound_arguments(node))

    def _handlers(self) -> dict[str, Callable[[torch.fx.Node, dict[str, Any]], None]]:
        handlers: dict[str, Callable[[torch.fx.Node, dict[str, Any]], None]] = {}
        for packet in _UNARY:
            handlers[packet] = self._import_unary
        for packet in _REFUSED:
            handlers[packet] = self._import_refused
        for packet in _BINARY:
            handlers[packet] = self._import_binary
        for packet in _CASTS:
            handlers[packet] = self._import_cast
        for packet in _FACTORIES:
            handlers[packet] = self._import_factory
        for packet in _TRANSPOSES:
            handlers[packet] = self._import_transpose
        for packet in _RESHAPES:
            handlers[packet] = self._import_reshape
        handlers.update(
            rsub=self._import_rsub,
            linear=self._import_linear,
            addmm=self._import_addmm,
            mm=self._import_matmul,
            matmul=self._import_matmul,
            bmm=self._import_matmul,
            cat=self._import_concat,
            concat=self._import_concat,
            unsqueeze=self._import_unsqueeze,
            squeeze=self._import_squeeze,
            flatten=self._import_flatten,
            expand=self._import_expand,
            slice=self._import_slice,
            select=self._import_select,
            embedding=self._import_embedding,
            dropout=self._import_dropout,
        )
        return handlers

    # -- generic and multi-output ops --

    def _import_getitem(self, node: torch.fx.Node) -> None:
        producer, index = node.args
        if not isinstance(producer, torch.fx.Node) or producer.name in self.symbolic:
            self.symbolic.add(node.name)
            return
        self.aliases[node.name] = f"{producer.name}:{index}"

    def _import_generic(self, node: torch.fx.Node, op_type: str) -> None:
        inputs, attributes = [], {}
        arguments = _bound_arguments(node) if isinstance(node.target, torch._ops.OpOverload) else {}
        if not arguments:
            arguments = {f"arg{index}": argument for index, argument in enumerate(node.args)}
            arguments.update(node.kwargs)
        for role, argument in arguments.items():
            tensors = [item for item in _flatten_arguments(argument) if isinstance(item, torch.fx.Node)]
            if tensors:
                inputs.extend(self.value(node, tensor, role) for tensor in tensors)
            else:
                attributes[role] = _literal(argument)
        value = node.meta.get("val")
        outputs = (node.name,)
        if isinstance(value, (list, tuple)):
            outputs = tuple(f"{node.name}:{index}" for index in range(len(value)))
        self.ops.append(Op(node.name, op_type, tuple(inputs), outputs, attributes, source_op=_target_name(node)))

    def _import_refused(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        self._import_generic(node, _REFUSED[node.target.overloadpacket.__name__])

    # -- elementwise --

    def _import_unary(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        operand = self.value(node, arguments["self"], "self")
        self.emit(node, _UNARY[node.target.overloadpacket.__name__], [operand])

    def _import_binary(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        packet = node.target.overloadpacket.__name__
        if packet == "div" and arguments.get("rounding_mode") is not None:
            self._import_generic(node, _target_name(node))
            return
        right_role = "exponent" if packet == "pow" else "other"
        left = self.value(node, arguments["self"], "self")
        right = self.value(node, arguments[right_role], right_role)
        alpha = arguments.get("alpha", 1)
        if packet in ("add", "sub") and alpha != 1:
            right = self.emit(node, "Mul", [right, self.value(node, alpha, "alpha")], role="scaled")
        self.emit(node, _BINARY[packet], [left, right])

    def _import_rsub(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        subtrahend = self.value(node, arguments["self"], "self")
        alpha = arguments.get("alpha", 1)
        if alpha != 1:
            subtrahend = self.emit(node, "Mul", [subtrahend, self.value(node, alpha, "alpha")], role="scaled")
        self.emit(node, "Sub", [self.value(node, arguments["other"], "other"), subtrahend])

    def _import_cast(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        operand = arguments["self"]
        source_dtype = operand.meta["val"].dtype if isinstance(operand, torch.fx.Node) else None
        target_dtype = node.meta["val"].dtype
        if source_dtype is not None and source_dtype != target_dtype:
            self.emit(node, "Cast", [self.value(node, operand, "self")], {"to": str(target_dtype)})
        else:
            self.emit(node, "Identity", [self.value(node, operand, "self")])

    def _import_dropout(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        if arguments.get("train"):
            self._import_generic(node, _target_name(node))
        else:
            self.emit(node, "Identity", [self.value(node, arguments["input"], "input")])

    def _import_factory(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        """Ops with no runtime tensor input: run them in torch now and keep the result as a constant."""

        def resolve(argument: Any) -> Any:
            if isinstance(argument, torch.fx.Node):
                if argument.name not in self.constant_tensors:
                    raise self.error(node, f"argument '{argument.name}' is not a constant; cannot fold")
                return self.constant_tensors[argument.name]
            return argument

        args = torch.fx.node.map_aggregate(node.args, resolve)
        kwargs = torch.fx.node.map_aggregate(dict(node.kwargs), resolve)
        with torch.no_grad():
            result = node.target(*args, **kwargs)
        self.constant_tensors[node.name] = result
        self.add_constant(node.name, _to_numpy(result))

    # -- linear algebra --

    def _import_linear(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        data = self.value(node, arguments["input"], "input")
        weight = self.value(node, arguments["weight"], "weight")
        bias = self.value(node, arguments.get("bias"), "bias")
        if _rank(arguments["input"]) == 2:
            self.emit(node, "Gemm", [data, weight, bias] if bias else [data, weight], {"transB": 1})
            return
        # ONNX Gemm is 2-D only; other ranks use the MatMul + Add form ONNX exporters produce.
        transposed = self.emit(node, "Transpose", [weight], {"perm": [1, 0]}, role="weight_t")
        if not bias:
            self.emit(node, "MatMul", [data, transposed])
            return
        product = self.emit(node, "MatMul", [data, transposed], role="matmul")
        self.emit(node, "Add", [product, bias])

    def _import_addmm(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        inputs = [
            self.value(node, arguments["mat1"], "mat1"),
            self.value(node, arguments["mat2"], "mat2"),
            self.value(node, arguments["self"], "self"),
        ]
        attributes = {"alpha": float(arguments.get("alpha", 1)), "beta": float(arguments.get("beta", 1))}
        self.emit(node, "Gemm", inputs, attributes)

    def _import_matmul(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        right_role = "other" if "other" in arguments else "mat2"
        left = self.value(node, arguments["self"], "self")
        self.emit(node, "MatMul", [left, self.value(node, arguments[right_role], right_role)])

    # -- shape glue --

    def _import_concat(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        parts = [self.value(node, part, f"tensors{index}") for index, part in enumerate(arguments["tensors"])]
        axis = _normalise_axis(int(arguments.get("dim", 0)), len(node.meta["val"].shape))
        self.emit(node, "Concat", parts, {"axis": axis})

    def _import_reshape(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        data = arguments["self"]
        shape = self._reshape_target(node, _shape(data), _shape(node))
        self.emit(node, "Reshape", [self.value(node, data, "self"), self.integer_constant(node, "shape", shape)])

    def _reshape_target(
        self, node: torch.fx.Node, source: tuple[int | str, ...], target: tuple[int | str, ...]
    ) -> list[int]:
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
            raise self.error(node, f"cannot express reshape to {list(target)} with one inferred dimension")
        return sizes

    def _import_unsqueeze(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        axis = _normalise_axis(int(arguments["dim"]), len(_shape(node)))
        data = self.value(node, arguments["self"], "self")
        self.emit(node, "Unsqueeze", [data, self.integer_constant(node, "axes", [axis])])

    def _import_squeeze(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        shape = _shape(arguments["self"])
        requested = arguments.get("dim")
        if requested is None:
            requested = range(len(shape))
        elif isinstance(requested, int):
            requested = [requested]
        # torch ignores squeezing a dimension that is not 1; ONNX rejects it, so only true unit axes remain.
        axes = sorted({_normalise_axis(int(axis), len(shape)) for axis in requested})
        axes = [axis for axis in axes if shape[axis] == 1]
        data = self.value(node, arguments["self"], "self")
        if axes:
            self.emit(node, "Squeeze", [data, self.integer_constant(node, "axes", axes)])
        else:
            self.emit(node, "Identity", [data])

    def _import_flatten(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        source = _shape(arguments["self"])
        rank = len(source)
        start = _normalise_axis(int(arguments.get("start_dim", 0)), max(rank, 1))
        end = _normalise_axis(int(arguments.get("end_dim", -1)), max(rank, 1))
        data = self.value(node, arguments["self"], "self")
        if rank >= 2 and start == 1 and end == rank - 1:
            self.emit(node, "Flatten", [data], {"axis": 1})
            return
        shape = self._reshape_target(node, source, _shape(node))
        self.emit(node, "Reshape", [data, self.integer_constant(node, "shape", shape)])

    def _import_transpose(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        rank = len(_shape(arguments["self"]))
        packet = node.target.overloadpacket.__name__
        if packet == "permute":
            perm = [_normalise_axis(int(axis), rank) for axis in arguments["dims"]]
        elif packet == "transpose":
            perm = list(range(rank))
            first = _normalise_axis(int(arguments["dim0"]), rank)
            second = _normalise_axis(int(arguments["dim1"]), rank)
            perm[first], perm[second] = perm[second], perm[first]
        else:
            perm = list(reversed(range(rank)))
        self.emit(node, "Transpose", [self.value(node, arguments["self"], "self")], {"perm": perm})

    def _import_expand(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        source = _shape(arguments["self"])
        target = _shape(node)
        offset = len(target) - len(source)
        sizes = []
        for axis, size in enumerate(target):
            source_size = source[axis - offset] if axis >= offset else 1
            if isinstance(size, int):
                sizes.append(size)
            elif source_size == size:
                sizes.append(1)  # ONNX Expand broadcasts both ways: 1 keeps the input's (dynamic) size
            else:
                raise self.error(node, f"expands to the dynamic size {size}; only static expansion is supported")
        data = self.value(node, arguments["self"], "self")
        self.emit(node, "Expand", [data, self.integer_constant(node, "shape", sizes)])

    def _import_slice(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        shape = _shape(arguments["self"])
        axis = _normalise_axis(int(arguments.get("dim", 0)), len(shape))
        start = self._slice_bound(node, arguments.get("start"), shape[axis], 0)
        end = self._slice_bound(node, arguments.get("end"), shape[axis], _INT64_MAX)
        step = int(arguments.get("step", 1))
        data = self.value(node, arguments["self"], "self")
        reaches_end = end == _INT64_MAX or (isinstance(shape[axis], int) and end >= shape[axis])
        if start == 0 and step == 1 and reaches_end:
            self.emit(node, "Identity", [data])
            return
        self._emit_slice(node, data, start, end, axis, step)

    def _emit_slice(
        self, node: torch.fx.Node, data: str, start: int, end: int, axis: int, step: int, role: str = ""
    ) -> str:
        prefix = f"{role}_" if role else ""
        inputs = [
            data,
            self.integer_constant(node, f"{prefix}starts", [start]),
            self.integer_constant(node, f"{prefix}ends", [end]),
            self.integer_constant(node, f"{prefix}axes", [axis]),
            self.integer_constant(node, f"{prefix}steps", [step]),
        ]
        return self.emit(node, "Slice", inputs, role=role)

    def _slice_bound(self, node: torch.fx.Node, bound: Any, size: int | str, default: int) -> int:
        if bound is None:
            return default
        if isinstance(bound, int):
            return min(bound, _INT64_MAX)
        symbol = bound.meta.get("val") if isinstance(bound, torch.fx.Node) else bound
        if str(symbol) == str(size):
            return _INT64_MAX  # slicing up to the dynamic size itself means "to the end"
        raise self.error(node, f"slice bound {symbol} depends on the input shape")

    def _import_embedding(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        # nn.Embedding: rows of the table selected by class indices (ONNX Gather on axis 0).
        table = self.value(node, arguments["weight"], "weight")
        self.emit(node, "Gather", [table, self.value(node, arguments["indices"], "indices")], {"axis": 0})

    def _import_select(self, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
        """``x[:, i]`` → Slice(i, i+1) then Squeeze, the ONNX form of an integer index."""
        shape = _shape(arguments["self"])
        axis = _normalise_axis(int(arguments["dim"]), len(shape))
        index = int(arguments["index"])
        end = _INT64_MAX if index == -1 else index + 1
        data = self.value(node, arguments["self"], "self")
        sliced = self._emit_slice(node, data, index, end, axis, 1, role="slice")
        self.emit(node, "Squeeze", [sliced, self.integer_constant(node, "axes", [axis])])


def _target_name(node: torch.fx.Node) -> str:
    if isinstance(node.target, torch._ops.OpOverload):
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def _bound_arguments(node: torch.fx.Node) -> dict[str, Any]:
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


def _flatten_arguments(argument: Any) -> list[Any]:
    if isinstance(argument, (list, tuple)):
        return [item for element in argument for item in _flatten_arguments(element)]
    return [argument]


def _shape(node: Any) -> tuple[int | str, ...]:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    if not isinstance(value, torch.Tensor):
        return ()
    return tuple(_dimension(size) for size in value.shape)


def _rank(node: Any) -> int:
    return len(_shape(node))


def _normalise_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
