"""Every supported model kind, exported inside the test, built for the ideal target and verified end to end.

For each kind and solver (T = 4 and 16) ``admc verify`` must pass with the program link's relative error
≤ 1e-6; the same module through ONNX and through ``.pt2`` must compile to identical weights and the same
canonical network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from models import (
    AdmForm,
    GlueMlp,
    ResidualMlp,
    SinusoidalTime,
    StandardMlp,
    export_onnx,
    export_pt2,
    gemm_model,
    gemm_reference,
    glue_onnx_model,
    seeded,
)

from admc.cli import main
from admc.compiler.driver import build, load_source
from admc.passes.canonicalize import canonicalize

SOLVERS = ("explicit-euler", "heun", "implicit-euler", "crank-nicolson")
STEP_COUNTS = (4, 16)
TORCH_KINDS = {
    "adm-form": lambda: AdmForm((16, 12)),
    "standard-mlp": lambda: StandardMlp((16, 16)),
    "residual": lambda: ResidualMlp(16),
    "sinusoidal-time": lambda: SinusoidalTime(16),
    "glue": lambda: GlueMlp(12),
}
GEMM_VARIANTS = ("plain", "transB", "alpha_beta", "no_bias", "matmul_add")
# Kinds whose state enters the first layer linearly and has no x-residual: the fold-input rewrite applies.
FOLDABLE = ("standard-mlp", "sinusoidal-time", "glue", "gemm-plain", "glue-by-hand")
VERIFY_SAMPLES = "64"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """kind → {"onnx": path, "pt2": path (torch kinds only), "module": the torch module}."""
    directory = tmp_path_factory.mktemp("models")
    files: dict[str, dict] = {}
    for seed, (kind, make) in enumerate(TORCH_KINDS.items()):
        module = seeded(make(), seed)
        files[kind] = {
            "onnx": export_onnx(module, directory / f"{kind}.onnx"),
            "pt2": export_pt2(module, directory / f"{kind}.pt2"),
            "module": module,
        }
    for seed, variant in enumerate(GEMM_VARIANTS):
        files[f"gemm-{variant}"] = {"onnx": gemm_model(directory / f"gemm-{variant}.onnx", variant, seed=seed)}
    files["glue-by-hand"] = {"onnx": glue_onnx_model(directory / "glue-by-hand.onnx")}
    return files


ALL_KINDS = (*TORCH_KINDS, *(f"gemm-{variant}" for variant in GEMM_VARIANTS), "glue-by-hand")


def build_and_verify(model: Path, output: Path, solver: str, steps: int, target: str | Path = "ideal") -> dict:
    build(model, output, target=str(target), solver=solver, steps=steps)
    report_path = output.parent / f"{output.name}.verify.json"
    status = main(["verify", str(output), "--samples", VERIFY_SAMPLES, "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert status == 0, report
    assert report["passed"]
    return report


def program_link(report: dict) -> dict:
    (link,) = [link for link in report["links"] if "bundle (ideal executor)" in link["link"]]
    return link


# ---------------------------------------------------------------- the exported graphs are what they claim


def test_exports_contain_the_ops_each_kind_is_about(model_files):
    def op_types(kind: str) -> set[str]:
        return {node.op_type for node in onnx.load(str(model_files[kind]["onnx"])).graph.node}

    assert "Concat" in op_types("standard-mlp")
    assert {"Sin", "Cos"} <= op_types("sinusoidal-time")
    assert {"Reshape", "Flatten", "Unsqueeze", "Squeeze", "Cast"} <= op_types("glue")
    assert {"Identity", "Reshape", "Flatten", "Unsqueeze", "Squeeze", "Cast"} <= op_types("glue-by-hand")
    assert {"MatMul", "Add"} <= op_types("gemm-matmul_add")
    gemm = next(node for node in onnx.load(str(model_files["gemm-alpha_beta"]["onnx"])).graph.node
                if node.name == "gemm1")
    attributes = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in gemm.attribute}
    assert attributes == {"transB": 1, "alpha": 0.5, "beta": 2.0}
    inputs = onnx.load(str(model_files["adm-form"]["onnx"])).graph.input
    assert all(value.type.tensor_type.shape.dim[0].dim_param for value in inputs)  # dynamic batch


@pytest.mark.parametrize("variant", GEMM_VARIANTS)
def test_gemm_variants_canonicalise_to_the_closed_form(model_files, variant):
    path = model_files[f"gemm-{variant}"]["onnx"]
    network = canonicalize(load_source(path).graph)
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((9, 2)), rng.uniform(0, 1, 9)
    np.testing.assert_allclose(network.velocity(x, t), gemm_reference(path, x, t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_canonical_network_computes_the_torch_module(model_files, kind):
    module = model_files[kind]["module"]
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((7, 2)), rng.uniform(0, 1, 7)
    with torch.no_grad():
        expected = module.double()(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    module.float()
    for file_format in ("onnx", "pt2"):
        network = canonicalize(load_source(model_files[kind][file_format]).graph)
        np.testing.assert_allclose(network.velocity(x, t), expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- build + verify for every solver


@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_onnx_model_builds_and_verifies(model_files, tmp_path, kind, solver, steps):
    report = build_and_verify(model_files[kind]["onnx"], tmp_path / "bundle", solver, steps)
    assert report["solver"] == solver and report["steps"] == steps
    assert program_link(report)["relative_error"] <= 1e-6
    assert all(link["relative_error"] <= 1e-6 for link in report["links"])
    assert len(program_link(report)["per_step_nrmse"]) == steps


@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_pt2_model_builds_and_verifies(model_files, tmp_path, kind, solver, steps):
    report = build_and_verify(model_files[kind]["pt2"], tmp_path / "bundle", solver, steps)
    assert program_link(report)["relative_error"] <= 1e-6


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", FOLDABLE)
def test_folded_input_layout_builds_and_verifies(model_files, tmp_path, no_linear_target, kind, solver):
    bundle = tmp_path / "bundle"
    for steps in STEP_COUNTS:
        report = build_and_verify(model_files[kind]["onnx"], bundle, solver, steps, no_linear_target)
        assert program_link(report)["relative_error"] <= 1e-6
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["layout"]["kind"] == "folded-input"
    assert manifest["target"]["linear_channels"] is False
    assert all(group["activation"] != "identity" for group in manifest["layout"]["groups"])
    assert manifest["report"]["digital_multiply_adds_per_step"] > 0
    assert any("multiply-adds" in note for note in manifest["report"]["notes"])


@pytest.mark.parametrize("kind", ["standard-mlp", "sinusoidal-time"])
def test_both_layouts_give_the_same_samples(model_files, tmp_path, no_linear_target, kind):
    from admc.bundle.store import Bundle
    from admc.verify.chain import verify_ideal_chain

    trajectories = []
    for name, target in (("direct", "ideal"), ("folded", no_linear_target)):
        build(model_files[kind]["onnx"], tmp_path / name, target=str(target), solver="crank-nicolson", steps=8)
        trajectories.append(verify_ideal_chain(Bundle(tmp_path / name), 32, 5).trajectories["ideal"])
    np.testing.assert_allclose(trajectories[0], trajectories[1], rtol=0, atol=1e-10)


# ---------------------------------------------------------------- ONNX and .pt2 compile to the same program


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_onnx_and_pt2_give_identical_weight_payloads(model_files, tmp_path, kind):
    manifests = []
    for file_format in ("onnx", "pt2"):
        bundle = build(model_files[kind][file_format], tmp_path / file_format, target="ideal",
                       solver="crank-nicolson", steps=4)
        manifests.append(json.loads((bundle / "manifest.json").read_text()))
    onnx_payloads, pt2_payloads = (
        {name: digest for name, digest in manifest["payloads"].items()
         if name.startswith(("weights/", "injection/"))}
        for manifest in manifests
    )
    assert any(name.startswith("weights/") for name in onnx_payloads)
    assert onnx_payloads == pt2_payloads
    assert manifests[0]["layout"] == manifests[1]["layout"]


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_onnx_and_pt2_give_the_same_canonical_network(model_files, kind):
    onnx_network, pt2_network = (canonicalize(load_source(model_files[kind][file_format]).graph)
                                 for file_format in ("onnx", "pt2"))
    assert [node.size for node in onnx_network.nodes] == [node.size for node in pt2_network.nodes]
    times = np.linspace(0.0, 1.0, 9)
    pairs = [*zip(onnx_network.nodes, pt2_network.nodes, strict=True), (onnx_network.output, pt2_network.output)]
    for onnx_node, pt2_node in pairs:
        assert sorted(onnx_node.terms) == sorted(pt2_node.terms)
        for atom, matrix in onnx_node.terms.items():
            np.testing.assert_allclose(matrix, pt2_node.terms[atom], rtol=0, atol=1e-12)
        np.testing.assert_allclose(onnx_node.bias, pt2_node.bias, rtol=0, atol=1e-12)
        np.testing.assert_allclose(onnx_node.time_vector(times), pt2_node.time_vector(times), rtol=0, atol=1e-12)
