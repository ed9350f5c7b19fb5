"""Small models and exporters shared by the end-to-end tests (ONNX and .pt2 written inside each test).

Every module is called as ``module(x [B, d], t [B])`` and returns the velocity [B, d]. Weights are drawn
from a fixed seed and scaled down so implicit steps at Δt ≤ 1/4 contract comfortably.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

STATE_SIZE = 2
EXAMPLE_BATCH = 4
ONNX_OPSET = 17


def seeded(module: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """Deterministic weights: standard normal / sqrt(fan-in) times ``scale`` (biases too)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            fan_in = parameter.shape[-1] if parameter.dim() > 1 else max(parameter.numel(), 1)
            values = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.copy_((scale * values / math.sqrt(fan_in)).to(parameter.dtype))
    return module.eval()


class AdmForm(nn.Module):
    """ADM form: every layer is ``W tanh(h) + b + t e`` (tanh applied to the input too)."""

    def __init__(self, hidden: tuple[int, ...] = (16, 12), d: int = STATE_SIZE) -> None:
        super().__init__()
        sizes = [d, *hidden, d]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.time_vectors = nn.ParameterList(nn.Parameter(torch.zeros(size)) for size in sizes[1:])

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, time_vector in zip(self.layers, self.time_vectors, strict=True):
            h = layer(torch.tanh(h)) + t[:, None] * time_vector
        return h


class StandardMlp(nn.Module):
    """``Linear(cat[x, t]) → tanh → … → Linear``: the first layer reads x without tanh."""

    def __init__(self, hidden: tuple[int, ...] = (16, 16), d: int = STATE_SIZE) -> None:
        super().__init__()
        sizes = [d + 1, *hidden, d]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.layers[0](torch.cat([x, t[:, None]], dim=1))
        for layer in self.layers[1:]:
            h = layer(torch.tanh(h))
        return h


class ResidualMlp(nn.Module):
    """A skip connection around a hidden layer, and a residual from the input state to the output."""

    def __init__(self, hidden: int = 16, d: int = STATE_SIZE) -> None:
        super().__init__()
        self.first = nn.Linear(d + 1, hidden)
        self.second = nn.Linear(hidden, hidden)
        self.last = nn.Linear(hidden, d)
        self.skip_gain = 0.25

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h1 = self.first(torch.cat([x, t[:, None]], dim=1))
        h2 = self.second(torch.tanh(h1)) + h1
        return self.last(torch.tanh(h2)) - self.skip_gain * x


class SinusoidalTime(nn.Module):
    """Sinusoidal time embedding → small MLP → added to the first hidden layer."""

    def __init__(self, hidden: int = 16, half: int = 4, d: int = STATE_SIZE) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.exp(-math.log(100.0) * torch.arange(half) / half))
        self.embed_in = nn.Linear(2 * half, hidden)
        self.embed_out = nn.Linear(hidden, hidden)
        self.first = nn.Linear(d, hidden)
        self.second = nn.Linear(hidden, hidden)
        self.last = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None] * self.frequencies
        embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
        time_term = self.embed_out(torch.tanh(self.embed_in(embedding)))
        h = torch.tanh(self.first(x) + time_term)
        return self.last(torch.tanh(self.second(h)))


class GlueMlp(nn.Module):
    """A standard MLP threaded through reshapes, flatten, unsqueeze/squeeze, casts and identities."""

    def __init__(self, hidden: int = 12, d: int = STATE_SIZE) -> None:
        super().__init__()
        self.d = d
        self.first = nn.Linear(d + 1, hidden)
        self.identity = nn.Identity()
        self.second = nn.Linear(hidden, hidden)
        self.last = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.d).to(torch.float64).to(x.dtype)
        time = t.unsqueeze(1)
        h = self.first(torch.cat([x, time], dim=1))
        h = self.identity(h).unsqueeze(1)
        h = torch.flatten(torch.tanh(h), 1)
        h = self.second(h).unsqueeze(2).squeeze(2)
        return self.last(torch.tanh(h)).reshape(-1, self.d)


def example_inputs(d: int = STATE_SIZE, batch: int = EXAMPLE_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    return torch.randn(batch, d, generator=generator), torch.rand(batch, generator=generator)


def export_onnx(module: nn.Module, path: Path, inputs: tuple | None = None,
                input_names: tuple[str, ...] = ("x", "t")) -> Path:
    """Legacy (TorchScript) ONNX export with a dynamic batch axis on every input and the output."""
    inputs = example_inputs() if inputs is None else inputs
    axes = {name: {0: "batch"} for name in (*input_names, "velocity")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), inputs, str(path), input_names=list(input_names),
                          output_names=["velocity"], dynamic_axes=axes, opset_version=ONNX_OPSET,
                          dynamo=False)
    return path


def export_pt2(module: nn.Module, path: Path, inputs: tuple | None = None) -> Path:
    """``torch.export.export`` with a dynamic batch dimension, saved with ``torch.export.save``."""
    inputs = example_inputs() if inputs is None else inputs
    batch = torch.export.Dim("batch")
    dynamic_shapes = tuple({0: batch} for _ in inputs)
    program = torch.export.export(module.eval(), tuple(inputs), dynamic_shapes=dynamic_shapes, strict=False)
    torch.export.save(program, str(path))
    return path


# ---------------------------------------------------------------- hand-built ONNX graphs


def _initializer(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def onnx_model(nodes: list, initializers: dict[str, np.ndarray], path: Path,
               state_shape: tuple = ("batch", STATE_SIZE), time_shape: tuple = ("batch", 1),
               extra_initializers: list | None = None) -> Path:
    """A float32 graph ``velocity = f(x, t)`` from ``nodes``; the output is named ``velocity``."""
    graph = helper.make_graph(
        nodes,
        "velocity_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(state_shape)),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, list(time_shape))],
        [helper.make_tensor_value_info("velocity", TensorProto.FLOAT, ["batch", STATE_SIZE])],
        [_initializer(name, value) for name, value in initializers.items()] + list(extra_initializers or []),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def gemm_model(path: Path, variant: str, hidden: int = 8, seed: int = 0) -> Path:
    """``velocity = W2 tanh(W1 [x, t] + b1) + b2`` with the first layer as a Gemm ``variant`` or MatMul+Add.

    Variants: ``plain`` (transB=0), ``transB``, ``alpha_beta`` (alpha=0.5, beta=2, weights pre-scaled so the
    function is the same), ``transA`` on a constant left operand is not used (transA on the state is
    refused), ``matmul_add``.
    """
    rng = np.random.default_rng(seed)
    d = STATE_SIZE
    first = 0.5 * rng.standard_normal((hidden, d + 1)) / math.sqrt(d + 1)
    bias = 0.3 * rng.standard_normal(hidden)
    last = 0.5 * rng.standard_normal((d, hidden)) / math.sqrt(hidden)
    last_bias = 0.3 * rng.standard_normal(d)
    nodes = [helper.make_node("Concat", ["x", "t"], ["xt"], axis=1, name="concat")]
    initializers: dict[str, np.ndarray] = {}
    if variant == "plain":
        initializers |= {"W1": first.T, "b1": bias}
        nodes.append(helper.make_node("Gemm", ["xt", "W1", "b1"], ["h"], name="gemm1"))
    elif variant == "transB":
        initializers |= {"W1": first, "b1": bias}
        nodes.append(helper.make_node("Gemm", ["xt", "W1", "b1"], ["h"], transB=1, name="gemm1"))
    elif variant == "alpha_beta":
        initializers |= {"W1": 2.0 * first, "b1": 0.5 * bias}
        nodes.append(helper.make_node("Gemm", ["xt", "W1", "b1"], ["h"], transB=1, alpha=0.5, beta=2.0,
                                      name="gemm1"))
    elif variant == "no_bias":
        initializers |= {"W1": first.T, "b1": bias}
        nodes += [helper.make_node("Gemm", ["xt", "W1"], ["h0"], name="gemm1"),
                  helper.make_node("Add", ["h0", "b1"], ["h"], name="add1")]
    elif variant == "matmul_add":
        initializers |= {"W1": first.T, "b1": bias}
        nodes += [helper.make_node("MatMul", ["xt", "W1"], ["h0"], name="matmul1"),
                  helper.make_node("Add", ["h0", "b1"], ["h"], name="add1")]
    else:
        raise ValueError(variant)
    initializers |= {"W2": last, "b2": last_bias}
    nodes += [helper.make_node("Tanh", ["h"], ["a"], name="tanh1"),
              helper.make_node("Gemm", ["a", "W2", "b2"], ["velocity"], transB=1, name="gemm2")]
    onnx_model(nodes, initializers, path)
    return path


def gemm_reference(path: Path, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The closed form of ``gemm_model`` from its stored initializers (transB / alpha / beta applied)."""
    model = onnx.load(str(path))
    weights = {item.name: numpy_helper.to_array(item).astype(np.float64) for item in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node}
    xt = np.concatenate([x, t.reshape(-1, 1)], axis=1)
    if "matmul1" in nodes or ("gemm1" in nodes and len(nodes["gemm1"].input) == 2):
        hidden = xt @ weights["W1"] + weights["b1"]
    else:
        attributes = {a.name: helper.get_attribute_value(a) for a in nodes["gemm1"].attribute}
        matrix = weights["W1"].T if attributes.get("transB", 0) else weights["W1"]
        hidden = attributes.get("alpha", 1.0) * xt @ matrix + attributes.get("beta", 1.0) * weights["b1"]
    return np.tanh(hidden) @ weights["W2"].T + weights["b2"]


def glue_onnx_model(path: Path, hidden: int = 8, seed: int = 1) -> Path:
    """Every glue op (Identity, Cast, Reshape, Flatten, Unsqueeze, Squeeze) on the state path, by hand."""
    rng = np.random.default_rng(seed)
    d = STATE_SIZE
    initializers = {
        "W1": 0.4 * rng.standard_normal((hidden, d + 1)),
        "b1": 0.2 * rng.standard_normal(hidden),
        "W2": 0.4 * rng.standard_normal((d, hidden)) / math.sqrt(hidden),
        "b2": 0.2 * rng.standard_normal(d),
    }
    shapes = [numpy_helper.from_array(np.array([-1, d], dtype=np.int64), "shape_state"),
              numpy_helper.from_array(np.array([-1, hidden], dtype=np.int64), "shape_hidden"),
              numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_one"),
              numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_two")]
    nodes = [
        helper.make_node("Identity", ["x"], ["x_id"], name="identity_x"),
        helper.make_node("Cast", ["x_id"], ["x_double"], to=TensorProto.DOUBLE, name="cast_up"),
        helper.make_node("Cast", ["x_double"], ["x_float"], to=TensorProto.FLOAT, name="cast_down"),
        helper.make_node("Reshape", ["x_float", "shape_state"], ["x_shaped"], name="reshape_x"),
        helper.make_node("Concat", ["x_shaped", "t"], ["xt"], axis=1, name="concat"),
        helper.make_node("Gemm", ["xt", "W1", "b1"], ["h"], transB=1, name="gemm1"),
        helper.make_node("Unsqueeze", ["h", "axis_one"], ["h3"], name="unsqueeze_h"),
        helper.make_node("Flatten", ["h3"], ["h_flat"], axis=1, name="flatten_h"),
        helper.make_node("Tanh", ["h_flat"], ["a"], name="tanh1"),
        helper.make_node("Unsqueeze", ["a", "axis_two"], ["a3"], name="unsqueeze_a"),
        helper.make_node("Squeeze", ["a3", "axis_two"], ["a_back"], name="squeeze_a"),
        helper.make_node("Reshape", ["a_back", "shape_hidden"], ["a_shaped"], name="reshape_a"),
        helper.make_node("Gemm", ["a_shaped", "W2", "b2"], ["v"], transB=1, name="gemm2"),
        helper.make_node("Identity", ["v"], ["velocity"], name="identity_out"),
    ]
    return onnx_model(nodes, initializers, path, extra_initializers=shapes)
