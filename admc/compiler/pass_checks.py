"""Independent checks the pass manager runs in verify mode (``admc build --verify-passes``), for every model
(conditions drawn when it has condition inputs; none otherwise).

Requires: the source graph, its signature and the distribution verify draws conditions from (a condition
without one is drawn standard normal here, as the state-scaling calibration does). Guarantees: each check
draws seeded x, t and conditions (:class:`Probe`, drawn on first use) and returns ``(error, bound)`` for its
pass, against an independent computation:
- canonicalisation: the canonical network's f(x, t, c) against the graph IR's own evaluation of the source;
- guidance: the guided network against (1 + W)·source(x, t, c) − W·source(x, t, ∅), the source evaluated
  twice (the source itself without guidance);
- packing: one explicit Euler step of the packed program, driven by the conditioning interface built from
  it, against x + Δt·f(x, t, c) of the network;
- lowering: the lowered program against the spine, both driven by the interface (in each program's units),
  per step within the target's stated bound.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

import numpy as np

from admc.compiler.conditions import build_interface
from admc.frontends.signature import Signature
from admc.ir.adm import AdmNetwork
from admc.ir.evaluate import evaluate_graph
from admc.ir.graph import Graph
from admc.ir.program import OPEN, BlockProgram, Phase, Schedule, tabulate_static_injection
from admc.runtime.conditioning import ConditioningInterface, sample_conditions

EXACT_BOUND = 1e-9
SAMPLES = 16
SEED = 11


def relative_error(estimate: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(estimate - expected)) / max(1.0, float(np.sqrt(np.mean(expected ** 2)))))


class Probe:
    """Seeded x, t and conditions for the checks, and the source graph evaluated on them."""

    def __init__(self, graph: Graph, signature: Signature, distribution: dict[str, dict],
                 null_conditions: dict[str, np.ndarray] | None = None) -> None:
        self.graph, self.signature = graph, signature
        self.distribution = distribution
        self.null_conditions = null_conditions or {}

    @cached_property
    def _drawn(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        generator = np.random.default_rng(SEED)
        shape = next(entry.shape for entry in self.graph.inputs if entry.name == self.graph.state_input)
        x = generator.standard_normal((SAMPLES, int(shape[-1])))
        t = generator.uniform(0.0, 1.0, SAMPLES)
        drawn = {condition.name: self.distribution.get(condition.name, {"kind": "normal"})
                 for condition in self.signature.conditions}
        return x, t, sample_conditions(self.signature.conditions, drawn, SAMPLES, SEED + 1)

    @property
    def x(self) -> np.ndarray:
        return self._drawn[0]

    @property
    def t(self) -> np.ndarray:
        return self._drawn[1]

    @property
    def conditions(self) -> dict[str, np.ndarray]:
        return self._drawn[2]

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


def canonical_check(probe: Probe):
    def check(network: AdmNetwork) -> tuple[float, float]:
        expected = probe.source(probe.conditions)
        return relative_error(network.velocity(probe.x, probe.t, probe.conditions), expected), EXACT_BOUND
    return check


def guidance_check(probe: Probe, guidance: float | None):
    def check(network: AdmNetwork) -> tuple[float, float]:
        expected = probe.source(probe.conditions)
        if guidance is not None:
            expected = (1.0 + guidance) * expected - guidance * probe.source(probe.null())
        return relative_error(network.velocity(probe.x, probe.t, probe.conditions), expected), EXACT_BOUND
    return check


def pack_check(probe: Probe, network: AdmNetwork, guidance: float | None):
    def check(program: BlockProgram) -> tuple[float, float]:
        time, delta = 0.3, 0.1
        probed = replace(program, static_table=tabulate_static_injection(program, np.array([time])))
        interface = build_interface(network, probed, probe.signature, guidance, {})
        drive = interface.drive_function(probed, probe.conditions)
        step = [Phase(OPEN, delta, time, (("x", 1.0),), (("x", 1.0),))]
        from admc.runtime.executor import IdealExecutor  # scipy: only when a check runs (--verify-passes)

        result = IdealExecutor(probed).run(Schedule("explicit-euler", np.array([time, time + delta]), [step]),
                                           probe.x, drive)
        expected = probe.x + delta * network.velocity(probe.x, np.full(SAMPLES, time), probe.conditions)
        return relative_error(result.trajectory[-1], expected), EXACT_BOUND
    return check


def lowering_check(probe: Probe, spine: BlockProgram, spine_alpha: np.ndarray, schedule: Schedule,
                   interface: ConditioningInterface):
    def check(compiled) -> tuple[float, float]:
        from admc.runtime.executor import run_ideal  # scipy and POT: only when a check runs (--verify-passes)
        from admc.verify.metrics import per_step_nrmse

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
