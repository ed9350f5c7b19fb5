"""The torch.export frontend: imported graphs evaluate (numpy float64) to what the module computes in float64."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from admc.core.errors import AdmcError
from admc.frontends.torch_export import import_module, load_pt2
from admc.ir.evaluate import evaluate_graph
from admc.ir.graph import Graph

STATE_SIZE = 3
BATCH = 5


class AdmForm(nn.Module):
    """h = x; each layer h = W tanh(h) + b + t e."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.time_vectors = nn.ParameterList(nn.Parameter(torch.randn(size)) for size in sizes[1:])

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, time_vector in zip(self.layers, self.time_vectors, strict=True):
            h = layer(torch.tanh(h)) + t[:, None] * time_vector
        return h


class StandardMlp(nn.Module):
    def __init__(self, hidden: int = 8, time_column: bool = False) -> None:
        super().__init__()
        self.time_column = time_column
        self.first = nn.Linear(STATE_SIZE + 1, hidden)
        self.second = nn.Linear(hidden, hidden)
        self.last = nn.Linear(hidden, STATE_SIZE)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        time = t if self.time_column else t[:, None]
        h = self.first(torch.cat([x, time], 1))
        return self.last(torch.tanh(self.second(torch.tanh(h))))


class SinusoidalEmbedding(nn.Module):
    def __init__(self, half: int = 4, hidden: int = 8) -> None:
        super().__init__()
        self.half = half
        self.embed_in = nn.Linear(2 * half, hidden)
        self.embed_out = nn.Linear(hidden, hidden)
        self.first = nn.Linear(STATE_SIZE, hidden)
        self.last = nn.Linear(hidden, STATE_SIZE)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(1000) * torch.arange(self.half) / self.half)
        angles = t[:, None] * freqs
        emb = torch.cat([torch.sin(angles), torch.cos(angles)], 1)
        time_term = self.embed_out(torch.tanh(self.embed_in(emb)))
        return self.last(torch.tanh(self.first(x) + time_term))


class Residual(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.first = nn.Linear(STATE_SIZE + 1, hidden)
        self.second = nn.Linear(hidden, hidden)
        self.last = nn.Linear(hidden, STATE_SIZE)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h1 = self.first(torch.cat([x, t.unsqueeze(-1)], 1))
        h2 = self.second(torch.tanh(h1)) + h1
        return self.last(torch.tanh(h2))


class ExplicitForms(nn.Module):
    """addmm, x @ W.T + b, alpha-scaled add, rsub and reshape/unsqueeze/squeeze/flatten glue on the batch."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.weight_in = nn.Parameter(torch.randn(hidden, STATE_SIZE))
        self.bias_in = nn.Parameter(torch.randn(hidden))
        self.weight_out = nn.Parameter(torch.randn(STATE_SIZE, hidden))
        self.bias_out = nn.Parameter(torch.randn(STATE_SIZE))
        self.time_vector = nn.Parameter(torch.randn(hidden))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.addmm(self.bias_in, x.reshape(-1, STATE_SIZE), self.weight_in.T, beta=0.5, alpha=2.0)
        h = torch.add(h, t.unsqueeze(1) * self.time_vector, alpha=0.25)
        h = h.reshape(h.shape[0], 2, -1).flatten(1)
        h = h.unsqueeze(1).squeeze(1).view(-1, 2, 4).permute(0, 2, 1).transpose(1, 2).flatten(1)
        h = 1.0 - torch.tanh(h)
        out = torch.tanh(h) @ self.weight_out.T + self.bias_out
        return out.unsqueeze(-1).squeeze(-1) / 2


class ConvModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1)
        self.last = nn.Linear(STATE_SIZE, STATE_SIZE)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.reshape(x.shape[0], 1, STATE_SIZE)).flatten(1)
        return self.last(h) + t[:, None]


class ReluMlp(StandardMlp):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(torch.cat([x, t[:, None]], 1)))
        return self.last(torch.relu(self.second(h)))


class UnknownOp(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.floor(x) + t[:, None]


def _seeded(factory, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return factory()


MODELS = {
    "adm_form": lambda: AdmForm([STATE_SIZE, 8, 6, STATE_SIZE]),
    "standard_mlp": lambda: StandardMlp(),
    "standard_mlp_time_column": lambda: StandardMlp(time_column=True),
    "sinusoidal_embedding": lambda: SinusoidalEmbedding(),
    "residual": lambda: Residual(),
    "explicit_forms": lambda: ExplicitForms(),
    "relu_mlp": lambda: ReluMlp(),
}


def _inputs(module: nn.Module, batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, STATE_SIZE, generator=generator)
    t = torch.rand(batch, generator=generator)
    if getattr(module, "time_column", False):
        t = t[:, None]
    return x, t


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    # Tensors created inside forward (torch.arange) follow the default dtype; the reference is all float64.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _reference(module: nn.Module, x: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    reference = copy.deepcopy(module).double().eval()
    with _default_dtype(torch.float64), torch.no_grad():
        return reference(x.double(), t.double()).numpy()


def _evaluate(graph: Graph, x: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    names = [graph_input.name for graph_input in graph.inputs]
    (output,) = evaluate_graph(graph, dict(zip(names, [x.double().numpy(), t.double().numpy()], strict=True)))
    return output


def _assert_relative_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    error = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
    assert error <= 1e-10, f"relative error {error:.3g}"


def _save_and_load(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> Graph:
    program = torch.export.export(module.eval(), inputs, strict=False)
    torch.export.save(program, path)
    return load_pt2(path)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_import_module_matches_float64_module(model_name: str) -> None:
    module = _seeded(MODELS[model_name])
    x, t = _inputs(module, BATCH)
    graph = import_module(module, (x, t), source=model_name)
    assert [graph_input.name for graph_input in graph.inputs] == ["x", "t"]
    _assert_relative_close(_evaluate(graph, x, t), _reference(module, x, t))


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_import_module_keeps_batch_dynamic(model_name: str) -> None:
    module = _seeded(MODELS[model_name])
    graph = import_module(module, _inputs(module, BATCH), source=model_name)
    state = graph.inputs[0]
    assert isinstance(state.shape[0], str) and state.shape[1:] == (STATE_SIZE,)
    x, t = _inputs(module, 7, seed=2)
    _assert_relative_close(_evaluate(graph, x, t), _reference(module, x, t))


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_pt2_round_trip_matches_float64_module(model_name: str, tmp_path: Path) -> None:
    module = _seeded(MODELS[model_name])
    x, t = _inputs(module, BATCH)
    path = tmp_path / f"{model_name}.pt2"
    graph = _save_and_load(module, (x, t), path)
    assert graph.source == str(path)
    assert [graph_input.name for graph_input in graph.inputs] == ["x", "t"]
    assert graph.inputs[0].shape == (BATCH, STATE_SIZE)
    _assert_relative_close(_evaluate(graph, x, t), _reference(module, x, t))


def test_parameters_become_float64_constants_and_linear_becomes_gemm() -> None:
    module = _seeded(MODELS["standard_mlp"])
    graph = import_module(module, _inputs(module, BATCH))
    assert np.array_equal(graph.constants["p_first_weight"], module.first.weight.detach().double().numpy())
    assert all(value.dtype == np.float64 for name, value in graph.constants.items() if name.startswith("p_"))
    gemms = [op for op in graph.ops if op.op_type == "Gemm"]
    assert len(gemms) == 3
    assert all(op.attributes == {"transB": 1} and op.source_op == "aten.linear.default" for op in gemms)
    assert gemms[0].inputs[1:] == ("p_first_weight", "p_first_bias")
    assert graph.outputs == [gemms[-1].outputs[0]]
    assert graph.state_input == "" and graph.time_input == ""


def test_addmm_keeps_alpha_and_beta() -> None:
    module = _seeded(MODELS["explicit_forms"])
    graph = import_module(module, _inputs(module, BATCH))
    (addmm,) = [op for op in graph.ops if op.source_op == "aten.addmm.default"]
    assert addmm.op_type == "Gemm"
    assert addmm.attributes == {"alpha": 2.0, "beta": 0.5}
    assert addmm.inputs[2] == "p_bias_in"


def test_arange_is_folded_to_a_constant() -> None:
    module = _seeded(MODELS["sinusoidal_embedding"])
    graph = import_module(module, _inputs(module, BATCH))
    assert np.array_equal(graph.constants["arange"], np.arange(4))
    assert not any(op.source_op.startswith("aten.arange") for op in graph.ops)
    assert {"Sin", "Cos", "Exp", "Concat"} <= {op.op_type for op in graph.ops}


def test_conv_is_imported_as_conv() -> None:
    module = _seeded(ConvModel)
    graph = import_module(module, _inputs(module, BATCH))
    (conv,) = [op for op in graph.ops if op.op_type == "Conv"]
    assert conv.source_op.startswith("aten.conv1d")
    assert conv.inputs[1:] == ("p_conv_weight", "p_conv_bias")


def test_relu_is_imported_as_relu() -> None:
    module = _seeded(ReluMlp)
    graph = import_module(module, _inputs(module, BATCH))
    assert sum(op.op_type == "Relu" for op in graph.ops) == 2


def test_unknown_op_keeps_its_aten_name() -> None:
    module = UnknownOp()
    graph = import_module(module, _inputs(module, BATCH))
    (unknown,) = [op for op in graph.ops if op.op_type == "aten.floor.default"]
    assert unknown.inputs == ("x",) and unknown.name == "floor"


def test_missing_pt2_raises_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.pt2"
    with pytest.raises(AdmcError, match="absent.pt2"):
        load_pt2(path)


def test_truncated_pt2_raises_naming_the_path(tmp_path: Path) -> None:
    module = _seeded(MODELS["standard_mlp"])
    whole = tmp_path / "whole.pt2"
    _save_and_load(module, _inputs(module, BATCH), whole)
    truncated = tmp_path / "truncated.pt2"
    content = whole.read_bytes()
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(AdmcError) as raised:
        load_pt2(truncated)
    assert str(truncated) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_non_pt2_file_raises_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a torch archive")
    with pytest.raises(AdmcError, match="model.onnx"):
        load_pt2(path)


def test_pickled_payload_is_refused(tmp_path: Path) -> None:
    module = _seeded(MODELS["standard_mlp"])
    original = tmp_path / "original.pt2"
    _save_and_load(module, _inputs(module, BATCH), original)
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(tampered, "w") as target:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename.endswith("weights_config.json"):
                config = json.loads(content)
                next(iter(config["config"].values()))["use_pickle"] = True
                content = json.dumps(config).encode()
            target.writestr(info, content)
    with pytest.raises(AdmcError, match="refusing to unpickle"):
        load_pt2(tampered)
