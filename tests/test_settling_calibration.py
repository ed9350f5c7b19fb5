"""The settling α and the state-scaling calibration run made as one run (``passes/settling_calibration.py``).

The peaks it hands the AOC backend must be the ones the backend would have measured itself (bit for bit: the
bundles do not move), the backend must not run the loops again, and a table whose loops do not settle must be
skipped for the next, more damped one.
"""

from __future__ import annotations

import numpy as np
from block_programs import random_cycle_program

from admc.core.errors import ConvergenceError
from admc.ir.program import tabulate_static_injection
from admc.passes import settling_calibration
from admc.passes.alpha_selection import AlphaCapabilities, settling_tables
from admc.passes.state_scaling import calibration_samples, measure_peaks
from admc.passes.step_phases import build_schedule
from admc.runtime.executor import IdealExecutor

CAPABILITIES = AlphaCapabilities(0.0, 0.99, False, 0.0, settle_tolerance=1e-10)


def _program(seed: int = 3, gain: float = 1.5, steps: int = 4):
    program = random_cycle_program((6, 6), seed, gain)
    schedule = build_schedule("implicit-euler", np.linspace(0.0, 1.0, steps + 1))
    times = np.array([phase.time for phases in schedule.steps for phase in phases])
    program.static_table = tabulate_static_injection(program, times)
    return program, schedule


def test_the_peaks_are_those_a_separate_calibration_run_measures() -> None:
    program, schedule = _program()
    table, peaks = settling_calibration.settle_and_calibrate(program, schedule, CAPABILITIES)
    assert peaks is not None and peaks.measured(table, calibration_samples(program))
    state_peak, drive_peak = measure_peaks(program, schedule, table, samples=calibration_samples(program))
    assert np.array_equal(peaks.state_peak, state_peak) and np.array_equal(peaks.drive_peak, drive_peak)
    assert not peaks.measured(table + 0.1, calibration_samples(program))  # another α: not this run
    assert not peaks.measured(table, calibration_samples(program) + 1)


def test_a_table_that_does_not_settle_is_skipped_for_the_next(monkeypatch) -> None:
    program, schedule = _program()
    good = settling_tables(program, schedule, CAPABILITIES)[0]
    diverging = np.full_like(good, -3.0)  # x ← −3x + 4F(x): the loop oscillates outwards
    noise = np.random.default_rng(0).standard_normal((4, program.state_dimension))
    try:
        IdealExecutor(program, diverging, tolerance=1e-6, max_iterations=2_000).run(schedule, noise)
        raise AssertionError("the diverging table settled: the test's premise is wrong")
    except ConvergenceError:
        pass
    monkeypatch.setattr(settling_calibration, "settling_tables", lambda *arguments: [diverging, good])
    table, peaks = settling_calibration.settle_and_calibrate(program, schedule, CAPABILITIES)
    assert np.array_equal(table, good) and peaks is not None and peaks.measured(good, calibration_samples(program))
    monkeypatch.setattr(settling_calibration, "settling_tables", lambda *arguments: [good, diverging])
    assert np.array_equal(settling_calibration.settle_and_calibrate(program, schedule, CAPABILITIES)[0], good)
    monkeypatch.setattr(settling_calibration, "settling_tables", lambda *arguments: [diverging])
    table, peaks = settling_calibration.settle_and_calibrate(program, schedule, CAPABILITIES)
    assert peaks is None and np.array_equal(table, diverging)  # none settles: the last, and no peaks


def test_an_aoc_build_runs_the_calibration_loops_once(monkeypatch, tmp_path) -> None:
    from pathlib import Path

    from admc.compiler.driver import build
    from admc.targets.aoc import backend

    calls = []
    original = backend.measure_peaks
    monkeypatch.setattr(backend, "measure_peaks", lambda *arguments, **options: calls.append(1)
                        or original(*arguments, **options))
    example = Path(__file__).resolve().parents[1] / "examples" / "two_moons.onnx"
    build(example, tmp_path / "bundle", target="aoc-48")
    assert calls == []  # the state scaling took the settling run's peaks


def test_the_calibration_loops_serve_the_alpha_pass_in_the_scaled_volts(monkeypatch, tmp_path) -> None:
    # The α pass takes the calibration run's closed loops (made on the spine program) instead of a probe run of
    # its own. Converted to the scaled program's volts they must be that program's fixed points: one loop
    # application there leaves each where it is (to the run's tolerance), and the α pass records no probes.
    from pathlib import Path

    from admc.compiler.driver import build
    from admc.passes import alpha_selection
    from admc.targets.aoc import backend

    seen = {}
    original = backend._calibration_probes

    def keep(compiled, scaled):
        seen["probes"], seen["scaled"] = original(compiled, scaled), scaled
        return seen["probes"]

    def refuse(*arguments, **options):
        raise AssertionError("the α pass ran its own probe run")

    monkeypatch.setattr(backend, "_calibration_probes", keep)
    monkeypatch.setattr(alpha_selection, "record_probes", refuse)
    example = Path(__file__).resolve().parents[1] / "examples" / "two_moons.onnx"
    build(example, tmp_path / "bundle", target="aoc-48")
    scaled, probes = seen["scaled"], seen["probes"]
    assert probes and any(group.voltage_scale != 1.0 for group in scaled.groups)  # the conversion is exercised
    executor = IdealExecutor(scaled, np.zeros(scaled.size))
    for probe in probes:
        compiled = executor._compiled(probe.compiled.phase)
        moved = executor._apply(compiled, probe.fixed_point, probe.drive) - probe.fixed_point
        assert np.max(np.abs(moved)) <= 1e-5 * max(1.0, float(np.max(np.abs(probe.fixed_point))))


def test_a_stalled_trial_is_given_up_early_and_a_settling_one_is_untouched() -> None:
    # α = −1 makes the loop x ← −x + 2F(x): on a weak program it oscillates around the fixed point with a
    # constant amplitude, never settling and never diverging.
    program, schedule = _program(gain=0.2)
    noise = np.random.default_rng(1).standard_normal((4, program.state_dimension))
    oscillating = np.full(program.size, -1.0)
    applied = []

    class Counting(IdealExecutor):
        def _apply(self, *arguments):
            applied.append(1)
            return super()._apply(*arguments)

    try:
        Counting(program, oscillating, tolerance=1e-6, max_iterations=5_000, stall_window=50).run(schedule, noise)
        raise AssertionError("the oscillating loop settled: the test's premise is wrong")
    except ConvergenceError as error:
        assert "no progress in 50 iterations" in str(error)
    assert len(applied) < 200  # given up after the window, not at the 5,000-iteration limit
    try:
        IdealExecutor(program, oscillating, tolerance=1e-6, max_iterations=2_000).run(schedule, noise)
        raise AssertionError("without a stall window the loop should run to its limit and fail")
    except ConvergenceError as error:
        assert "not settled after 2000" in str(error)
    good = np.full(program.size, 0.3)
    watched = IdealExecutor(program, good, tolerance=1e-10, stall_window=50).run(schedule, noise)
    plain = IdealExecutor(program, good, tolerance=1e-10).run(schedule, noise)
    assert np.array_equal(watched.trajectory, plain.trajectory) and watched.iterations == plain.iterations


def test_only_candidates_with_a_fallback_get_the_stall_window() -> None:
    from admc.runtime.executor import STALL_WINDOW, first_settled

    calls = []

    def run(candidate, stall_window):
        calls.append((candidate, stall_window))
        if candidate != "last":
            raise ConvergenceError("does not settle")
        return "ran"

    assert first_settled(iter(["first", "second", "last"]), run) == ("last", "ran")
    assert calls == [("first", STALL_WINDOW), ("second", STALL_WINDOW), ("last", None)]
    assert first_settled(["first"], lambda candidate, stall_window: stall_window) == ("first", None)
