"""Build-time loops of large programs multiply in float32 (``admc.runtime.executor.float32_products_for``).

The float32 path must reach the float64 path's fixed points to within float32 rounding, count the same
iterations (to within one), and give a build whose scales, α and loop budget are those of the float64 build;
only large programs at loose tolerances may take it, so simulate, verify and every small build stay float64.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from block_programs import random_cycle_program
from models import gemm_model

from admc.compiler.driver import BuildOptions, compile_source, load_source
from admc.ir.program import tabulate_static_injection
from admc.passes.step_phases import build_schedule
from admc.runtime import executor
from admc.runtime.executor import IdealExecutor, float32_products_for
from admc.targets.loader import load_target


def _program(steps: int = 4):
    program = random_cycle_program((40, 40), 5, 1.5)
    schedule = build_schedule("implicit-euler", np.linspace(0.0, 1.0, steps + 1))
    program.static_table = tabulate_static_injection(
        program, np.array([phase.time for phases in schedule.steps for phase in phases]))
    return program, schedule


def test_float32_products_settle_where_float64_does_with_the_same_counts() -> None:
    program, schedule = _program()
    noise = np.random.default_rng(3).standard_normal((16, program.state_dimension))
    alpha = np.full(program.size, 0.3)
    plain = IdealExecutor(program, alpha, tolerance=1e-6)
    single = IdealExecutor(program, alpha, tolerance=1e-6, float32_products=True)
    reference, result = plain.run(schedule, noise), single.run(schedule, noise)
    assert all(matrix.dtype == np.float32 for phase in single._cache.values() for _, _, matrix in phase.blocks)
    assert all(matrix.dtype == np.float64 for phase in plain._cache.values() for _, _, matrix in phase.blocks)
    # Both stop within 1e-6 of their own fixed points; float32 rounding moves those by far less.
    scale = np.max(np.abs(reference.trajectory))
    assert np.max(np.abs(result.trajectory - reference.trajectory)) <= 2e-5 * scale
    assert not np.array_equal(result.trajectory, reference.trajectory)  # the float32 path did run
    counts, float32_counts = np.array(reference.iterations), np.array(result.iterations)
    assert np.max(np.abs(counts - float32_counts)) <= 1


def test_only_large_programs_at_loose_tolerances_multiply_in_float32() -> None:
    def program_of(weights: int):
        return SimpleNamespace(blocks=[SimpleNamespace(matrix=np.empty((1, weights - 1))),
                                       SimpleNamespace(matrix=np.empty((1, 1)))])

    large, small = program_of(executor.FLOAT32_FROM_WEIGHTS), program_of(executor.FLOAT32_FROM_WEIGHTS - 1)
    loose, tight = executor.FLOAT32_LOOSEST_TOLERANCE, executor.FLOAT32_LOOSEST_TOLERANCE / 10
    assert float32_products_for(large, loose) and float32_products_for(large, 1e-4)
    assert not float32_products_for(large, tight)  # the ideal target's 1e-12 stays float64
    assert not float32_products_for(small, loose)
    assert IdealExecutor(_program()[0]).float32_products is False  # simulate and verify: float64


# ideal: its judge and acceptance settle to 1e-12, so they must stay float64 while its 1e-6 runs do not.
@pytest.mark.parametrize("target", ["aoc-48", "ideal"])
def test_a_build_whose_loops_run_float32_matches_the_float64_build(tmp_path: Path, monkeypatch,
                                                                   target: str) -> None:
    model = gemm_model(tmp_path / "model.onnx", "plain", hidden=8)
    options = BuildOptions(steps=4)
    reference = compile_source(load_source(model), load_target(target), options)
    monkeypatch.setattr(executor, "FLOAT32_FROM_WEIGHTS", 0)  # every build-time run at 1e-6 or looser
    single = compile_source(load_source(model), load_target(target), options)
    scales = np.array([group.voltage_scale for group in reference.program.groups])
    float32_scales = np.array([group.voltage_scale for group in single.program.groups])
    np.testing.assert_allclose(float32_scales, scales, rtol=1e-5)
    if reference.calibration_peaks is not None:
        peaks, float32_peaks = reference.calibration_peaks.state_peak, single.calibration_peaks.state_peak
        assert not np.array_equal(float32_peaks, peaks)  # the calibration run did multiply in float32
    np.testing.assert_allclose(single.alpha, reference.alpha, atol=1e-4)
    budget, float32_budget = reference.convergence["loop_budget"], single.convergence["loop_budget"]
    assert abs(float32_budget - budget) <= 0.05 * budget


def test_cycle_spectra_at_scale_in_float32_match_float64(monkeypatch) -> None:
    from admc.ir.program import CLOSED, Phase
    from admc.passes import alpha_cycle

    program = random_cycle_program((30, 30), 4, 1.2)
    phase = Phase(CLOSED, 0.5, 1.0, ())
    slopes = np.random.default_rng(2).uniform(0.2, 1.0, (3, program.size))
    reference = alpha_cycle.block_cycle(program, phase, slopes).eigenvalues
    monkeypatch.setattr(alpha_cycle, "FLOAT32_FROM_WEIGHTS", 0)
    single = alpha_cycle.block_cycle(program, phase, slopes).eigenvalues
    assert not np.array_equal(single, reference)  # the float32 products did run

    def ordered(values: np.ndarray) -> np.ndarray:
        return values[np.lexsort((values.imag, np.round(values.real, 4)))]

    for float32_values, float64_values in zip(single, reference, strict=True):
        scale = np.max(np.abs(float64_values))
        np.testing.assert_allclose(ordered(float32_values), ordered(float64_values), atol=1e-5 * scale)
