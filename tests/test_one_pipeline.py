"""One pipeline (issue 21, item 1): an unconditional model is a model with zero conditions.

- ``admc build --timings`` lists the same passes, in the same order, for an unconditional model, a
  conditional one and a guided one on the same target (guidance is a pass, the identity without it);
- no module of the driver, the CLI, verify or the runtime branches on whether a model has conditions (the
  patterns below match every such branch the two-pipeline code had), and no module keeps the second
  pipeline's name stems;
- an unconditional program verifies with empty per-condition sections and an unconditional run takes no
  conditions.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from admc.bundle.store import Bundle
from admc.cli import main
from admc.core.errors import AdmcError
from admc.runtime.simulate import simulate
from admc.verify.chain import verify_bundle

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLES = REPOSITORY / "examples"
MODELS = {
    "unconditional": [str(EXAMPLES / "two_moons.onnx")],
    "conditional": [str(EXAMPLES / "conditional" / "eight_gaussians.onnx")],
    "guided": [str(EXAMPLES / "conditional" / "eight_gaussians.onnx"), "--guidance", "3", "--null-condition",
               "label=8"],
}
# A timing row: the pass name, then its seconds with three decimals (names may be longer than the column).
TIMING_ROW = re.compile(r"^(?P<name>.+?)\s+\d+\.\d{3}(\s|$)")

ONE_PIPELINE_FILES = [REPOSITORY / "admc" / "compiler" / "driver.py",
                      *sorted((REPOSITORY / "admc" / "cli").glob("*.py")),
                      *sorted((REPOSITORY / "admc" / "verify").glob("*.py")),
                      *sorted((REPOSITORY / "admc" / "runtime").glob("*.py"))]
SUBJECT = r"(conditional|conditioning|conditions?|condition_interface|interface|signature\.conditions)"
CONDITION_BRANCH = re.compile(
    # if conditional: / if not conditions / if interface is None / ... if conditions else ...
    rf"\bif\s+(not\s+)?[\w.\[\]\"']*?\b{SUBJECT}\s*(is\s+(not\s+)?None\b|:|\bor\b|\band\b|\belse\b|$)"
    # if ... or not signature.conditions: / if bundle.manifest.get("conditions") or ...
    rf"|\bif\b.*\b(or|and)\s+(not\s+)?[\w.]*\b{SUBJECT}\s*(:|\bor\b|\band\b|is\s)"
    r"|\bif\b.*\.get\([\"']conditions[\"']\)"
    # report["_conditioning"] is not None; conditional = bool(signature.conditions)
    r"|[\"']_?condition\w*[\"']\]\s+is\s"
    r"|\bconditional\s*=\s*bool\(")


def pass_names(capsys: pytest.CaptureFixture, arguments: list[str], output: Path, target: str) -> list[str]:
    # Crank-Nicolson over 16 steps: the guided loop of the example settles on aoc-48 (as the README builds it).
    assert main(["build", *arguments, "-o", str(output), "--target", target, "--solver", "crank-nicolson",
                 "--timings"]) == 0
    rows = capsys.readouterr().err.splitlines()
    assert rows[0].split()[0] == "pass", rows
    return [TIMING_ROW.match(row).group("name") for row in rows[1:]]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["ideal", "aoc-48"])
def test_timings_list_the_same_passes_with_and_without_conditions(capsys, tmp_path: Path, target: str) -> None:
    names = {kind: pass_names(capsys, arguments, tmp_path / kind, target) for kind, arguments in MODELS.items()}
    assert names["unconditional"] == names["conditional"] == names["guided"], names
    assert "condition interface and guidance" in names["unconditional"]
    assert Bundle(tmp_path / "conditional").manifest["conditions"]["inputs"]
    assert "conditions" not in Bundle(tmp_path / "unconditional").manifest


def test_the_branch_patterns_match_the_two_pipeline_code() -> None:
    """The grep below must be able to fail: lines of the old driver, CLI, verify and runtime."""
    old = ['    conditional = bool(source.signature.conditions)', '    if conditional and passes.verify:',
           '    if conditional or guidance is not None or null_conditions:',
           '    canonical = checks.canonical_check(probe) if conditional else canonical_check(source.graph)',
           '    if arguments.condition or arguments.guidance is not None or arguments.null_condition:',
           '    if bundle.manifest.get("conditions") or arguments.condition or arguments.guidance is not None:',
           '    if conditioning is None:', '    if report["_conditioning"] is not None:',
           '        expected = velocity(noise, times, conditions) if conditions else velocity(noise, times)',
           '    if interface is None:', '    if interface is not None:', '    if not conditions:',
           '    if signature is None or not signature.conditions:', '        if conditions or guidance is not None:',
           '    if signature.conditions:', '    if not interface:']
    assert [line for line in old if not CONDITION_BRANCH.search(line)] == []




@pytest.mark.parametrize("path", ONE_PIPELINE_FILES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_no_branch_on_whether_conditions_exist(path: Path) -> None:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        code = line.split("#", 1)[0]
        assert not CONDITION_BRANCH.search(code), f"{path.name}:{number}: {line.strip()}"


def test_no_second_pipeline_module_names() -> None:
    stems = sorted(path.relative_to(REPOSITORY).as_posix() for path in (REPOSITORY / "admc").rglob("*.py")
                   if path.stem.startswith(("conditional_", "conditioned_")))
    assert stems == []


def test_an_unconditional_program_verifies_and_runs_with_zero_conditions(tmp_path: Path) -> None:
    path = tmp_path / "moons"
    assert main(["build", str(EXAMPLES / "two_moons.onnx"), "-o", str(path), "--target", "ideal",
                 "--steps", "2"]) == 0
    result = verify_bundle(Bundle(path), samples=16, seed=0)
    document = result.to_json()
    assert result.passed and document["passed"]
    assert document["per_class"] == [] and document["conditions"] == {}
    assert set(result.trajectories) == {"reference", "ideal"} and result.noise.shape == (16, 2)
    noise = np.random.default_rng(0).standard_normal((4, 2))
    np.testing.assert_array_equal(simulate(path, noise), simulate(path, noise, {}))
    with pytest.raises(AdmcError, match="unknown label"):
        simulate(path, noise, {"label": np.zeros(4, dtype=np.int64)})
    with pytest.raises(AdmcError, match="needs a bundle built with --guidance"):
        simulate(path, noise, guidance=1.0)
