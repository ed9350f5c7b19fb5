"""Tests of the twin's changes for large programs (issue 25): the thread split of an iteration, building only
the loop operator form that is used, and the block form built one row group at a time. Each compares the changed
path with the formula it replaced, on a tiny program or random layouts, in float64.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from models import AdmForm, example_inputs, seeded

import admc.targets.aoc.twin as twin_module
from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.targets.aoc.loop_operator import block_form, module_cost, module_form
from admc.targets.aoc.twin import AocTwin, all_off, nonidealities_of
from admc.targets.aoc.twin_threads import threads


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    path = tmp_path_factory.mktemp("twin-scaling") / "adm"
    build(seeded(AdmForm(hidden=(8, 8)), 3), path, steps=2, example_inputs=example_inputs())
    return Bundle(path)


def noise_of(bundle: Bundle, batch: int = 4) -> np.ndarray:
    dimension = int(bundle.manifest["source"]["state_dimension"])
    return np.random.default_rng(0).standard_normal((batch, dimension))


def test_threads_sets_the_count_inside_and_restores_it_after_an_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_element_wise_work_on_one_thread_gives_the_old_all_threads_run(bundle: Bundle,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    noise = noise_of(bundle)
    with threads(2):
        split = AocTwin(bundle, seed=5).run(noise)
        assert torch.get_num_threads() == 2  # the run gave the caller's count back
        monkeypatch.setattr(twin_module, "ELEMENTWISE_THREADS", 2)  # as before: everything on the caller's count
        before = AocTwin(bundle, seed=5).run(noise)
    assert np.abs(split.trajectory - before.trajectory).max() <= 1e-12
    assert split.iterations == before.iterations


@pytest.mark.parametrize("operator", ["auto", "blocks", "modules"])
def test_only_the_chosen_operator_form_is_built_and_it_is_the_old_choice(bundle: Bundle, operator: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    twin = AocTwin(bundle, operator=operator)
    built = []
    for name in ("block_form", "module_form"):
        original = getattr(twin_module, name)
        monkeypatch.setattr(twin_module, name, lambda *args, _f=original, _n=name: built.append(_n) or _f(*args))
    phase = twin.schedule.steps[0][0]
    chosen = twin.loop_operator(phase)
    # The old formula: both forms built, "auto" takes blocks when they cost no more.
    gain = twin.beta * twin._tensor(twin._phase_factors(phase))[twin.port_class]
    if twin.nonidealities.gain_error.enabled:
        gain = gain * twin.static_errors.gain_factor
    scaled = gain.unsqueeze(-1) * twin.optics
    blocks = block_form(scaled, chosen.constant, twin.input_channel, twin.output_channel, twin.group_slices,
                        twin.group_index)
    modules = module_form(scaled, chosen.constant, twin.input_channel, twin.output_channel)
    assert module_cost(scaled) == modules.cost
    old = blocks if operator == "blocks" or (operator == "auto" and blocks.cost <= modules.cost) else modules
    assert chosen.kind == old.kind
    assert len(built) == (1 if operator != "auto" or old.kind == "blocks" else 2)
    activated = torch.randn(3, twin.size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    start = torch.randn(3, twin.size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.abs(chosen.accumulate(activated, start.clone()) - old.accumulate(activated, start.clone())).max() \
        <= 1e-12


def test_twin_scaling_benchmark_reads_a_time_log(tmp_path: Path) -> None:
    import sys
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from twin_scaling import time_log

    log = tmp_path / "time.log"
    log.write_text("\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.5\n"
                   "\tMaximum resident set size (kbytes): 2048\n")
    assert time_log(log) == {"seconds": 3723.5, "peak_bytes": 2048 * 1024}


def old_block_form(scaled, constant, input_channel, output_channel, group_slices, group_index):
    """``loop_operator.block_form`` before it went one row group at a time (one sort of every entry)."""
    modules, outputs, inputs = scaled.shape
    size = len(group_index)
    rows = output_channel.unsqueeze(-1).expand(modules, outputs, inputs)
    columns = input_channel.unsqueeze(1).expand(modules, outputs, inputs)
    keep = (rows < size) & (columns < size) & (scaled != 0)
    keys, inverse = torch.unique(rows[keep] * size + columns[keep], return_inverse=True)
    values = torch.zeros(keys.numel(), dtype=scaled.dtype).index_add_(0, inverse, scaled[keep])
    row, column = keys // size, keys % size
    count = len(group_slices)
    pair = group_index[row] * count + group_index[column]
    blocks, leftover, cost = [], torch.zeros_like(values, dtype=torch.bool), 0.0
    for key, number in zip(*(t.tolist() for t in torch.unique(pair, return_counts=True)), strict=True):
        row_slice, column_slice = group_slices[key // count], group_slices[key % count]
        area = (row_slice.stop - row_slice.start) * (column_slice.stop - column_slice.start)
        selected = pair == key
        if area > 4.0 * number:
            leftover |= selected
            cost += 4.0 * number
            continue
        matrix = torch.zeros(row_slice.stop - row_slice.start, column_slice.stop - column_slice.start,
                             dtype=scaled.dtype)
        matrix[row[selected] - row_slice.start, column[selected] - column_slice.start] = values[selected]
        blocks.append((row_slice, column_slice, matrix.T.contiguous()))
        cost += area
    remainder = (row[leftover], column[leftover], values[leftover]) if bool(leftover.any()) else None
    return cost, blocks, remainder


def random_layout(seed: int) -> tuple:
    """Random optics on 12-port modules routed to 5 groups, with unused ports, repeated channels (a channel fed
    by several ports) and zeros: some group pairs dense, some sparse."""
    generator = np.random.default_rng(seed)
    sizes = generator.integers(3, 20, size=5)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    size = int(sizes.sum())
    modules, ports = 9, 12
    scaled = generator.standard_normal((modules, ports, ports)) * (generator.random((modules, ports, ports)) < 0.7)
    output_channel = generator.integers(0, size + 1, size=(modules, ports))  # size: unused
    input_channel = generator.integers(0, size + 1, size=(modules, ports))
    group_index = np.repeat(np.arange(5), sizes)
    slices = [slice(int(offset), int(offset + count)) for offset, count in zip(offsets, sizes, strict=True)]
    return (torch.as_tensor(scaled), torch.zeros(size, dtype=torch.float64), torch.as_tensor(input_channel),
            torch.as_tensor(output_channel), slices, torch.as_tensor(group_index))


@pytest.mark.parametrize("seed", range(6))
def test_block_form_by_row_group_equals_one_sort_of_every_entry(seed: int) -> None:
    arguments = random_layout(seed)
    cost, blocks, remainder = old_block_form(*arguments)
    new = block_form(*arguments)
    assert new.cost == cost
    assert [(rows, columns) for rows, columns, _ in new.blocks] == [(rows, columns) for rows, columns, _ in blocks]
    for (_, _, matrix), (_, _, expected) in zip(new.blocks, blocks, strict=True):
        assert torch.equal(matrix, expected)
    assert (new.remainder is None) == (remainder is None)
    if remainder is not None:
        for part, expected in zip(new.remainder, remainder, strict=True):
            assert torch.equal(part, expected)


def test_block_form_by_row_group_on_a_bundle_with_crosstalk_across_tiles(bundle: Bundle) -> None:
    settings = nonidealities_of(bundle)
    settings = replace(settings, pd_crosstalk=replace(settings.pd_crosstalk, enabled=True))
    twin = AocTwin(bundle, settings, operator="blocks")
    operator = twin.loop_operator(twin.schedule.steps[0][0])
    assert operator.remainder is not None  # crosstalk between tiles sharing a module: entries outside the blocks
    gain = twin.beta * twin._tensor(twin._phase_factors(twin.schedule.steps[0][0]))[twin.port_class]
    scaled = gain.unsqueeze(-1) * twin.optics
    cost, blocks, remainder = old_block_form(scaled, operator.constant, twin.input_channel, twin.output_channel,
                                             twin.group_slices, twin.group_index)
    assert operator.cost == cost and len(operator.blocks) == len(blocks)
    for part, expected in zip(operator.remainder, remainder, strict=True):
        assert torch.equal(part, expected)


def test_a_run_in_chunks_continues_one_random_stream(bundle: Bundle) -> None:
    noise = noise_of(bundle, 5)
    first = AocTwin(bundle, seed=3).run(noise[:2])
    chunked = AocTwin(bundle, seed=3, chunk=2, record_residuals=True).run(noise)
    assert chunked.trajectory.shape == (len(first.trajectory), 5, noise.shape[1])
    assert np.array_equal(chunked.trajectory[:, :2], first.trajectory)  # up to a chunk: the one-pass run
    restarted = AocTwin(bundle, seed=3).run(noise[2:4])
    assert not np.allclose(chunked.trajectory[:, 2:4], restarted.trajectory)  # chunk 2 draws on, not again
    repeats = AocTwin(bundle).repeats
    assert all(history.shape[1] == 5 * repeats for history in chunked.residual_history)


def test_a_noise_free_run_in_chunks_gives_the_samples_of_one_pass(bundle: Bundle) -> None:
    noise = noise_of(bundle, 5)
    size = AocTwin(bundle).size
    drive = 0.01 * np.random.default_rng(1).standard_normal((5, size))
    settings = all_off(nonidealities_of(bundle))
    steps = []
    whole = AocTwin(bundle, settings).run(noise, extra_drive=lambda phase: drive)
    chunked = AocTwin(bundle, settings, chunk=2).run(noise, lambda step, total: steps.append((step, total)),
                                                     extra_drive=lambda phase: drive)
    assert np.abs(chunked.trajectory - whole.trajectory).max() <= 1e-12
    assert len(chunked.iterations) == len(whole.iterations)
    count = len(whole.iterations)
    assert steps == [(number * count + step, 3 * count) for number in range(3) for step in range(1, count)]
