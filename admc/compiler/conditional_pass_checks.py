"""The pass checks of ``admc build --verify-passes`` for conditional models (condition inputs, guidance).

Requires: the source graph, its signature with condition inputs and the distribution verify draws conditions
from (a condition without one is drawn standard normal here, as the state-scaling calibration does).
Guarantees: each check draws seeded x, t and conditions and returns ``(error, bound)`` for its pass, against
an independent computation:
- canonicalisation: the canonical network's f(x, t, c) against the graph IR's own evaluation of the source;
- guidance: the guided network against (1 + W)·source(x, t, c) − W·source(x, t, ∅), the source evaluated twice;
- packing: one explicit Euler step of the packed program, driven by the conditioning interface built from it,
  against x + Δt·f(x, t, c) of the network;
- lowering: the lowered program against the spine, both driven by the interface (in each program's units),
  within the target's stated bound.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from admc.compiler.pass_checks import EXACT_BOUND, SAMPLES, relative_error
from admc.frontends.signature import Signature
from admc.ir.adm import AdmNetwork
from admc.ir.evaluate import evaluate_graph
from admc.ir.graph import Graph
from admc.ir.program import OPEN, BlockProgram, Phase, Schedule, tabulate_static_injection
from admc.runtime.condition_drive import sample_conditions
from admc.runtime.execute import run_ideal
from admc.runtime.executor import IdealExecutor
from admc.verify.metrics import per_step_nrmse

CONDITION_SEED = 11


class ConditionalProbe:
    """Seeded x, t and conditions for the checks, and the source graph evaluated on them."""

    def __init__(self, graph: Graph, signature: Signature, distribution: dict[str, dict],
                 null_conditions: dict[str, np.ndarray] | None = None) -> None:
        self.graph, self.signature = graph, signature
        self.null_conditions = null_conditions or {}
        generator = np.random.default_rng(CONDITION_SEED)
        self.x = generator.standard_normal((SAMPLES, self._state_dimension()))
        self.t = generator.uniform(0.0, 1.0, SAMPLES)
        drawn = {condition.name: distribution.get(condition.name, {"kind": "normal"})
                 for condition in signature.conditions}
        self.conditions = sample_conditions(signature.conditions, drawn, SAMPLES, CONDITION_SEED + 1)

    def _state_dimension(self) -> int:
        shape = next(entry.shape for entry in self.graph.inputs if entry.name == self.graph.state_input)
        return int(shape[-1])

    def null(self) -> dict[str, np.ndarray]:
        """The conditions with the null values of guidance in place of the named ones."""
        replaced = dict(self.conditions)
        for name, value in self.null_conditions.items():
            kind = next(condition.kind for condition in self.signature.conditions if condition.name == name)
            dtype = np.int64 if kind == "index" else np.float64
            replaced[name] = np.broadcast_to(np.asarray(value, dtype=dtype), self.conditions[name].shape).copy()
        return replaced

    def source(self, conditions: dict[str, np.ndarray]) -> np.ndarray:
        """The source model's velocity by the graph IR's own semantics (not the canonical network)."""
        time_shape = next(entry.shape for entry in self.graph.inputs if entry.name == self.graph.time_input)
        fed_time = self.t[:, None] if len(time_shape) == 2 else self.t
        feeds = {self.graph.state_input: self.x, self.graph.time_input: fed_time, **conditions}
        return evaluate_graph(self.graph, feeds)[0]


def canonical_check(probe: ConditionalProbe):
    def check(network: AdmNetwork) -> tuple[float, float]:
        expected = probe.source(probe.conditions)
        return relative_error(network.velocity(probe.x, probe.t, probe.conditions), expected), EXACT_BOUND
    return check


def guidance_check(probe: ConditionalProbe, guidance: float | None):
    def check(network: AdmNetwork) -> tuple[float, float]:
        expected = probe.source(probe.conditions)
        if guidance is not None:
            expected = (1.0 + guidance) * expected - guidance * probe.source(probe.null())
        return relative_error(network.velocity(probe.x, probe.t, probe.conditions), expected), EXACT_BOUND
    return check


def pack_check(probe: ConditionalProbe, network: AdmNetwork, guidance: float | None):
    from admc.compiler.conditional_build import build_interface

    def check(program: BlockProgram) -> tuple[float, float]:
        time, delta = 0.3, 0.1
        probed = replace(program, static_table=tabulate_static_injection(program, np.array([time])))
        interface = build_interface(network, probed, probe.signature, guidance, {})
        drive = interface.drive_function(probed, probe.conditions)
        step = [Phase(OPEN, delta, time, (("x", 1.0),), (("x", 1.0),))]
        result = IdealExecutor(probed).run(Schedule("explicit-euler", np.array([time, time + delta]), [step]),
                                           probe.x, drive)
        expected = probe.x + delta * network.velocity(probe.x, np.full(SAMPLES, time), probe.conditions)
        return relative_error(result.trajectory[-1], expected), EXACT_BOUND
    return check


def lowering_check(probe: ConditionalProbe, spine: BlockProgram, spine_alpha: np.ndarray, schedule: Schedule,
                   interface):
    def check(compiled) -> tuple[float, float]:
        spine_drive = interface.drive_function(spine, probe.conditions)
        expected = run_ideal(spine, schedule, spine_alpha, probe.x, spine_drive).trajectory
        lowered = interface.scaled(compiled.program)
        realised_drive = lowered.drive_function(compiled.realised_program, probe.conditions)
        realised = run_ideal(compiled.realised_program, schedule, compiled.alpha, probe.x, realised_drive).trajectory
        bound = float(compiled.report.get("verify_tolerance", EXACT_BOUND))
        if compiled.report.get("verify_criterion") == "per_step_nrmse":
            return float(np.max(per_step_nrmse(realised[1:], expected[1:]))), bound
        return relative_error(realised[-1], expected[-1]), bound
    return check
