"""Tests of the twin's changes for large programs (issue 25): the thread split of an iteration and building
only the loop operator form that is used. Each compares the changed path with the formula it replaced on a tiny
program, in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from models import AdmForm, example_inputs, seeded

import admc.targets.aoc.twin as twin_module
from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.targets.aoc.loop_operator import block_form, module_cost, module_form
from admc.targets.aoc.twin import AocTwin
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
