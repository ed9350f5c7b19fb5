"""One cell of benchmarks/alpha_channelwise.py seen from inside the α pass: per group of phases, every candidate's
spectral radius, the judge's probe iterations and choice, and each candidate's held-out iterations per phase.

    python benchmarks/alpha_cell_candidates.py adm-1x48 ideal 2 [--cone-programs 144]

Held out: 8 fresh sets of 32 samples (seed 100, as the table), mean per phase, each candidate used in its own
phase with `auto`'s α elsewhere (with implicit Euler a phase's count does not depend on the other phases' α: its
loop starts at the previous step's fixed point). ``noise gain``: the mean of 1 / (1 − α²) (aoc-48's read-noise
model, which the judge multiplies iterations by there). ``--cone-programs``: the pass's budget
(``TOTAL_CONE_PROGRAMS``) for this run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alpha_benchmark import held_out_sets  # noqa: E402
from alpha_channelwise import compiled_program, iterations_per_phase  # noqa: E402

import admc.passes.alpha_selection as selection_module  # noqa: E402
from admc.passes.alpha_problem import noise_gain  # noqa: E402
from admc.passes.alpha_selection import closed_phases  # noqa: E402


def per_phase(program, schedule, alpha: np.ndarray, sets: np.ndarray) -> np.ndarray | None:
    """Mean iterations per closed phase over the held-out sets (None: a loop does not settle)."""
    counts = iterations_per_phase(program, schedule, alpha, sets)
    return None if counts is None else np.mean(counts, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network")
    parser.add_argument("target")
    parser.add_argument("steps", type=int)
    parser.add_argument("--cone-programs", type=int, default=selection_module.TOTAL_CONE_PROGRAMS)
    arguments = parser.parse_args()
    selection_module.TOTAL_CONE_PROGRAMS = arguments.cone_programs
    judged = []
    original = selection_module.judge

    def recording_judge(*items):
        choice = original(*items)
        judged.append(choice)
        return choice

    selection_module.judge = recording_judge
    program, schedule, auto, selection = compiled_program(arguments.network, arguments.target, arguments.steps, "auto")
    sets = held_out_sets(32)
    closed = closed_phases(schedule)
    print(json.dumps({"auto_held_out_per_phase": np.round(per_phase(program, schedule, auto, sets), 3).tolist(),
                      "chosen": selection.candidates.get("chosen"), "notes": selection.notes}))
    per_phase_groups = auto.ndim == 2
    for index, choice in enumerate(judged):
        rows = [closed[index][2]] if per_phase_groups else None
        for name, u in choice.options.items():
            alpha = auto.copy()
            if per_phase_groups:
                alpha[rows[0]] = 1.0 - u
            else:
                alpha = 1.0 - u
            counts = per_phase(program, schedule, alpha, sets)
            held = None if counts is None else (float(counts[index]) if per_phase_groups else float(np.sum(counts)))
            print(json.dumps({"group": index, "candidate": name, "chosen": name == choice.chosen,
                              "radius": round(float(choice.radii[name]), 4),
                              "probe_iterations": choice.measured.get(name),
                              "held_out": held,
                              "noise_gain": round(float(np.mean(noise_gain(np.clip(u, 1e-12, 1.0), "after_skip"))),
                                                  3),
                              "distinct_alpha": np.unique(np.round(1.0 - u, 2)).size}))


if __name__ == "__main__":
    main()
