"""Independent checks the pass manager runs in verify mode (``admc build --verify-passes``).

Each returns ``(error, bound)`` for its pass: canonicalisation against the graph IR's own numerical
semantics; packing against one explicit Euler step computed from the canonical network; the AOC lowering
(scaling, quantisation) against the spine program, per-step NRMSE within the target's stated bound.
Conditional models have their own checks, with conditions drawn: ``admc.compiler.conditional_pass_checks``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from admc.ir.adm import AdmNetwork
from admc.ir.evaluate import evaluate_graph
from admc.ir.graph import Graph
from admc.ir.program import OPEN, BlockProgram, Phase, Schedule, tabulate_static_injection
from admc.runtime.execute import run_ideal
from admc.runtime.executor import IdealExecutor
from admc.verify.metrics import per_step_nrmse

EXACT_BOUND = 1e-9
SAMPLES = 16


def relative_error(estimate: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(estimate - expected)) / max(1.0, float(np.sqrt(np.mean(expected ** 2)))))


def canonical_check(graph: Graph):
    def check(network: AdmNetwork) -> tuple[float, float]:
        generator = np.random.default_rng(0)
        x = generator.standard_normal((SAMPLES, network.state_dimension))
        t = generator.uniform(0.0, 1.0, SAMPLES)
        time_shape = next(entry.shape for entry in graph.inputs if entry.name == graph.time_input)
        fed_time = t[:, None] if len(time_shape) == 2 else t
        expected = evaluate_graph(graph, {graph.state_input: x, graph.time_input: fed_time})[0]
        return relative_error(network.velocity(x, t), expected), EXACT_BOUND
    return check


def pack_check(network: AdmNetwork):
    def check(program: BlockProgram) -> tuple[float, float]:
        time, delta = 0.3, 0.1
        probe = replace(program, static_table=tabulate_static_injection(program, np.array([time])))
        x = np.random.default_rng(1).standard_normal((SAMPLES, network.state_dimension))
        step = [Phase(OPEN, delta, time, (("x", 1.0),), (("x", 1.0),))]
        result = IdealExecutor(probe).run(Schedule("explicit-euler", np.array([time, time + delta]), [step]), x)
        expected = x + delta * network.velocity(x, np.full(SAMPLES, time))
        return relative_error(result.trajectory[-1], expected), EXACT_BOUND
    return check


def lowering_check(spine: BlockProgram, spine_alpha: np.ndarray, schedule: Schedule):
    def check(compiled) -> tuple[float, float]:
        x = np.random.default_rng(2).standard_normal((SAMPLES, spine.state_dimension))
        expected = run_ideal(spine, schedule, spine_alpha, x).trajectory
        realised = run_ideal(compiled.realised_program, schedule, compiled.alpha, x).trajectory
        bound = float(compiled.report.get("verify_tolerance", EXACT_BOUND))
        if compiled.report.get("verify_criterion") == "per_step_nrmse":
            return float(np.max(per_step_nrmse(realised[1:], expected[1:]))), bound
        return relative_error(realised[-1], expected[-1]), bound
    return check
