"""Random block programs for the α-pass tests and benchmark (one generator, so the two judge the same networks).

A direct-layout cycle state ← hidden_K ← … ← hidden_1 ← state with Gaussian weights gain / sqrt(fan-in); the
state is held in open phases. ``driven`` adds biases (0.3 × standard normal) on the hidden groups and the x
injection into the state, as a compiled ADM network has; without it the program is the bare cycle.
"""

from __future__ import annotations

import numpy as np

from admc.ir.program import STEP, BiasPart, BlockProgram, InjectionPart, MatrixBlock, StateGroup


def random_cycle_program(hidden: tuple[int, ...], seed: int, gain: float, d: int = 2,
                         driven: bool = True) -> BlockProgram:
    rng = np.random.default_rng(seed)
    sizes, names = [d, *hidden], ["state"] + [f"hidden_{index + 1}" for index in range(len(hidden))]
    groups, offset = [], 0
    for name, size in zip(names, sizes, strict=True):
        groups.append(StateGroup(name, offset, size, "tanh", held=name == "state",
                                 role="state" if name == "state" else "hidden"))
        offset += size
    blocks = [MatrixBlock(names[index], names[index - 1],
                          gain * rng.standard_normal((sizes[index], sizes[index - 1])) / np.sqrt(sizes[index - 1]),
                          layer=index) for index in range(1, len(sizes))]
    blocks.append(MatrixBlock("state", names[-1], gain * rng.standard_normal((d, sizes[-1])) / np.sqrt(sizes[-1]),
                              STEP, len(sizes)))
    if not driven:
        return BlockProgram(d, groups, blocks, [], [], "state", len(sizes), "direct")
    biases = [BiasPart(name, 0.3 * rng.standard_normal(size))
              for name, size in zip(names[1:], sizes[1:], strict=True)]
    return BlockProgram(d, groups, blocks, biases, [InjectionPart("state", np.eye(d))], "state", len(sizes),
                        "direct")
