"""Models that used to build into bundles that cannot run are refused at build (issue 22 item 3, issue 23
item 5), each with one line naming the cause and where; the correctly made counterpart of each still builds,
so no check can pass by refusing everything.

Cases: a bias of 1e30 (the first loop diverged), a Sqrt on the time path (NaN in the static injection table),
a declared opset newer than onnx/onnxruntime run, an unused condition input (no distribution for verify),
and a fixed batch from either exporter's default (verify's batch failed a guard).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conditional_models import EmbeddingClass
from hardening_helpers import no_partial_files, refused
from models import (
    StandardMlp,
    example_inputs,
    export_onnx,
    export_pt2,
    gemm_model,
    onnx_model,
    seeded,
)
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from admc.compiler.driver import build
from admc.core.errors import AdmcError
from admc.frontends.messages import QUOTE_LIMIT, quote
from admc.frontends.onnx_import import newest_opsets
from admc.frontends.signature import identify_signature
from admc.ir.graph import GraphInput

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

TINY = {"target": "ideal", "solver": "heun", "steps": 2}


def refuses(model, output: Path, *fragments: str, **options) -> str:
    """Build ``model``; assert it is refused with one line holding every fragment, and nothing is written."""
    with pytest.raises(AdmcError) as raised:
        build(model, output, **(TINY | options))
    message = str(raised.value)
    assert "\n" not in message and len(message) < 400, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not output.exists() and no_partial_files(output.parent)
    return message


def builds(model, output: Path, **options) -> None:
    assert (build(model, output, **(TINY | options)) / "manifest.json").is_file()


def with_initializer_entry(source: Path, path: Path, name: str, value: float) -> Path:
    model = onnx.load(str(source))
    for item in model.graph.initializer:
        if item.name == name:
            array = numpy_helper.to_array(item).copy()
            array.flat[0] = value
            item.CopyFrom(numpy_helper.from_array(array, name))
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------- 1. parameters beyond the state range


@pytest.mark.parametrize(("initializer", "node", "array"), [
    ("b1", "gemm1", "injection/constant_fixed.npy"), ("b2", "gemm2", "injection/constant_step.npy"),
    ("W1", "gemm1", "block_0000"), ("W2", "gemm2", "block_0001")])
def test_a_parameter_beyond_the_state_range_is_refused_naming_it(tmp_path, initializer, node, array) -> None:
    good = gemm_model(tmp_path / "good.onnx", "transB")
    bad = with_initializer_entry(good, tmp_path / "bad.onnx", initializer, 1e30)
    refuses(bad, tmp_path / "bundle", "bad.onnx", array, "entry 1e+30", f"node '{node}'",
            f"weight '{initializer}'", "state range ±1e+08", "rescale or retrain")
    builds(good, tmp_path / "good_bundle")


@pytest.mark.parametrize(("scale", "refused"), [(1e5, True), (1e3, False)])
def test_a_product_of_weights_beyond_the_state_range_is_refused_naming_the_node(tmp_path, scale, refused) -> None:
    """Two linear layers with no activation between fold into one matrix: 1e5 · 1e5 per entry is beyond the
    range though no weight is; 1e3 · 1e3 is not (and a later tanh saturates, so it builds)."""
    nodes = [helper.make_node("MatMul", ["x", "Wa"], ["u"], name="first"),
             helper.make_node("MatMul", ["u", "Wb"], ["v"], name="second"),
             helper.make_node("Tanh", ["v"], ["a"], name="tanh"),
             helper.make_node("Add", ["t", "t"], ["tt"], name="time"),
             helper.make_node("Gemm", ["a", "Wc", "b"], ["w"], name="last"),
             helper.make_node("Add", ["w", "tt"], ["velocity"], name="plus_time")]
    weights = {"Wa": np.full((2, 3), scale), "Wb": np.full((3, 4), scale), "Wc": np.full((4, 2), 0.1),
               "b": np.zeros(2)}
    path = onnx_model(nodes, weights, tmp_path / "product.onnx")
    if refused:
        refuses(path, tmp_path / "bundle", "block_0000", "entry 3e+10", "node 'second' op MatMul", "state range")
    else:
        builds(path, tmp_path / "bundle")


def test_a_torch_bias_beyond_the_state_range_is_refused_naming_the_parameter(tmp_path) -> None:
    module = seeded(StandardMlp((8,)), 0)
    good = export_pt2(module, tmp_path / "good.pt2")
    with torch.no_grad():
        module.layers[0].bias[3] = 1e30
    bad = export_pt2(module, tmp_path / "bad.pt2")
    refuses(bad, tmp_path / "bundle", "bad.pt2", "1e+30", "layers_0_bias", "aten.linear")
    builds(good, tmp_path / "good_bundle")


# ---------------------------------------------------------------- 2. NaN in the static injection table


def time_embedding_model(path: Path, activation: str) -> Path:
    """x → Gemm → (+ time embedding) → tanh → Gemm, the time embedding t → Gemm → ``activation`` → MatMul;
    the first time feature's pre-activation is negative, so Sqrt makes NaN there."""
    rng = np.random.default_rng(0)
    weights = {"Wt": np.array([[1.0, -1.0, 0.5, 2.0]]), "bt": np.array([-2.0, 0.5, 0.1, 0.3]),
               "Wt2": 0.3 * rng.standard_normal((4, 8)), "W1": 0.3 * rng.standard_normal((2, 8)),
               "b1": 0.1 * rng.standard_normal(8), "W2": 0.3 * rng.standard_normal((8, 2)), "b2": np.zeros(2)}
    nodes = [helper.make_node("Gemm", ["t", "Wt", "bt"], ["e0"], name="time_in"),
             helper.make_node(activation, ["e0"], ["e1"], name="time_act"),
             helper.make_node("MatMul", ["e1", "Wt2"], ["e2"], name="time_out"),
             helper.make_node("Gemm", ["x", "W1", "b1"], ["h0"], name="gemm1"),
             helper.make_node("Add", ["h0", "e2"], ["h"], name="add_time"),
             helper.make_node("Tanh", ["h"], ["a"], name="tanh1"),
             helper.make_node("Gemm", ["a", "W2", "b2"], ["velocity"], name="gemm2")]
    return onnx_model(nodes, weights, path)


def test_nan_in_the_static_injection_table_is_refused_naming_time_channel_and_node(tmp_path) -> None:
    bad = time_embedding_model(tmp_path / "sqrt.onnx", "Sqrt")
    message = refuses(bad, tmp_path / "bundle", "injection/time_table_fixed.npy", "entry nan", "t = 0,",
                      "channel 2 (hidden_1[0])", "node 'time_act' op Sqrt", "finite")
    assert "gemm1" not in message
    builds(time_embedding_model(tmp_path / "sigmoid.onnx", "Sigmoid"), tmp_path / "good_bundle")


# ---------------------------------------------------------------- 3. an opset newer than onnxruntime runs


def with_opset(source: Path, path: Path, version: int) -> Path:
    model = onnx.load(str(source))
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = version
    onnx.save(model, str(path))
    return path


def test_an_opset_newer_than_onnxruntime_runs_is_refused_at_import(tmp_path) -> None:
    good = gemm_model(tmp_path / "good.onnx", "transB")
    newest = newest_opsets()[""]
    assert newest >= 17
    refuses(with_opset(good, tmp_path / "opset99.onnx", 99), tmp_path / "bundle", "opset 99", "'ai.onnx'",
            f"up to opset {newest}", f"opset_version={newest}", "onnxruntime")
    builds(with_opset(good, tmp_path / "newest.onnx", newest), tmp_path / "newest_bundle")


def test_the_cli_refuses_an_opset_99_model_with_one_line_and_no_bundle(tmp_path, capsys) -> None:
    bad = with_opset(gemm_model(tmp_path / "good.onnx", "transB"), tmp_path / "opset99.onnx", 99)
    output = tmp_path / "bundle"
    refused(capsys, "build", bad, "-o", output, "--target", "ideal", "--steps", "2",
            fragments=("opset99.onnx", "opset 99", "re-export"))
    assert not output.exists()
    assert no_partial_files(tmp_path)


# ---------------------------------------------------------------- 4. an unused condition input


def with_extra_input(source: Path, path: Path, name: str, elem_type: int, shape: list) -> Path:
    model = onnx.load(str(source))
    model.graph.input.append(helper.make_tensor_value_info(name, elem_type, shape))
    onnx.save(model, str(path))
    return path


def test_an_unused_class_input_is_refused_naming_it(tmp_path) -> None:
    good = gemm_model(tmp_path / "good.onnx", "transB")
    bad = with_extra_input(good, tmp_path / "unused.onnx", "label", TensorProto.INT64, ["batch"])
    refuses(bad, tmp_path / "bundle", "input 'label'", "unused", "without this input")


def test_an_unused_input_named_with_condition_is_refused_naming_it(tmp_path) -> None:
    good = gemm_model(tmp_path / "good.onnx", "transB")
    bad = with_extra_input(good, tmp_path / "unused.onnx", "z", TensorProto.FLOAT, ["batch", 3])
    refuses(bad, tmp_path / "bundle", "input 'z'", "unused", condition_inputs=("z",))


class UnusedLabel(nn.Module):
    """A standard MLP of (x, t) that takes a class label and ignores it."""

    def __init__(self) -> None:
        super().__init__()
        self.model = seeded(StandardMlp((8,)), 0)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.model(x, t)


def test_an_unused_torch_label_is_refused_and_the_used_one_builds(tmp_path) -> None:
    inputs = (*example_inputs(), torch.tensor([0, 1, 2, 3]))
    refuses(export_pt2(UnusedLabel(), tmp_path / "unused.pt2", inputs), tmp_path / "bundle", "input 'label'",
            "unused")
    builds(export_pt2(seeded(EmbeddingClass(), 0), tmp_path / "used.pt2", inputs), tmp_path / "used_bundle")


# ---------------------------------------------------------------- 5. a fixed batch


def export_onnx_fixed_batch(module: nn.Module, path: Path, dynamo: bool) -> Path:
    """``torch.onnx.export`` with its defaults (no dynamic axes); ``dynamo`` True is torch 2.13's default."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example_inputs(), str(path), input_names=["x", "t"],
                          output_names=["velocity"], dynamo=dynamo)
    return path


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_an_onnx_export_with_a_fixed_batch_is_refused_with_the_fix(tmp_path, dynamo) -> None:
    module = seeded(StandardMlp((16, 16)), 0)
    bad = export_onnx_fixed_batch(module, tmp_path / "fixed.onnx", dynamo)
    refuses(bad, tmp_path / "bundle", "input 'x' [4, 2]", "fixed batch of 4",
            "dynamic_axes={'x': {0: 'batch'}, 't': {0: 'batch'}}")
    builds(export_onnx(module, tmp_path / "dynamic.onnx"), tmp_path / "dynamic_bundle")


def test_the_fix_the_fixed_batch_message_gives_for_dynamo_builds(tmp_path) -> None:
    path = tmp_path / "dynamic.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(seeded(StandardMlp((16, 16)), 0), example_inputs(), str(path), input_names=["x", "t"],
                          output_names=["velocity"], dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}})
    builds(path, tmp_path / "bundle")


def test_a_pt2_export_without_dynamic_shapes_is_refused_with_the_fix(tmp_path) -> None:
    module = seeded(StandardMlp((16, 16)), 0)
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(module.eval(), example_inputs()), str(path))
    refuses(path, tmp_path / "bundle", "fixed.pt2", "input 'x' [4, 2]", "fixed batch of 4",
            "dynamic_shapes=({0: batch}, {0: batch})", "torch.export.Dim('batch')")
    builds(export_pt2(module, tmp_path / "dynamic.pt2"), tmp_path / "dynamic_bundle")


# ---------------------------------------------------------------- 6. a library's long report, quoted short


class DataDependentBranch(nn.Module):
    """torch.export cannot trace a branch on the data; its report runs to ~1,100 characters."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.layer(torch.cat([x, t[:, None]], 1))
        return x


def test_a_torch_export_failure_is_quoted_in_one_short_line_with_its_location(tmp_path) -> None:
    message = refuses(DataDependentBranch(), tmp_path / "bundle", "DataDependentBranch: torch.export failed",
                      "data-dependent", "test_build_refusals.py:", "in forward", example_inputs=example_inputs())
    assert len(message) < 300 and "draft_export" not in message, message


def test_a_library_report_without_sentences_is_cut_at_the_limit() -> None:
    gist = quote(RuntimeError("[ShapeInferenceError] " + "(op_type:Gemm, node name: n): mismatch " * 40))
    assert gist.startswith("[ShapeInferenceError] (op_type:Gemm") and gist.endswith("…")
    assert len(gist) <= QUOTE_LIMIT


def test_a_refusal_lists_at_most_five_inputs() -> None:
    inputs = [GraphInput(f"input_{index}", ("B", 2)) for index in range(12)]
    with pytest.raises(AdmcError) as raised:
        identify_signature(inputs, "many.onnx")
    message = str(raised.value)
    assert "found 12: input_0, input_1, input_2, input_3, input_4 and 7 more" in message, message
    assert "input_5" not in message
