"""Issue 13, model import: initializers whose shapes or dtypes their ops cannot take, duplicate node names,
sparse and STRING initializers, conflicting value_info types, non-finite attributes, damaged .pt2 weight
configurations, and a hidden width that would need tens of GiB — each refused by ``admc build`` in one line
naming the file (and node or initializer), exit 2, nothing written."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hardening_helpers import listing, refused
from models import STATE_SIZE, StandardMlp, export_pt2, seeded
from onnx import TensorProto, helper, numpy_helper

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

HIDDEN = 32


def save_model(path: Path, nodes: list, initializers: list, value_info: list | None = None,
               time_shape: tuple = ("batch", 1), elem_type: int = TensorProto.FLOAT) -> Path:
    """An ONNX file written without any checks (the graph may be invalid on purpose)."""
    graph = helper.make_graph(
        nodes, "velocity_model",
        [helper.make_tensor_value_info("x", elem_type, ["batch", STATE_SIZE]),
         helper.make_tensor_value_info("t", elem_type, list(time_shape))],
        [helper.make_tensor_value_info("velocity", elem_type, ["batch", STATE_SIZE])],
        initializers, value_info=value_info or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tensor(name: str, array, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=dtype), name)


def mlp(path: Path, first: np.ndarray | None = None, bias: np.ndarray | None = None, trans_b: int = 1,
        alpha: float = 1.0, dtype=np.float32, value_info=None) -> Path:
    rng = np.random.default_rng(0)
    first = 0.3 * rng.standard_normal((HIDDEN, STATE_SIZE + 1)) if first is None else first
    bias = 0.1 * rng.standard_normal(HIDDEN) if bias is None else bias
    nodes = [helper.make_node("Concat", ["x", "t"], ["xt"], axis=1, name="concat"),
             helper.make_node("Gemm", ["xt", "W1", "b1"], ["h"], transB=trans_b, alpha=alpha, name="gemm1"),
             helper.make_node("Tanh", ["h"], ["a"], name="tanh1"),
             helper.make_node("Gemm", ["a", "W2", "b2"], ["velocity"], transB=1, name="gemm2")]
    initializers = [tensor("W1", first, dtype), tensor("b1", bias, dtype),
                    tensor("W2", 0.3 * rng.standard_normal((STATE_SIZE, HIDDEN)), dtype),
                    tensor("b2", np.zeros(STATE_SIZE), dtype)]
    return save_model(path, nodes, initializers, value_info)


def build_refused(capsys, model: Path, *fragments: str, extra: tuple = ()) -> str:
    directory = model.parent
    before = listing(directory)
    message = refused(capsys, "build", model, "-o", directory / "bundle", "--target", "ideal", *extra,
                      fragments=(str(model), *fragments))
    assert listing(directory) == before
    return message


def test_sound_model_builds(capsys, tmp_path):
    from hardening_helpers import cli

    status, _, err = cli(capsys, "build", mlp(tmp_path / "ok.onnx"), "-o", tmp_path / "b", "--target", "ideal")
    assert status == 0, err


def test_initializer_bias_shape_32_to_0_refused(capsys, tmp_path):
    build_refused(capsys, mlp(tmp_path / "m.onnx", bias=np.zeros(0)))


def test_initializer_weight_shape_32x3_to_1_refused(capsys, tmp_path):
    build_refused(capsys, mlp(tmp_path / "m.onnx", first=np.zeros(1)))


def test_initializer_weight_transposed_refused(capsys, tmp_path):
    build_refused(capsys, mlp(tmp_path / "m.onnx", trans_b=0))


def test_transA_on_time_only_gemm_refused(capsys, tmp_path):
    nodes = [helper.make_node("Gemm", ["t", "E"], ["te"], transA=1, name="time_gemm"),
             helper.make_node("Tanh", ["x"], ["a"], name="tanh"),
             helper.make_node("Gemm", ["a", "W"], ["h"], transB=1, name="gemm"),
             helper.make_node("Add", ["h", "te"], ["velocity"], name="add")]
    path = save_model(tmp_path / "m.onnx", nodes, [tensor("E", np.ones((1, STATE_SIZE))),
                                                  tensor("W", np.eye(STATE_SIZE))])
    build_refused(capsys, path)


def test_unsqueeze_turned_matmul_refused(capsys, tmp_path):
    nodes = [helper.make_node("Concat", ["x", "t"], ["xt"], axis=1, name="concat"),
             helper.make_node("MatMul", ["xt", "axes"], ["u"], name="was_unsqueeze"),
             helper.make_node("Tanh", ["u"], ["a"], name="tanh"),
             helper.make_node("Gemm", ["a", "W"], ["velocity"], transB=1, name="gemm")]
    path = save_model(tmp_path / "m.onnx", nodes, [tensor("axes", [1], np.int64),
                                                  tensor("W", np.ones((STATE_SIZE, 3)))])
    build_refused(capsys, path)


def test_duplicate_node_names_refused(capsys, tmp_path):
    path = mlp(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.node[3].name = "gemm1"
    onnx.save(model, str(path))
    build_refused(capsys, path, "gemm1", "same name")


def test_sparse_initializer_refused(capsys, tmp_path):
    path = mlp(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    values = tensor("W3", [1.0])
    indices = tensor("W3_indices", [0], np.int64)
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [STATE_SIZE]))
    onnx.save(model, str(path))
    build_refused(capsys, path, "sparse")


def test_string_initializer_refused(capsys, tmp_path):
    path = mlp(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.initializer.append(helper.make_tensor("label", TensorProto.STRING, [1], [b"hello"]))
    onnx.save(model, str(path))
    build_refused(capsys, path, "label", "STRING")


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.bool_])
def test_float16_int_bool_initializers_refused(capsys, tmp_path, dtype):
    path = mlp(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    index = [item.name for item in model.graph.initializer].index("b1")
    model.graph.initializer[index].CopyFrom(tensor("b1", np.ones(HIDDEN), dtype))
    onnx.save(model, str(path))
    build_refused(capsys, path, "b1")


def test_conflicting_value_info_types_refused(capsys, tmp_path):
    path = mlp(tmp_path / "m.onnx", value_info=[helper.make_tensor_value_info("h", TensorProto.INT64,
                                                                              ["batch", HIDDEN])])
    build_refused(capsys, path)


def test_gemm_alpha_nan_refused(capsys, tmp_path):
    build_refused(capsys, mlp(tmp_path / "m.onnx", alpha=float("nan")), "gemm1", "alpha")


def test_float64_model_accepted(capsys, tmp_path):
    from hardening_helpers import cli

    path = mlp(tmp_path / "m.onnx", dtype=np.float64)
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.elem_type = TensorProto.DOUBLE
    onnx.save(model, str(path))
    status, _, err = cli(capsys, "build", path, "-o", tmp_path / "b", "--target", "ideal")
    assert status == 0, err


def wide_model(path: Path, width: int, residual: bool = False) -> Path:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Concat", ["x", "t"], ["xt"], axis=1, name="concat"),
             helper.make_node("Gemm", ["xt", "W1"], ["h"], transB=1, name="gemm1"),
             helper.make_node("Tanh", ["h"], ["a"], name="tanh1")]
    if residual:  # a + a: the implicit identity of tanh1's atom must become a dense matrix
        nodes.append(helper.make_node("Add", ["a", "a"], ["a2"], name="add_residual"))
    nodes.append(helper.make_node("Gemm", ["a2" if residual else "a", "W2"], ["velocity"], transB=1, name="gemm2"))
    return save_model(path, nodes, [tensor("W1", 0.1 * rng.standard_normal((width, STATE_SIZE + 1))),
                                    tensor("W2", 0.001 * rng.standard_normal((STATE_SIZE, width)))])


def test_hidden_width_100000_builds_in_memory_linear_in_the_weights(capsys, tmp_path):
    """Canonicalisation used to build a dense 100,000² identity (74.5 GiB); the affine forms now keep it
    implicit, so the build passes under the smallest memory limit (64 MiB of estimated allocations)."""
    from hardening_helpers import cli

    path = wide_model(tmp_path / "wide.onnx", 100_000)
    status, _, err = cli(capsys, "--max-memory", "64M", "build", path, "-o", tmp_path / "bundle", "--target",
                         "ideal", "--steps", "2")
    assert status == 0, err
    blocks = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["layout"]["blocks"]
    assert sorted((block["rows"], block["columns"]) for block in blocks) == [(STATE_SIZE, 100_000),
                                                                            (100_000, STATE_SIZE)]


def test_hidden_width_100000_dense_identity_refused_by_the_memory_limit(capsys, tmp_path):
    message = build_refused(capsys, wide_model(tmp_path / "wide.onnx", 100_000, residual=True), "memory limit",
                            extra=("--steps", "2"))
    assert "add_residual" in message and "100000 channels" in message


def test_damaged_pt2_weights_config_refused(capsys, tmp_path):
    good = export_pt2(seeded(StandardMlp((4,)), 0), tmp_path / "good.pt2")
    damaged = tmp_path / "models" / "damaged.pt2"
    damaged.parent.mkdir()
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename.endswith("_config.json") and "/data/weights/" in f"/{item.filename}":
                content = json.dumps({"config": {"layers.0.weight": "not a mapping"}}).encode()
            target.writestr(item, content)
    build_refused(capsys, damaged)
