"""The α pass's judge (``passes/alpha_candidates.judge``) runs each distinct candidate once.

Above the dense limit `min`, `global` and `blockwise` are often one table: running it three times tripled the
judge's loops at 3.3M weights. Equal candidates must get the same count as if each ran, and a single distinct
candidate must be chosen without running anything.
"""

from __future__ import annotations

import numpy as np
from block_programs import random_cycle_program

from admc.ir.program import tabulate_static_injection
from admc.passes import alpha_candidates
from admc.passes.alpha_candidates import GroupChoice, judge
from admc.passes.alpha_probe import ProbeRecorder, probe_iterations
from admc.passes.step_phases import build_schedule


def _probes():
    program = random_cycle_program((6, 6), 2, 1.4)
    schedule = build_schedule("implicit-euler", np.linspace(0.0, 1.0, 3))
    program.static_table = tabulate_static_injection(
        program, np.array([phase.time for phases in schedule.steps for phase in phases]))
    noise = np.random.default_rng(0).standard_normal((8, program.state_dimension))
    recorder = ProbeRecorder(program, np.zeros(program.size), tolerance=1e-10)
    recorder.run(schedule, noise)
    return program, recorder


def test_equal_candidates_run_once_and_get_the_count_each_would_get(monkeypatch) -> None:
    program, recorder = _probes()
    slow, fast = np.full(program.size, 0.9), np.full(program.size, 0.6)  # u = 1 − α
    choice = GroupChoice({"min": slow, "global": fast.copy(), "blockwise": fast.copy()}, {}, "min")
    rows_run = []

    def counting(executor, probe, candidates, *arguments):
        rows_run.append(candidates.shape[0])
        return probe_iterations(executor, probe, candidates, *arguments)

    monkeypatch.setattr(alpha_candidates, "probe_iterations", counting)
    judged = judge(recorder, recorder.probes, choice, 1e-8, "after_skip", False)
    assert set(rows_run) == {2}  # two distinct tables, not three
    assert judged.measured["global"] == judged.measured["blockwise"]
    # Each, judged alone, counts what it counted in the batch.
    for name, u in (("min", slow), ("global", fast)):
        alone = sum(probe_iterations(recorder, probe, np.atleast_2d(1.0 - u), 1e-8, 5_000)[0]
                    for probe in recorder.probes)
        assert judged.measured[name] == alone


def test_a_single_distinct_candidate_is_chosen_without_running(monkeypatch) -> None:
    program, recorder = _probes()
    u = np.full(program.size, 0.7)
    choice = GroupChoice({"min": u, "global": u.copy(), "blockwise": u.copy()}, {}, "min")

    def refuse(*arguments):
        raise AssertionError("the judge ran loops with nothing to choose between")

    monkeypatch.setattr(alpha_candidates, "probe_iterations", refuse)
    judged = judge(recorder, recorder.probes, choice, 1e-8, "after_skip", False)
    assert judged.chosen == "min" and judged.measured == {}
