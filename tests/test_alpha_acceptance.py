"""Acceptance of issue 8: the shipped two-moons example builds and verifies at few implicit steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.passes.loop_budget import bundle_loop_budget
from admc.verify.chain import verify_bundle

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "two_moons.onnx"


@pytest.mark.parametrize("steps", [2, 3, 4, 8])
@pytest.mark.parametrize("solver", ["implicit-euler", "crank-nicolson"])
@pytest.mark.parametrize("target", ["ideal", "aoc-48"])
def test_two_moons_builds_and_verifies(tmp_path: Path, target: str, solver: str, steps: int) -> None:
    path = build(EXAMPLE, tmp_path / "bundle", target=target, solver=solver, steps=steps)
    bundle = Bundle(path)
    budget = bundle_loop_budget(bundle.manifest)
    assert budget is not None and budget > 0
    report = verify_bundle(bundle, samples=64, seed=0, twin=target != "ideal",
                           twin_options={"loop_iterations": budget})
    failed = [link.name for link in report.links if not link.passed]
    assert report.passed, failed
