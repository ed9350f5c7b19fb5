"""Handlers of the torch.export frontend for elementwise ops, casts, factories and matrix products.

Requires: an fx node of a known aten op, its arguments bound to the op schema's names, and the importer that
holds the growing graph. Guarantees: each handler appends the ONNX-named IR ops that compute what the aten op
computes, in ONNX semantics (``admc.ir.evaluate``); ops with no runtime tensor input are run in torch now and
kept as constants; known-unsupported ops keep a recognisable ONNX name so later stages refuse them uniformly.
``HANDLERS`` maps each aten overload packet name to its handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from admc.frontends.torch_nodes import rank, target_name, to_numpy

if TYPE_CHECKING:  # the importer dispatches to these handlers, so it imports this module
    from admc.frontends.torch_importer import TorchImporter

Handler = Callable[["TorchImporter", torch.fx.Node, dict[str, Any]], None]

UNARY = {
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
REFUSED = {
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

CASTS = {"_to_copy", "to", "type_as", "clone", "contiguous", "alias", "detach", "detach_", "lift_fresh"}
FACTORIES = {"arange", "full", "ones", "zeros", "scalar_tensor", "lift_fresh_copy", "linspace", "eye"}
BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow"}


def import_refused(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    importer.import_generic(node, REFUSED[node.target.overloadpacket.__name__])


def import_unary(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    operand = importer.value(node, arguments["self"], "self")
    importer.emit(node, UNARY[node.target.overloadpacket.__name__], [operand])


def import_binary(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    packet = node.target.overloadpacket.__name__
    if packet == "div" and arguments.get("rounding_mode") is not None:
        importer.import_generic(node, target_name(node))
        return
    right_role = "exponent" if packet == "pow" else "other"
    left = importer.value(node, arguments["self"], "self")
    right = importer.value(node, arguments[right_role], right_role)
    alpha = arguments.get("alpha", 1)
    if packet in ("add", "sub") and alpha != 1:
        right = importer.emit(node, "Mul", [right, importer.value(node, alpha, "alpha")], role="scaled")
    importer.emit(node, BINARY[packet], [left, right])


def import_rsub(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    subtrahend = importer.value(node, arguments["self"], "self")
    alpha = arguments.get("alpha", 1)
    if alpha != 1:
        subtrahend = importer.emit(node, "Mul", [subtrahend, importer.value(node, alpha, "alpha")], role="scaled")
    importer.emit(node, "Sub", [importer.value(node, arguments["other"], "other"), subtrahend])


def import_cast(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    operand = arguments["self"]
    source_dtype = operand.meta["val"].dtype if isinstance(operand, torch.fx.Node) else None
    target_dtype = node.meta["val"].dtype
    if source_dtype is not None and source_dtype != target_dtype:
        importer.emit(node, "Cast", [importer.value(node, operand, "self")], {"to": str(target_dtype)})
    else:
        importer.emit(node, "Identity", [importer.value(node, operand, "self")])


def import_dropout(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    if arguments.get("train"):
        importer.import_generic(node, target_name(node))
    else:
        importer.emit(node, "Identity", [importer.value(node, arguments["input"], "input")])


def import_factory(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    """Ops with no runtime tensor input: run them in torch now and keep the result as a constant."""

    def resolve(argument: Any) -> Any:
        if isinstance(argument, torch.fx.Node):
            if argument.name not in importer.constant_tensors:
                raise importer.error(node, f"argument '{argument.name}' is not a constant; cannot fold")
            return importer.constant_tensors[argument.name]
        return argument

    args = torch.fx.node.map_aggregate(node.args, resolve)
    kwargs = torch.fx.node.map_aggregate(dict(node.kwargs), resolve)
    with torch.no_grad():
        result = node.target(*args, **kwargs)
    importer.constant_tensors[node.name] = result
    importer.add_constant(node.name, to_numpy(result))


def import_linear(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    data = importer.value(node, arguments["input"], "input")
    weight = importer.value(node, arguments["weight"], "weight")
    bias = importer.value(node, arguments.get("bias"), "bias")
    if rank(arguments["input"]) == 2:
        importer.emit(node, "Gemm", [data, weight, bias] if bias else [data, weight], {"transB": 1})
        return
    # ONNX Gemm is 2-D only; other ranks use the MatMul + Add form ONNX exporters produce.
    transposed = importer.emit(node, "Transpose", [weight], {"perm": [1, 0]}, role="weight_t")
    if not bias:
        importer.emit(node, "MatMul", [data, transposed])
        return
    product = importer.emit(node, "MatMul", [data, transposed], role="matmul")
    importer.emit(node, "Add", [product, bias])


def import_addmm(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    inputs = [
        importer.value(node, arguments["mat1"], "mat1"),
        importer.value(node, arguments["mat2"], "mat2"),
        importer.value(node, arguments["self"], "self"),
    ]
    attributes = {"alpha": float(arguments.get("alpha", 1)), "beta": float(arguments.get("beta", 1))}
    importer.emit(node, "Gemm", inputs, attributes)


def import_matmul(importer: TorchImporter, node: torch.fx.Node, arguments: dict[str, Any]) -> None:
    right_role = "other" if "other" in arguments else "mat2"
    left = importer.value(node, arguments["self"], "self")
    importer.emit(node, "MatMul", [left, importer.value(node, arguments[right_role], right_role)])


HANDLERS: dict[str, Handler] = {
    **dict.fromkeys(UNARY, import_unary),
    **dict.fromkeys(REFUSED, import_refused),
    **dict.fromkeys(BINARY, import_binary),
    **dict.fromkeys(CASTS, import_cast),
    **dict.fromkeys(FACTORIES, import_factory),
    "rsub": import_rsub,
    "linear": import_linear,
    "addmm": import_addmm,
    "mm": import_matmul,
    "matmul": import_matmul,
    "bmm": import_matmul,
    "dropout": import_dropout,
}
