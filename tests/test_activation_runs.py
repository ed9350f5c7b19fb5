"""The executor applies σ run by run (adjacent groups with one activation and gain together): the same values,
bit for bit, as σ group by group, whatever the mix of activations, gains and linear groups."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from block_programs import random_cycle_program

from admc.ir.adm import activate, is_activation
from admc.runtime.executor import IdealExecutor, activation_runs


def _group_by_group(program, state: np.ndarray) -> np.ndarray:
    """σ(gain · state) per group, written independently of the executor."""
    activated = state.copy()
    for group in program.groups:
        channels = slice(group.offset, group.stop)
        if is_activation(group.activation):
            activated[:, channels] = activate(group.activation, group.sigma_gain * state[:, channels])
        else:
            activated[:, channels] = group.sigma_gain * state[:, channels]
    return activated


MIXES = {
    "one activation, one gain": lambda groups: groups,
    "gains differ": lambda groups: [replace(group, sigma_gain=1.0 + 0.5 * index) for index, group in enumerate(groups)],
    "linear middle": lambda groups: [replace(group, activation="identity") if index == 1 else group
                                     for index, group in enumerate(groups)],
    "relu and tanh": lambda groups: [replace(group, activation="relu" if index % 2 else "tanh")
                                     for index, group in enumerate(groups)],
    "all linear, gain 2": lambda groups: [replace(group, activation="identity", sigma_gain=2.0) for group in groups],
}


@pytest.mark.parametrize("mix", MIXES)
def test_runs_give_group_by_group_values(mix):
    base = random_cycle_program((3, 4, 5), 0, 1.5)
    program = replace(base, groups=MIXES[mix](base.groups))
    state = 3.0 * np.random.default_rng(1).standard_normal((7, program.size))
    activated = IdealExecutor(program)._activated(state)
    assert np.array_equal(activated, _group_by_group(program, state))
    assert activated is not state and not np.shares_memory(activated, state)  # callers may write into it


def test_runs_merge_only_adjacent_equal_groups():
    base = random_cycle_program((3, 4, 5), 0, 1.5)
    assert [(run.start, run.stop) for run, _, _ in activation_runs(base)] == [(0, base.size)]
    gains = replace(base, groups=MIXES["gains differ"](base.groups))
    assert len(activation_runs(gains)) == len(base.groups)
    middle = replace(base, groups=MIXES["linear middle"](base.groups))
    runs = activation_runs(middle)
    assert [activation for _, activation, _ in runs] == ["tanh", None, "tanh"]
    assert sum(run.stop - run.start for run, _, _ in runs) == base.size
