"""The measured judge of the α pass: probe loops count as the executor does, and auto is judged by them."""

from __future__ import annotations

import numpy as np
import pytest
from block_programs import random_cycle_program

from admc.core.schedule import time_grid
from admc.ir.program import (
    tabulate_static_injection,
)
from admc.passes import alpha_selection
from admc.passes.alpha_probe import PhaseProbe, ProbeRecorder, probe_iterations
from admc.passes.alpha_selection import AlphaCapabilities, select_alpha
from admc.passes.step_phases import build_schedule
from admc.runtime.executor import IdealExecutor


def program_and_schedule(hidden, seed, gain, steps):
    program = random_cycle_program(hidden, seed, gain)
    schedule = build_schedule("implicit-euler", time_grid(steps=steps))
    program.static_table = tabulate_static_injection(
        program, np.array([phase.time for phases in schedule.steps for phase in phases]))
    return program, schedule


def test_probe_loops_count_as_the_executor_does() -> None:
    program, schedule = program_and_schedule((8, 8), 0, 1.5, 3)
    rng = np.random.default_rng(5)
    alpha = rng.uniform(0.0, 0.6, (3, program.size))
    noise = rng.standard_normal((6, 2))
    recorder = ProbeRecorder(program, alpha, tolerance=1e-10)
    result = recorder.run(schedule, noise)
    assert len(recorder.probes) == 3
    others = rng.uniform(0.0, 0.6, (3, program.size))
    for row, probe in enumerate(recorder.probes):
        # One candidate: the count the executor itself needed from this start.
        counts = probe_iterations(recorder, probe, alpha[row][None], 1e-10, 10_000)
        assert counts[0] == result.iterations[row][0]
        # Batched with others, each count is the count it gets alone, and a fresh executor agrees.
        table = np.vstack([alpha[row], others])
        batched = probe_iterations(recorder, probe, table, 1e-10, 10_000, patience=1e9)
        for index, candidate in enumerate(table):
            alone = probe_iterations(recorder, probe, candidate[None], 1e-10, 10_000)[0]
            assert batched[index] == alone
    # The fixed point recorded is where the executor settled.
    assert np.allclose(recorder.probes[-1].fixed_point[:, :2], result.trajectory[-1], atol=1e-8)


def test_probe_loops_mark_diverging_candidates() -> None:
    program, schedule = program_and_schedule((8, 8), 0, 1.5, 3)
    recorder = ProbeRecorder(program, np.full(program.size, 0.2), tolerance=1e-10)
    recorder.run(schedule, np.random.default_rng(0).standard_normal((4, 2)))
    probe = recorder.probes[0]
    # α = −3 over-relaxes by 4×: the loop leaves every physical range; it must not hide the other's count.
    table = np.vstack([np.full(program.size, 0.2), np.full(program.size, -3.0)])
    counts = probe_iterations(recorder, probe, table, 1e-10, 10_000, patience=1e9)
    assert counts[0] == probe_iterations(recorder, probe, table[:1], 1e-10, 10_000)[0]
    assert not np.isfinite(counts[1])
    # A candidate far slower than the fastest stops being counted (patience), the fastest keeps its count.
    slow = np.vstack([np.full(program.size, 0.2), np.full(program.size, 0.95)])
    cut = probe_iterations(recorder, probe, slow, 1e-10, 10_000, patience=1.0)
    assert cut[0] == counts[0] and not np.isfinite(cut[1])
    # Fewer probes never need more iterations (the count is the slowest probe's).
    single = PhaseProbe(probe.compiled, probe.start[:1], probe.drive[:1], probe.fixed_point[:1])
    assert probe_iterations(recorder, single, table[:1], 1e-10, 10_000)[0] <= counts[0]


def _spectral_only(monkeypatch, program, schedule, capabilities):
    monkeypatch.setattr(alpha_selection, "Judge", lambda *arguments, **options: None)
    try:
        return select_alpha(program, schedule, capabilities, "auto", force=True)
    finally:
        monkeypatch.undo()


def _total(program, schedule, alpha, noise) -> int:
    result = IdealExecutor(program, alpha, tolerance=1e-10, max_iterations=50_000).run(schedule, noise)
    return sum(sum(step) for step in result.iterations)


@pytest.mark.parametrize(("hidden", "seed", "gain", "steps"), [((10, 10, 10, 10), 0, 1.6, 2),
                                                               ((10, 10, 10, 10), 1, 1.6, 4)])
def test_auto_is_measured_no_worse_than_min_global_or_the_spectral_choice(monkeypatch, hidden, seed, gain,
                                                                          steps) -> None:
    program, schedule = program_and_schedule(hidden, seed, gain, steps)
    capabilities = AlphaCapabilities(0.0, 0.99, True, 0.0, settle_tolerance=1e-10)
    auto = select_alpha(program, schedule, capabilities, "auto", force=True)
    assert "probe_iterations" in auto.candidates
    # Hardware limits and the fixed point: α within the target's range, and the same trajectory as min.
    assert np.all(auto.alpha >= 0.0) and np.all(auto.alpha <= 0.99)
    # Held-out samples (the judge's probes are seed 7), many of them: a loop's count is its slowest sample's, and
    # the slowest of 32 is too noisy a statistic to rank α by (on this network min's 32-sample count is 416 or
    # 773 depending on the seed).
    noise = np.random.default_rng(123).standard_normal((256, 2))
    minimum = select_alpha(program, schedule, capabilities, "min", force=True)
    reference = IdealExecutor(program, minimum.alpha, tolerance=1e-12).run(schedule, noise).trajectory
    assert np.allclose(IdealExecutor(program, auto.alpha, tolerance=1e-12).run(schedule, noise).trajectory,
                       reference, atol=1e-9)
    spectral = _spectral_only(monkeypatch, program, schedule, capabilities)
    global_alpha = select_alpha(program, schedule, capabilities, "global", force=True)
    totals = {name: _total(program, schedule, selection.alpha, noise)
              for name, selection in (("auto", auto), ("min", minimum), ("global", global_alpha),
                                      ("spectral", spectral))}
    # The probes' resolution allows one iteration per phase.
    slack = len(schedule.steps)
    assert totals["auto"] <= min(totals["min"], totals["global"], totals["spectral"]) + slack, totals


def recorded_probe(samples: int, seed: int):
    """A small two-step program's probes recorded at α = 0.3 from ``samples`` seeded starts: (program,
    recorder, the second phase's probe, the generator, to draw more from)."""
    program, schedule = program_and_schedule((8, 8), 3, 1.5, 2)
    rng = np.random.default_rng(seed)
    recorder = ProbeRecorder(program, np.full((2, program.size), 0.3), tolerance=1e-10)
    recorder.run(schedule, rng.standard_normal((samples, 2)))
    return program, recorder, recorder.probes[1], rng


def test_per_sample_counts_give_every_subset_its_own_loop_count() -> None:
    program, recorder, probe, rng = recorded_probe(samples=12, seed=9)
    table = np.vstack([np.full(program.size, 0.3), rng.uniform(0.0, 0.6, program.size)])
    per_sample = probe_iterations(recorder, probe, table, 1e-10, 10_000, patience=1e9, per_sample=True)
    assert per_sample.shape == (2, 12)
    # The slowest probe's count is the batch's count; any subset's slowest is the count of a loop over it alone.
    assert np.array_equal(per_sample.max(axis=1), probe_iterations(recorder, probe, table, 1e-10, 10_000,
                                                                   patience=1e9))
    for subset in (slice(0, 1), slice(3, 7), slice(5, 12)):
        alone = PhaseProbe(probe.compiled, probe.start[subset], probe.drive[subset], probe.fixed_point[subset])
        assert np.array_equal(per_sample[:, subset].max(axis=1),
                              probe_iterations(recorder, alone, table, 1e-10, 10_000, patience=1e9))


def test_expected_slowest_is_the_mean_of_group_maxima() -> None:
    from admc.passes.alpha_probe import expected_slowest

    counts = np.arange(1.0, 13.0)[None, :].repeat(2, axis=0)
    counts[1, 2] = np.inf
    # Groups of 4: maxima 4, 8, 12 (mean 8); a diverged probe makes its candidate inf; one group: the maximum.
    assert expected_slowest(counts, 4)[0] == 8.0 and not np.isfinite(expected_slowest(counts, 4)[1])
    assert expected_slowest(counts[:, :7], 4)[0] == 7.0


def test_alpha_pass_runs_blas_single_threaded_and_restores_it(monkeypatch) -> None:
    from threadpoolctl import threadpool_info

    blas = [entry for entry in threadpool_info() if entry["user_api"] == "blas"]
    if not blas:
        pytest.skip("no BLAS library loaded")
    before = [entry["num_threads"] for entry in blas]
    seen = []
    original = alpha_selection._select_alpha

    def recording(*arguments):
        seen.extend(entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas")
        return original(*arguments)

    monkeypatch.setattr(alpha_selection, "_select_alpha", recording)
    program, schedule = program_and_schedule((8, 8), 0, 1.5, 2)
    select_alpha(program, schedule, AlphaCapabilities(0.0, 0.99, True, 0.0), "global", force=True)
    assert seen and set(seen) == {alpha_selection.BLAS_THREADS}
    assert [entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas"] == before


def test_refinement_offers_finer_single_alpha_and_blend_weights_within_bounds() -> None:
    from admc.passes.alpha_judge import Judge

    judge = Judge(None, {}, 1e-10)
    lower, upper = np.full(4, 0.2), np.full(4, 1.0)
    options = {"min": upper.copy(), "global": np.full(4, 0.5), "blockwise": np.array([0.3, 0.9, 0.6, 0.6])}
    candidates = judge.candidates(options, "blockwise", lower, upper)
    finer = judge.neighbours("α=0.55", list(candidates.values()))
    assert sorted(finer) == sorted(f"α={value:g}" for value in (0.51, 0.52, 0.53, 0.54, 0.56, 0.57, 0.58, 0.59))
    assert np.allclose(finer["α=0.57"], 0.43)
    # Near the bound the finer α are clipped (u ≥ 0.2 is α ≤ 0.8) and duplicates of known candidates dropped.
    assert all(np.all(u >= lower) for u in judge.neighbours("α=0.8", list(candidates.values())).values())
    assert "α=0.81" not in judge.neighbours("α=0.8", list(candidates.values()))
    blends = judge.neighbours("blockwise~min 0.75", list(candidates.values()))
    assert sorted(blends) == ["blockwise~min 0.625", "blockwise~min 0.6875", "blockwise~min 0.8125",
                              "blockwise~min 0.875"]
    weight = 0.875
    assert np.allclose(blends["blockwise~min 0.875"], upper ** (1 - weight) * options["blockwise"] ** weight)


def test_group_patience_keeps_the_best_statistic_and_exact_counts() -> None:
    from admc.passes.alpha_probe import expected_slowest

    program, recorder, probe, rng = recorded_probe(samples=24, seed=4)
    table = np.vstack([np.full(program.size, value) for value in (0.0, 0.2, 0.4, 0.6, 0.8)])
    full = probe_iterations(recorder, probe, table, 1e-10, 10_000, patience=1e9, per_sample=True)
    pruned = probe_iterations(recorder, probe, table, 1e-10, 10_000, patience=1.05, per_sample=True, group=8)
    statistic, kept = expected_slowest(full, 8), expected_slowest(pruned, 8)
    best = int(np.argmin(statistic))
    assert kept[best] == statistic[best]
    # Survivors are counted exactly; the others were behind the best by more than the patience allows.
    survivors = np.isfinite(kept)
    assert np.array_equal(pruned[survivors], full[survivors])
    assert np.all(statistic[~survivors] > 1.05 * statistic[best])
    assert not np.all(survivors)


def test_group_moves_set_one_group_to_a_grid_alpha_within_bounds() -> None:
    from admc.passes.alpha_judge import GRID, Judge

    groups = [slice(0, 2), slice(2, 5), slice(5, 6)]
    judge = Judge(None, {}, 1e-10, groups)
    lower, upper = np.full(6, 0.3), np.ones(6)  # α ≤ 0.7 on every channel
    u = np.array([0.9, 0.9, 0.5, 0.6, 0.7, 1.0])
    judge.candidates({"min": upper, "global": np.full(6, 0.5)}, "global", lower, upper)
    moves = judge.group_moves("x", u, [u])
    for name, moved in moves.items():
        changed = [index for index, part in enumerate(groups) if not np.array_equal(moved[part], u[part])]
        assert len(changed) == 1, name
        part = groups[changed[0]]
        # The moved group holds one α from the grid, clipped into the range; the other groups are untouched.
        value = float(name.rsplit("α=", 1)[1])
        assert value in GRID and np.allclose(moved[part], np.clip(1.0 - value, 0.3, 1.0))
        assert np.all(moved >= lower) and np.all(moved <= upper)
    # No duplicates, and nothing equal to u itself: grid values above 0.7 clip to the same vector.
    vectors = list(moves.values())
    assert all(not np.array_equal(a, b) for i, a in enumerate(vectors) for b in vectors[i + 1:])
    assert len(moves) == sum(len({float(np.clip(1.0 - value, 0.3, 1.0)) for value in GRID}
                                 - ({float(u[part][0])} if np.all(u[part] == u[part][0]) else set()))
                             for part in groups)
    # One group: nothing to search.
    assert Judge(None, {}, 1e-10, [slice(0, 6)]).group_moves("x", u, [u]) == {}


def test_group_coordinate_search_finds_a_groupwise_alpha_that_holds_on_fresh_samples(monkeypatch) -> None:
    from admc.passes import alpha_judge

    # One hidden layer of 12, T = 2: the best measured α damps the state group alone in the second step, which
    # no single α and no blend expresses.
    program, schedule = program_and_schedule((12,), 1, 1.8, 2)
    capabilities = AlphaCapabilities(0.0, 0.99, True, 0.0, settle_tolerance=1e-10)
    searched = select_alpha(program, schedule, capabilities, "auto", force=True)
    monkeypatch.setattr(alpha_judge, "COORDINATE_ROUNDS", 0)
    plain = select_alpha(program, schedule, capabilities, "auto", force=True)
    monkeypatch.undo()
    # On the probes: strictly fewer iterations, by a group move.
    assert searched.candidates["probe_iterations"]["chosen"] < plain.candidates["probe_iterations"]["chosen"]
    assert any("group" in name for name in searched.candidates["chosen"])
    groups = [slice(group.offset, group.stop) for group in program.groups]
    assert any(len({float(np.unique(row[part])[0]) for part in groups}) > 1 and
               all(np.unique(row[part]).size == 1 for part in groups) for row in searched.alpha)
    # On samples no choice has seen (the judge probes with seed 7): fewer iterations, and the same trajectory.
    noise = np.random.default_rng(123).standard_normal((256, 2))
    assert _total(program, schedule, searched.alpha, noise) < _total(program, schedule, plain.alpha, noise)
    assert np.allclose(IdealExecutor(program, searched.alpha, tolerance=1e-12).run(schedule, noise).trajectory,
                       IdealExecutor(program, plain.alpha, tolerance=1e-12).run(schedule, noise).trajectory,
                       atol=1e-9)


def test_on_a_noisy_target_the_judge_ranks_by_iterations_times_noise_gain(monkeypatch) -> None:
    """Where read noise is declared, a larger α that settles in fewer iterations wins only if it is the faster
    way to a given readout accuracy (iterations × after-skip noise gain 1/(1 − α²)); without noise, the fewest
    iterations win. The probe counts are stubbed so the rule is checked alone."""
    from admc.passes.alpha_judge import Judge

    size = 4
    counts = {0.0: 300.0, 0.5: 240.0, 0.8: 200.0}  # α → probe iterations (one phase)

    def stub_totals(self, rows, table, samples, patience):
        return np.array([counts.get(round(float(np.mean(1.0 - u)), 6), np.inf) for u in table])

    monkeypatch.setattr(Judge, "_totals", stub_totals)
    monkeypatch.setattr(Judge, "_work", lambda self, rows: 1)
    probe = PhaseProbe(None, np.zeros((64, size)), np.zeros((64, size)), np.zeros((64, size)))
    lower, upper = np.zeros(size), np.ones(size)

    def choose(noisy: bool) -> str:
        judge = Judge(None, {0: probe}, 1e-10)
        options = {"min": upper.copy(), "global": np.full(size, 0.5), "blockwise": np.full(size, 0.9)}
        return judge.choose([0], judge.candidates(options, "global", lower, upper), "global", "after_skip", noisy)

    # Noise gains 1, 4/3, 25/9: products 300, 320, 556. Quiet target: α = 0.8 (200 iterations) wins.
    assert choose(noisy=False) == "α=0.8"
    assert choose(noisy=True) == "min"
    counts[0.5] = 200.0  # now 0.5 is the faster way to the same accuracy: 267 < 300
    assert choose(noisy=True) == "global"
