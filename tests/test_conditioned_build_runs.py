"""A conditional program's build-time runs carry conditions, as the machine's loops always do: the α pass's
acceptance (screen and full batch), its probe run and the loop budget each draw their samples' conditions with
their own seed; an unconditional program draws none. Without them, eight Gaussians on aoc-48 at T = 4 had a
loop budget of 676 iterations from a 338-iteration unconditioned loop that no conditioned sample needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from block_programs import random_cycle_program

import admc.compiler.calibration_drive as calibration_drive
from admc.compiler.driver import build
from admc.ir.program import tabulate_static_injection
from admc.passes.alpha_acceptance import ACCEPTANCE_SAMPLES, ACCEPTANCE_SEED, settle_on_fresh_samples
from admc.passes.loop_budget import BUDGET_SEED
from admc.passes.step_phases import build_schedule

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _program():
    program = random_cycle_program((4, 4), 3, 1.0)
    schedule = build_schedule("implicit-euler", np.linspace(0.0, 1.0, 3))
    program.static_table = tabulate_static_injection(
        program, np.array([phase.time for phases in schedule.steps for phase in phases]))
    return program, schedule


def test_acceptance_runs_the_drawn_conditions_on_the_screen_and_the_whole_batch():
    program, schedule = _program()
    alpha = np.full(program.size, 0.3)
    assert settle_on_fresh_samples(program, schedule, alpha, 1e-10).settled
    calls = []

    def conditions(drawn_program, samples, seed):
        calls.append((drawn_program is program, samples, seed))
        rows = np.arange(samples, dtype=float)[:, None] * np.ones(program.size)

        return lambda phase: rows  # a per-sample drive: sample k pushed by k on every channel

    # The screen runs the first 16 samples with the first 16 rows of the drawn drive (a whole-batch drive on
    # them would not broadcast), then the whole batch with all of them.
    acceptance = settle_on_fresh_samples(program, schedule, alpha, 1e-10, conditions)
    samples = acceptance.samples
    assert calls == [(True, samples, ACCEPTANCE_SEED)]
    assert acceptance.settled and samples > ACCEPTANCE_SAMPLES[0]

    def diverging(drawn_program, samples, seed):
        return lambda phase: np.full((samples, program.size), 1e12)

    refused = settle_on_fresh_samples(program, schedule, alpha, 1e-10, diverging)
    assert not refused.settled and refused.samples == ACCEPTANCE_SAMPLES[0] and "diverged" in refused.failure


def test_a_conditional_build_draws_conditions_for_acceptance_probes_and_loop_budget(tmp_path, monkeypatch):
    seeds = []
    original = calibration_drive.interface_drive

    def recording(interface, program, samples=calibration_drive.CALIBRATION_SAMPLES,
                  seed=calibration_drive.CALIBRATION_SEED):
        seeds.append(seed)
        return original(interface, program, samples, seed)

    monkeypatch.setattr(calibration_drive, "interface_drive", recording)
    path = build(EXAMPLES / "conditional" / "eight_gaussians.onnx", tmp_path / "ideal", target="ideal", steps=4)
    assert {ACCEPTANCE_SEED, BUDGET_SEED} <= set(seeds)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["convergence"]["alpha"]["acceptance"]["settled"]
    seeds.clear()
    build(EXAMPLES / "two_moons.onnx", tmp_path / "plain", target="ideal", steps=4)
    assert seeds == []  # an unconditional program draws nothing
