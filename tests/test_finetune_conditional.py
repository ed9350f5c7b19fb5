"""Fine-tuning conditional models and classifier-free guidance (issue 24): with the source's own weights the
differentiable program runs what the bundle twin runs for the same conditions (guided or not, nominal and
calibrated, a class embedding, a one-hot vector concatenated at the first layer, a dense condition through its own
MLP), its gradient through a conditional phase is the finite differences', the digital velocity is the guided
source's, and `admc finetune` takes each sample's condition from a file (bad condition files exit 2)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_twin import bundle_twin_samples
from gradient_check import worst_gradient_error

from admc.cli.commands import main
from admc.compiler.build_options import BuildOptions, target_machine
from admc.compiler.driver import build, load_source
from admc.finetuning.compiled_model import CompiledModel
from admc.targets.loader import load_target

sys.path.insert(0, str(Path(__file__).parent))
from conditional_models import CLASSES, INPUT_NAMES, example_condition, make  # noqa: E402
from models import AdmForm, example_inputs, export_onnx, seeded  # noqa: E402

EXACT = 1e-10
NULL = {"embedding": "4", "concat": "zeros", "dense": "zeros"}


def _export(kind: str, directory: Path) -> Path:
    from admc.frontends.torch_export import export_module

    x, t = example_inputs()
    path = directory / f"{kind}.pt2"
    torch.export.save(export_module(make(kind), (x, t, example_condition(kind)), source=kind), path)
    return path


def _compiled(path: Path, kind: str, guidance: float | None, calibration: str | None = None,
              quantise: bool = True) -> CompiledModel:
    name = INPUT_NAMES[kind][2]
    target = load_target("aoc-48")
    options = replace(BuildOptions(), steps=2, calibration=target_machine(target, calibration),
                      condition_inputs=(name,), guidance=guidance,
                      null_conditions=None if guidance is None else [f"{name}={NULL[kind]}"])
    return CompiledModel(load_source(path, condition_inputs=(name,)), target, options, seed=3, quantise=quantise)


@pytest.mark.parametrize(("kind", "guidance", "calibration"), [
    ("embedding", 3.0, None), ("embedding", 3.0, "hw48"), ("concat", 2.0, None), ("dense", None, None)])
def test_a_conditional_program_runs_as_the_bundle_twin(tmp_path, kind, guidance, calibration):
    model = _compiled(_export(kind, tmp_path), kind, guidance, calibration)
    try:
        assert model.compiled.condition_interface.parts
        noise = np.random.default_rng(0).standard_normal((8, 2))
        conditions = {INPUT_NAMES[kind][2]: example_condition(kind, 8).numpy()}
        twin = bundle_twin_samples(model, noise, conditions)
        assert np.abs(model.samples(noise, conditions=conditions) - twin).max() <= EXACT
        # The conditions matter: another class gives other samples.
        other = {name: np.roll(value, 1, axis=0) for name, value in conditions.items()}
        assert np.abs(model.samples(noise, conditions=other) - twin).max() > 1e-3
    finally:
        model.close()


def test_the_teacher_is_the_guided_source_and_the_digital_velocity_the_conditional_one(tmp_path):
    """The teacher: (1 + W)·f(x, t, c) − W·f(x, t, ∅) of the torch module itself, at every phase point; the digital
    velocity (what the control trains): f(x, t, c)."""
    module = make("embedding").double()
    model = _compiled(_export("embedding", tmp_path), "embedding", 3.0)
    try:
        y = torch.as_tensor(np.random.default_rng(1).standard_normal((len(model.phase_points), 2)))
        labels = torch.arange(len(model.phase_points)) % CLASSES
        times = torch.as_tensor([point.time for point in model.phase_points], dtype=torch.float64)
        with torch.no_grad():
            conditional = module(y, times, labels)
            expected = 4.0 * conditional - 3.0 * module(y, times, torch.full_like(labels, CLASSES))
            teacher = model.teacher_velocity(y, model.phase_points, conditions={"label": labels})
            digital = model.digital_velocity(y, model.phase_points, conditions={"label": labels})
        np.testing.assert_allclose(teacher.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(digital.numpy(), conditional.numpy(), rtol=1e-12, atol=1e-12)
    finally:
        model.close()


def test_gradient_through_a_guided_conditional_phase_is_the_finite_differences(tmp_path):
    """Autograd through the condition drive (the embedding table included), the guided twin chain and the
    velocity phase's fixed point, against central differences (float64, quantisation off)."""
    model = _compiled(_export("embedding", tmp_path), "embedding", 3.0, quantise=False)
    generator = np.random.default_rng(0)
    y = torch.as_tensor(generator.standard_normal((6, 2)))
    points = [model.phase_points[index % len(model.phase_points)] for index in range(6)]
    conditions = {"label": torch.as_tensor(generator.integers(0, CLASSES, 6))}
    weights = torch.as_tensor(generator.standard_normal((6, 2)))

    def loss() -> torch.Tensor:
        return (model.velocity(y, points, tolerance=1e-13, conditions=conditions) * weights).sum()

    try:
        loss().backward()
        table = next(value for name, value in model.parameters.items() if "embedding" in name)
        assert bool(torch.any(table.grad != 0))  # the embedding table is a weight the drive reaches
        assert worst_gradient_error(model.parameters.values(), loss, np.random.default_rng(2)) <= 1e-6
    finally:
        model.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("conditional")
    export_onnx(make("embedding"), directory / "model.onnx", (*example_inputs(), example_condition("embedding")),
                INPUT_NAMES["embedding"])
    export_onnx(seeded(AdmForm((6, 5)), 2), directory / "unconditional.onnx")
    generator = np.random.default_rng(0)
    np.save(directory / "data.npy", 0.5 * generator.standard_normal((40, 2)))
    np.save(directory / "labels.npy", generator.integers(0, CLASSES, 40))
    np.save(directory / "short.npy", generator.integers(0, CLASSES, 39))
    np.save(directory / "outside.npy", np.full(40, CLASSES + 1))
    np.save(directory / "fractional.npy", np.full(40, 0.5))
    return directory


def _finetune(files: Path, model: str, output: Path, *extra: str) -> int:
    return main(["finetune", str(files / model), "--data", str(files / "data.npy"), "-o", str(output),
                 "--max-steps", "2", "--seed", "1", "-q", *extra])


def test_admc_finetune_takes_each_samples_class_and_admc_build_the_result(files, tmp_path):
    output = tmp_path / "tuned.onnx"
    guided = ["--guidance", "2", "--null-condition", f"label={CLASSES}"]
    assert _finetune(files, "model.onnx", output, "--condition", f"label={files / 'labels.npy'}", *guided) == 0
    source, tuned = load_source(files / "model.onnx"), load_source(output)
    assert tuned.signature == source.signature
    assert any(not np.array_equal(value, tuned.graph.constants[name]) for name, value in source.graph.constants.items())
    bundle = build(output, tmp_path / "bundle", target="aoc-48", guidance=2.0, null_conditions=[f"label={CLASSES}"])
    assert (bundle / "manifest.json").is_file()


@pytest.mark.parametrize(("model", "extra", "message"), [
    ("model.onnx", [], "model.onnx: a conditional model (condition inputs label): give each sample's condition "
                       "with --condition label=FILE.npy"),
    ("model.onnx", ["--condition", "label=short.npy"], "short.npy: condition 'label' has shape [39]; expected one "
                                                       "row per sample"),
    ("model.onnx", ["--condition", "label=outside.npy"], "outside.npy: condition 'label' holds class indices 5..5"),
    ("model.onnx", ["--condition", "label=fractional.npy"], "fractional.npy: condition 'label' is a class index"),
    ("model.onnx", ["--condition", "label=missing.npy"], "missing.npy: cannot read condition array"),
    ("model.onnx", ["--condition", "labels.npy"], "expected NAME=FILE.npy"),
    ("model.onnx", ["--condition", "label=labels.npy", "--guidance", "2"], "--guidance needs --null-condition"),
    ("unconditional.onnx", ["--condition", "label=labels.npy"], "labels.npy: conditions given, but"),
])
def test_bad_conditions_exit_2_and_write_nothing(files, tmp_path, capsys, model, extra, message):
    extra = [f"label={files / item.partition('=')[2]}" if item.startswith("label=") else item for item in extra]
    output = tmp_path / "tuned.onnx"
    assert _finetune(files, model, output, *extra) == 2
    error = capsys.readouterr().err
    assert message in error, error
    assert list(tmp_path.iterdir()) == []


def test_the_condition_map_is_the_compilers_at_other_weights(tmp_path):
    """Recompiling perturbed weights (the embedding table among them) gives the condition injections and boundary
    values the torch map computes from them (the injections in spine units: each compile chose its own voltages)."""
    from admc.compiler.driver import SourceModel, compile_source
    from admc.ir.condition import ConditionContext

    path = _export("embedding", tmp_path)
    model = _compiled(path, "embedding", 3.0)
    try:
        source, generator = model.source, np.random.default_rng(7)
        changed = {name: np.asarray(source.graph.constants[name]) * (1.0 + 0.1 * generator.standard_normal(
            np.shape(source.graph.constants[name]))) for name in model.parameters}
        graph = replace(source.graph, constants={**source.graph.constants, **changed})
        other = compile_source(SourceModel(graph, source.signature, source.content, source.format, source.name),
                               model.compiled.target, replace(BuildOptions(), steps=2, condition_inputs=("label",),
                                                              guidance=3.0, null_conditions=["label=4"]))
        weights = {name: torch.as_tensor(value) for name, value in changed.items()}
        arrays = model.program_map.arrays(weights)
        mine = {group.name: group.voltage_scale for group in model.compiled.program.groups}
        for part, value in zip(other.condition_interface.parts, arrays.conditions, strict=True):
            np.testing.assert_allclose(value.numpy() / mine[part.group], part.matrix, rtol=1e-9, atol=1e-12)
        labels, times = np.arange(6) % CLASSES, np.linspace(0.0, 1.0, 6)
        values = model.program_map.probe.boundary_values(weights, torch.as_tensor(times), {"label": labels})
        context = ConditionContext(times, {"label": labels})
        for name, value in values.items():
            np.testing.assert_allclose(value.numpy(), other.network.conditions[name].columns(context), rtol=1e-12)
    finally:
        model.close()
