"""Conditional models and classifier-free guidance (issue 10): compiled programs equal the source model run
as given (twice for guidance, combined) for every solver and guidance weight, through ONNX and torch.export;
the conditioning interface's size; run-time guidance; refusals.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conditional_models import CLASSES, INPUT_NAMES, example_condition, make
from models import STATE_SIZE, example_inputs, export_onnx, export_pt2

from admc.bundle.store import Bundle
from admc.cli import main
from admc.compiler.driver import build, load_source
from admc.core.errors import AdmcError
from admc.passes.canonicalize import canonicalize
from admc.runtime.reference import run_reference
from admc.runtime.simulate import simulate

SOLVERS = ("explicit-euler", "heun", "implicit-euler", "crank-nicolson")
KINDS = ("embedding", "dense", "concat")
FORMATS = ("onnx", "pt2")
BATCH = 8
STEPS = 4
NULL = {"embedding": ("label", CLASSES), "dense": ("cond", "zeros"), "concat": ("class_vector", "zeros")}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    directory = tmp_path_factory.mktemp("conditional")
    files = {}
    for seed, kind in enumerate(KINDS):
        module = make(kind, seed)
        inputs = (*example_inputs(), example_condition(kind))
        files[kind, "onnx"] = export_onnx(module, directory / f"{kind}.onnx", inputs, INPUT_NAMES[kind])
        files[kind, "pt2"] = export_pt2(module, directory / f"{kind}.pt2", inputs)
    return files


def conditions_for(kind: str, name: str, batch: int = BATCH) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(5)
    if kind == "embedding":
        return {name: generator.integers(0, CLASSES, batch)}
    if kind == "concat":
        return {name: np.eye(CLASSES)[generator.integers(0, CLASSES, batch)]}
    return {name: generator.standard_normal((batch, 3))}


def null_value(kind: str):
    name, value = NULL[kind]
    return {name: np.asarray(value) if value != "zeros" else np.zeros(3 if kind == "dense" else CLASSES)}


def relative(estimate: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(estimate - expected)) / np.sqrt(np.mean(expected ** 2)))


@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_conditional_and_guided_programs_equal_the_reference(model_files, tmp_path: Path, kind: str,
                                                                      file_format: str) -> None:
    """Ideal target: bundle (ideal executor) ≡ source model (run twice for CFG and combined), ≤ 1e-6."""
    path = model_files[kind, file_format]
    name = load_source(path).signature.conditions[0].name
    noise = np.random.default_rng(3).standard_normal((BATCH, STATE_SIZE))
    conditions = conditions_for(kind, name)
    for solver in SOLVERS:
        for guidance in (None, 0.0, 1.0, 3.0):
            null = null_value(kind) if guidance is not None else None
            bundle = build(path, tmp_path / f"{solver}-{guidance}", target="ideal", solver=solver, steps=STEPS,
                           guidance=guidance, null_conditions=null)
            samples = simulate(bundle, noise, conditions, ideal=True)
            expected = run_reference(path, noise, solver, np.linspace(0, 1, STEPS + 1), conditions=conditions,
                                     guidance=guidance, null_conditions=null).samples
            assert relative(samples, expected) <= 1e-6, (solver, guidance)
    # Guidance must change the samples (else the test above could not tell the copies apart).
    unguided = run_reference(path, noise, "heun", np.linspace(0, 1, STEPS + 1), conditions=conditions).samples
    guided = run_reference(path, noise, "heun", np.linspace(0, 1, STEPS + 1), conditions=conditions, guidance=3.0,
                           null_conditions=null_value(kind))
    assert relative(guided.samples, unguided) > 1e-3


def test_reference_combines_two_runs_of_the_source_model(model_files) -> None:
    """(1 + W) f(c) − W f(∅) by hand, one explicit Euler step, against the conditioned reference."""
    path = model_files["embedding", "onnx"]
    module_output = {}
    from admc.runtime.source_model import make_velocity

    velocity = make_velocity(path)
    noise = np.random.default_rng(0).standard_normal((6, STATE_SIZE))
    labels = np.array([0, 1, 2, 3, 0, 1])
    times = np.zeros(6)
    module_output["c"] = velocity(noise, times, {"label": labels})
    module_output["null"] = velocity(noise, times, {"label": np.full(6, CLASSES)})
    step = run_reference(path, noise, "explicit-euler", np.array([0.0, 0.5]), conditions={"label": labels},
                         guidance=2.0, null_conditions={"label": np.asarray(CLASSES)}).samples
    np.testing.assert_allclose(step, noise + 0.5 * (3.0 * module_output["c"] - 2.0 * module_output["null"]),
                               rtol=0, atol=1e-14)


def test_guidance_changes_per_run_without_rebuilding(model_files, tmp_path: Path) -> None:
    path = model_files["dense", "onnx"]
    noise = np.random.default_rng(4).standard_normal((BATCH, STATE_SIZE))
    conditions = conditions_for("dense", "cond")
    bundle = build(path, tmp_path / "w3", target="ideal", solver="crank-nicolson", steps=STEPS, guidance=3.0,
                   null_conditions=["cond=zeros"])
    section = Bundle(bundle).manifest["conditions"]["guidance"]
    assert section["runtime_adjustable"] and section["weight"] == 3.0
    for weight in (0.0, 1.0, 5.0):
        samples = simulate(bundle, noise, conditions, guidance=weight)
        expected = run_reference(path, noise, "crank-nicolson", np.linspace(0, 1, STEPS + 1), conditions=conditions,
                                 guidance=weight, null_conditions=["cond=zeros"]).samples
        assert relative(samples, expected) <= 1e-6
    zero = build(path, tmp_path / "w0", target="ideal", steps=STEPS, guidance=0.0, null_conditions=["cond=zeros"])
    with pytest.raises(AdmcError, match="built with --guidance 0"):
        simulate(zero, noise, conditions, guidance=1.0)
    plain = build(path, tmp_path / "plain", target="ideal", steps=STEPS)
    with pytest.raises(AdmcError, match="needs a bundle built with --guidance"):
        simulate(plain, noise, conditions, guidance=1.0)


def test_interface_size_counts_the_embedding_table_and_injections(model_files, tmp_path: Path) -> None:
    module = make("embedding", 0)
    bundle = build(model_files["embedding", "onnx"], tmp_path / "b", target="ideal", steps=STEPS)
    section = Bundle(bundle).manifest["conditions"]
    size = section["interface"]["size"]
    table = module.embedding.weight.numel()
    hidden = module.embedding.weight.shape[1]
    # Gather reads the table (no arithmetic); the interface then injects the 12 values (identity matrix).
    assert size["parameters"] == table + hidden
    assert size["multiply_adds_per_sample"] == hidden and not size["depends_on_time"]
    assert section["distribution"] == {"label": {"kind": "uniform", "classes": CLASSES + 1}}
    guided = build(model_files["embedding", "onnx"], tmp_path / "g", target="ideal", steps=STEPS, guidance=1.0,
                   null_conditions={"label": CLASSES})
    manifest = Bundle(guided).manifest
    # The null token (the table's last row) is not drawn by verify; the guided loop holds two hidden chains.
    assert manifest["conditions"]["distribution"] == {"label": {"kind": "uniform", "classes": CLASSES}}
    cost = manifest["conditions"]["guidance"]["module_cost"]
    assert cost["weights_guided"] == 2 * cost["weights_unguided"]
    dense = Bundle(build(model_files["dense", "onnx"], tmp_path / "d", target="ideal", steps=STEPS))
    assert dense.manifest["conditions"]["interface"]["size"]["depends_on_time"]
    assert dense.manifest["conditions"]["interface"]["size"]["multiply_adds_per_sample_per_phase"] > 0
    assert main(["inspect", str(bundle)]) == 0


def test_condition_named_on_the_command_line(tmp_path: Path) -> None:
    """An input whose name does not say it is a condition is refused until ``--condition`` names it."""
    module = make("dense", 1)
    path = export_onnx(module, tmp_path / "z.onnx", (*example_inputs(), example_condition("dense")), ("x", "t", "z"))
    with pytest.raises(AdmcError, match="name condition inputs with --condition"):
        load_source(path)
    assert load_source(path, condition_inputs=["z"]).signature.condition_names == ("z",)
    network = canonicalize(load_source(path, condition_inputs=["z"]).graph)
    x, t = example_inputs()
    z = example_condition("dense")
    expected = module.double()(x.double(), t.double(), z.double()).detach().numpy()
    np.testing.assert_allclose(network.velocity(x.numpy(), t.numpy(), {"z": z.numpy()}), expected, atol=1e-12)


def run_cli(arguments: list[str], capsys) -> tuple[int, str]:
    code = main(arguments)
    return code, capsys.readouterr().err


def test_refusals_exit_2_with_one_line_and_write_nothing(model_files, tmp_path: Path, capsys) -> None:
    scaled = export_onnx(make("scaled"), tmp_path / "scaled.onnx", (*example_inputs(), example_condition("dense")),
                         INPUT_NAMES["scaled"])
    output = tmp_path / "out"
    code, error = run_cli(["build", str(scaled), "-o", str(output), "--target", "ideal"], capsys)
    assert code == 2 and not output.exists()
    assert error.count("\n") == 1 and "op Mul" in error and "cond" in error and "fixed weight image" in error
    dense = tmp_path / "dense"
    assert main(["build", str(model_files["dense", "onnx"]), "-o", str(dense), "--target", "ideal",
                 "--steps", "4"]) == 0
    capsys.readouterr()
    report = tmp_path / "report.json"
    code, error = run_cli(["verify", str(dense), "--samples", "8", "--json", str(report)], capsys)
    assert code == 2 and not report.exists() and error.count("\n") == 1
    assert "'cond' has no declared distribution" in error
    noise, wrong = tmp_path / "noise.npy", tmp_path / "wrong.npy"
    np.save(noise, np.zeros((5, STATE_SIZE)))
    np.save(wrong, np.zeros((5, 4)))
    samples = tmp_path / "samples.npy"
    code, error = run_cli(["simulate", str(dense), "--noise", str(noise), "--condition", f"cond={wrong}",
                           "-o", str(samples), "--ideal"], capsys)
    assert code == 2 and not samples.exists() and error.count("\n") == 1
    assert "condition 'cond' has shape [5, 4]; expected [5, 3]" in error
    code, error = run_cli(["reference", str(model_files["dense", "onnx"]), "--noise", str(noise), "--condition",
                           f"cond={wrong}", "-o", str(samples)], capsys)
    assert code == 2 and not samples.exists() and "expected [5, 3]" in error
    code, error = run_cli(["build", str(model_files["dense", "onnx"]), "-o", str(output), "--guidance", "1"],
                          capsys)
    assert code == 2 and not output.exists() and "--null-condition" in error


def test_verify_reports_per_class_with_declared_distribution(model_files, tmp_path: Path, capsys) -> None:
    bundle = tmp_path / "concat"
    assert main(["build", str(model_files["concat", "onnx"]), "-o", str(bundle), "--target", "ideal", "--steps", "4",
                 "--guidance", "1", "--null-condition", "class_vector=zeros",
                 "--condition-distribution", "class_vector=one-hot:4"]) == 0
    report = tmp_path / "verify.json"
    assert main(["verify", str(bundle), "--samples", "32", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    classes = {row["class"]: row for row in data["per_class"]}
    assert set(classes) == set(range(CLASSES)) and sum(row["samples"] for row in classes.values()) == 32
    assert all(row["passed"] and row["ideal_relative_error"] <= 1e-6 for row in classes.values())
    assert "class 0" in capsys.readouterr().out


def test_aoc_conditional_guided_bundle_verifies_per_class(model_files, tmp_path: Path) -> None:
    """aoc-48: the twin runs the per-sample injections; verify passes overall and per class."""
    from admc.verify.chain import verify_bundle

    path = build(model_files["embedding", "onnx"], tmp_path / "aoc", target="aoc-48", steps=8, guidance=2.0,
                 null_conditions={"label": CLASSES})
    report = verify_bundle(Bundle(path), samples=64, seed=0)
    assert report.passed, report.links
    assert len(report.per_class) == CLASSES and all(row["passed"] for row in report.per_class)
    # Run-time guidance on the twin (gains rescaled) tracks the reference at that weight.
    noise = np.random.default_rng(1).standard_normal((32, STATE_SIZE))
    labels = {"label": np.arange(32) % CLASSES}
    expected = run_reference(model_files["embedding", "onnx"], noise, "implicit-euler", np.linspace(0, 1, 9),
                             conditions=labels, guidance=0.5, null_conditions={"label": CLASSES}).samples
    twin = simulate(path, noise, labels, guidance=0.5, ideal=False)
    built = simulate(path, noise, labels, ideal=False)
    assert relative(twin, expected) < 0.1 < relative(built, expected)
    assert torch.get_default_dtype() == torch.float32  # the twin leaves global torch state alone


def test_module_with_example_inputs_builds_through_torch_export(tmp_path: Path) -> None:
    """An nn.Module (exported inside admc) with an int64 class input: the embedding becomes a Gather."""
    module = make("embedding", 3)
    inputs = (*example_inputs(), example_condition("embedding"))
    bundle = build(module, tmp_path / "module", target="ideal", solver="heun", steps=STEPS, example_inputs=inputs)
    manifest = Bundle(bundle).manifest
    assert manifest["conditions"]["inputs"] == [{"name": "label", "shape": [], "kind": "index"}]
    noise = np.random.default_rng(2).standard_normal((BATCH, STATE_SIZE))
    labels = {"label": np.arange(BATCH) % CLASSES}
    samples = simulate(bundle, noise, labels)
    expected = noise.copy()
    grid = np.linspace(0, 1, STEPS + 1)
    double = module.double()
    with torch.no_grad():
        def velocity(x, t):
            return double(torch.from_numpy(x), torch.full((BATCH,), t, dtype=torch.float64),
                          torch.from_numpy(labels["label"])).numpy()
        for start, stop in zip(grid[:-1], grid[1:], strict=True):
            slope = velocity(expected, start)
            predicted = expected + (stop - start) * slope
            expected = expected + 0.5 * (stop - start) * (slope + velocity(predicted, stop))
    assert relative(samples, expected) <= 1e-6
