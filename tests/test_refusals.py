"""Every refusal: ``admc build`` exits 2 with one line naming the file (and node and op), no traceback, and
nothing written — neither the output directory nor a temporary sibling."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from models import StandardMlp, example_inputs, export_onnx, export_pt2, onnx_model, seeded
from onnx import helper
from torch import nn

from admc.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

NODE_AND_OP = re.compile(r"node '([^']+)' op (\w+)")


# ---------------------------------------------------------------- models that must be refused


class ActivationMlp(nn.Module):
    """A standard MLP whose hidden activation is not tanh."""

    def __init__(self, activation: nn.Module) -> None:
        super().__init__()
        self.first = nn.Linear(3, 8)
        self.activation = activation
        self.last = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.last(self.activation(self.first(torch.cat([x, t[:, None]], 1))))


class ConvModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 2)
        self.last = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.last(torch.tanh(self.conv(x.unsqueeze(1)).flatten(1))) + t[:, None]


class SoftmaxModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 8)
        self.last = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.last(torch.softmax(self.first(torch.cat([x, t[:, None]], 1)), dim=1))


class MultiheadAttentionModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 8)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.last = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tokens = self.first(torch.cat([x, t[:, None]], 1)).unsqueeze(1)
        attended, _ = self.attention(tokens, tokens, tokens)
        return self.last(attended.squeeze(1))


class DotProductAttentionModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 8)
        self.last = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tokens = self.first(torch.cat([x, t[:, None]], 1)).reshape(-1, 2, 4)
        attended = nn.functional.scaled_dot_product_attention(tokens, tokens, tokens)
        return self.last(attended.reshape(-1, 8))


class OneInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.last = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(torch.tanh(x))


class ThreeInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.last = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        # A third input whose name does not say it is a condition (see test_conditional for conditions).
        return self.last(torch.tanh(torch.cat([x, t[:, None], extra[:, None]], 1)))


# (module factory, op named for ONNX, op named for .pt2); None: any op of the model is acceptable.
NODE_REFUSALS = {
    "silu": (lambda: ActivationMlp(nn.SiLU()), "Sigmoid", "Silu"),
    "gelu": (lambda: ActivationMlp(nn.GELU()), None, "Gelu"),
    "sigmoid": (lambda: ActivationMlp(nn.Sigmoid()), "Sigmoid", "Sigmoid"),
    "conv": (ConvModel, "Conv", "Conv"),
    "softmax": (SoftmaxModel, "Softmax", "Softmax"),
    "multihead-attention": (MultiheadAttentionModel, None, None),
    "scaled-dot-product-attention": (DotProductAttentionModel, None, "Attention"),
}


# ---------------------------------------------------------------- the refusal contract


def refuse(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture, target: str = "ideal") -> str:
    """Run ``admc build``; check exit 2, one line, no traceback, nothing written; return the message."""
    before = sorted(os.listdir(model.parent))
    output = model.parent / "bundle"
    status = main(["build", str(model), "-o", str(output), "--target", target, "--steps", "4"])
    captured = capsys.readouterr()
    assert status == 2, captured
    message = captured.err.strip()
    assert "\n" not in message, message
    assert message.startswith("admc: error: "), message
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert str(model) in message
    assert not output.exists()
    assert sorted(os.listdir(model.parent)) == before  # no temporary sibling left behind
    return message


def assert_names_a_node(message: str, model: Path, expected_op: str | None, file_format: str) -> None:
    match = NODE_AND_OP.search(message)
    assert match, message
    node, op = match.groups()
    if expected_op is not None:
        assert op == expected_op, message
    if file_format == "onnx":
        graph = onnx.load(str(model)).graph
        assert (node, op) in {(item.name, item.op_type) for item in graph.node}, message


def model_directory(tmp_path: Path) -> Path:
    directory = tmp_path / "models"
    directory.mkdir()
    return directory


@pytest.mark.parametrize("file_format", ["onnx", "pt2"])
@pytest.mark.parametrize("case", NODE_REFUSALS)
def test_unsupported_ops_are_refused_naming_node_and_op(tmp_path, capsys, case, file_format):
    make, onnx_op, pt2_op = NODE_REFUSALS[case]
    module = seeded(make(), 0)
    path = model_directory(tmp_path) / f"{case}.{file_format}"
    (export_onnx if file_format == "onnx" else export_pt2)(module, path)
    message = refuse(path, tmp_path, capsys)
    assert_names_a_node(message, path, onnx_op if file_format == "onnx" else pt2_op, file_format)


@pytest.mark.parametrize("file_format", ["onnx", "pt2"])
def test_relu_is_refused_by_a_target_computing_tanh_naming_the_node(tmp_path, capsys, file_format):
    """ReLU is a target capability: aoc-48 computes tanh only (the same model builds for rram and ideal)."""
    path = model_directory(tmp_path) / f"relu.{file_format}"
    (export_onnx if file_format == "onnx" else export_pt2)(seeded(ActivationMlp(nn.ReLU()), 0), path)
    message = refuse(path, tmp_path, capsys, target="aoc-48")
    assert_names_a_node(message, path, "Relu", file_format)
    assert "ReLU" in message and "target 'aoc-48' computes tanh" in message


def test_activation_refusal_says_why(tmp_path, capsys):
    path = export_onnx(seeded(ActivationMlp(nn.SiLU()), 0), model_directory(tmp_path) / "silu.onnx")
    message = refuse(path, tmp_path, capsys)
    assert "SiLU" in message or "sigmoid" in message
    assert "target 'ideal' computes tanh, relu" in message


@pytest.mark.parametrize("file_format", ["onnx", "pt2"])
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(tmp_path, capsys, file_format, bad_value):
    module = seeded(StandardMlp((8, 8)), 0)
    with torch.no_grad():
        module.layers[1].weight[2, 3] = bad_value
    path = model_directory(tmp_path) / f"weights.{file_format}"
    (export_onnx if file_format == "onnx" else export_pt2)(module, path)
    message = refuse(path, tmp_path, capsys)
    assert "NaN/Inf" in message
    assert_names_a_node(message, path, "Gemm", file_format)


@pytest.mark.parametrize("file_format", ["onnx", "pt2"])
def test_one_input_is_refused(tmp_path, capsys, file_format):
    x, _ = example_inputs()
    path = model_directory(tmp_path) / f"one.{file_format}"
    if file_format == "onnx":
        export_onnx(OneInput(), path, (x,), ("x",))
    else:
        export_pt2(OneInput(), path, (x,))
    message = refuse(path, tmp_path, capsys)
    assert "found 1" in message


@pytest.mark.parametrize("file_format", ["onnx", "pt2"])
def test_three_inputs_are_refused(tmp_path, capsys, file_format):
    x, t = example_inputs()
    path = model_directory(tmp_path) / f"three.{file_format}"
    if file_format == "onnx":
        export_onnx(ThreeInputs(), path, (x, t, t), ("x", "t", "extra"))
    else:
        export_pt2(ThreeInputs(), path, (x, t, t))
    message = refuse(path, tmp_path, capsys)
    assert "found 3" in message and "--condition" in message


def test_dynamic_feature_size_is_refused(tmp_path, capsys):
    nodes = [helper.make_node("Concat", ["x", "t"], ["xt"], axis=1, name="concat"),
             helper.make_node("Gemm", ["xt", "W"], ["velocity"], transB=1, name="gemm")]
    path = onnx_model(nodes, {"W": np.full((2, 3), 0.1)}, model_directory(tmp_path) / "dynamic.onnx",
                      state_shape=("batch", "features"))
    message = refuse(path, tmp_path, capsys)
    assert "dynamic feature size" in message and "'x'" in message


# ---------------------------------------------------------------- files that cannot be read


@pytest.fixture
def good_models(tmp_path) -> dict[str, Path]:
    directory = tmp_path / "sources"
    directory.mkdir()
    module = seeded(StandardMlp((8, 8)), 0)
    return {"onnx": export_onnx(module, directory / "good.onnx"), "pt2": export_pt2(module, directory / "good.pt2")}


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, "all but one byte"])
@pytest.mark.parametrize("file_format", ["onnx", "pt2"])
def test_truncated_files_are_refused(tmp_path, capsys, good_models, file_format, fraction):
    content = good_models[file_format].read_bytes()
    keep = len(content) - 1 if fraction == "all but one byte" else int(fraction * len(content))
    path = model_directory(tmp_path) / f"truncated.{file_format}"
    path.write_bytes(content[:keep])
    refuse(path, tmp_path, capsys)


@pytest.mark.parametrize("file_format", ["onnx", "pt2"])
def test_garbage_files_are_refused(tmp_path, capsys, file_format):
    path = model_directory(tmp_path) / f"garbage.{file_format}"
    path.write_bytes(b"this is not a model\x00\x01\x02" * 10)
    refuse(path, tmp_path, capsys)


def test_missing_file_is_refused(tmp_path, capsys):
    refuse(model_directory(tmp_path) / "missing.onnx", tmp_path, capsys)


def test_directory_instead_of_a_file_is_refused(tmp_path, capsys):
    path = model_directory(tmp_path) / "folder.onnx"
    path.mkdir()
    refuse(path, tmp_path, capsys)


def test_unknown_suffix_is_refused(tmp_path, capsys, good_models):
    path = model_directory(tmp_path) / "model.bin"
    path.write_bytes(good_models["onnx"].read_bytes())
    assert ".bin" in refuse(path, tmp_path, capsys)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_is_refused(tmp_path, capsys, good_models):
    path = model_directory(tmp_path) / "locked.onnx"
    path.write_bytes(good_models["onnx"].read_bytes())
    path.chmod(0)
    try:
        refuse(path, tmp_path, capsys)
    finally:
        path.chmod(0o600)


def test_refusal_does_not_touch_an_existing_bundle(tmp_path, capsys, good_models):
    """A refused rebuild over an existing bundle leaves the old bundle exactly as it was."""
    output = tmp_path / "bundle"
    assert main(["build", str(good_models["onnx"]), "-o", str(output), "--target", "ideal", "--steps", "4"]) == 0
    files = {path.relative_to(output): path.read_bytes() for path in output.rglob("*") if path.is_file()}
    bad = model_directory(tmp_path) / "silu.onnx"
    export_onnx(seeded(ActivationMlp(nn.SiLU()), 0), bad)
    capsys.readouterr()
    assert main(["build", str(bad), "-o", str(output), "--target", "ideal", "--steps", "4"]) == 2
    assert {path.relative_to(output): path.read_bytes() for path in output.rglob("*") if path.is_file()} == files
    assert sorted(os.listdir(tmp_path)) == sorted(["bundle", "models", "sources"])


def test_state_residual_is_refused_by_a_target_without_linear_channels(tmp_path, capsys, no_linear_target):
    """v = g(x) − x/4 reads x linearly in the velocity itself: the fold-input rewrite cannot apply."""
    from models import ResidualMlp

    path = export_onnx(seeded(ResidualMlp(8), 0), model_directory(tmp_path) / "residual.onnx")
    output = path.parent / "bundle"
    before = sorted(os.listdir(path.parent))
    status = main(["build", str(path), "-o", str(output), "--target", str(no_linear_target)])
    captured = capsys.readouterr()
    assert status == 2
    message = captured.err.strip()
    assert message.startswith("admc: error: ") and "\n" not in message and "Traceback" not in captured.err
    assert str(path) in message and "linear" in message
    assert not output.exists() and sorted(os.listdir(path.parent)) == before
