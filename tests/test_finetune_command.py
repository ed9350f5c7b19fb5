"""`admc finetune` and `admc.finetune`: the tuned model is written in the source's format with the same inputs and
`admc build` takes it; the same seed gives the same bytes; bad input exits 2 with nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import admc
from admc.cli.commands import main
from admc.compiler.driver import build, load_source
from admc.finetuning.flow_matching import FitSettings
from admc.finetuning.run import finetune

sys.path.insert(0, str(Path(__file__).parent))
from models import AdmForm, export_onnx, export_pt2, seeded  # noqa: E402

STEPS = "3"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("finetune")
    export_pt2(seeded(AdmForm((6, 5)), 2), directory / "model.pt2")
    export_onnx(seeded(AdmForm((6, 5)), 2), directory / "model.onnx")
    generator = np.random.default_rng(0)
    np.save(directory / "data.npy", 0.5 * generator.standard_normal((40, 2)) + 0.3)
    np.save(directory / "wide.npy", generator.standard_normal((40, 3)))
    return directory


def _finetune(files: Path, model: str, output: Path, *extra: str) -> int:
    return main(["finetune", str(files / model), "--data", str(files / "data.npy"), "-o", str(output),
                 "--max-steps", STEPS, "--seed", "1", "-q", *extra])


def test_the_tuned_pt2_is_deterministic_and_admc_build_takes_it(files, tmp_path, capsys):
    first, second = tmp_path / "first.pt2", tmp_path / "second.pt2"
    assert _finetune(files, "model.pt2", first) == 0
    assert _finetune(files, "model.pt2", second) == 0
    assert "program: " in capsys.readouterr().out
    assert first.read_bytes() == second.read_bytes()
    source, tuned = load_source(files / "model.pt2"), load_source(first)
    assert tuned.graph.inputs == source.graph.inputs and tuned.signature == source.signature
    changed = [name for name, value in source.graph.constants.items()
               if not np.array_equal(value, tuned.graph.constants[name])]
    assert changed, "fine-tuning changed no weight"
    assert (build(first, tmp_path / "bundle", target="aoc-48", steps=2) / "manifest.json").is_file()


def test_the_api_writes_what_the_command_writes(files, tmp_path):
    command, api = tmp_path / "command.onnx", tmp_path / "api.onnx"
    assert _finetune(files, "model.onnx", command) == 0
    result = admc.finetune(files / "model.onnx", np.load(files / "data.npy"), api, max_steps=int(STEPS), seed=1)
    assert api.read_bytes() == command.read_bytes()
    assert result.program.steps == result.control.steps == int(STEPS)
    assert load_source(api).signature == load_source(files / "model.onnx").signature


@pytest.mark.parametrize(("arguments", "message"), [
    (["--data", "missing.npy"], "missing.npy: data not found"),
    (["--data", "wide.npy"], "data has shape [40, 3]; expected [N, 2]"),
    (["--target", "no-such-target"], "unknown target 'no-such-target'"),
    (["-o", "tuned.pt2"], "written in the source's format"),
])
def test_bad_input_exits_2_and_writes_nothing(files, tmp_path, capsys, arguments, message):
    options = {"--data": str(files / "data.npy"), "-o": str(tmp_path / "tuned.onnx")}
    extra = []
    for flag, value in zip(arguments[::2], arguments[1::2], strict=True):
        if flag in options:
            options[flag] = str(files / value) if flag == "--data" else str(tmp_path / value)
        else:
            extra += [flag, value]
    argv = ["finetune", str(files / "model.onnx"), *[item for pair in options.items() for item in pair], *extra, "-q"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_teacher_objective_brings_the_machine_towards_the_source(files, tmp_path):
    """The teacher's target is the source's own velocity: its held-out loss is the machine's mismatch (above 0 on
    aoc-48) and falls as the program's weights are tuned; the control trains digitally for as many steps."""
    settings = FitSettings(learning_rate=2e-5)  # a tiny model's mismatch is tiny: small steps
    result = finetune(files / "model.pt2", np.load(files / "data.npy"), tmp_path / "tuned.pt2", max_steps=4,
                      objective="teacher", settings=settings)
    before, after = result.program.holdout_loss[0][1], result.program.holdout_loss[-1][1]
    assert 0.0 < after < before
    assert result.control.steps == result.program.steps


def test_the_schedule_given_is_the_one_fine_tuned(files, tmp_path, monkeypatch):
    # The tuned model is for the build the user makes: --solver/--steps reach every compile of the fit.
    from admc.finetuning import compiled_model

    schedules = []
    original = compiled_model.compile_source

    def recording(source, target, options, *arguments, **keywords):
        compiled = original(source, target, options, *arguments, **keywords)
        schedules.append((compiled.schedule.solver, len(compiled.schedule.steps)))
        return compiled

    monkeypatch.setattr(compiled_model, "compile_source", recording)
    assert _finetune(files, "model.onnx", tmp_path / "tuned.onnx", "--solver", "cn", "--steps", "4") == 0
    assert schedules and set(schedules) == {("crank-nicolson", 4)}


def test_an_unknown_solver_exits_2_and_writes_nothing(files, tmp_path, capsys):
    assert _finetune(files, "model.onnx", tmp_path / "tuned.onnx", "--solver", "nope") == 2
    assert "unknown solver 'nope'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
