"""The packed program: analog state layout, block-sparse loop matrix, injections and per-step phases.

The state z has ``n`` channels in contiguous groups. One loop iteration of a phase computes

    z ← α ⊙ z + (1 − α) ⊙ ( Σ_blocks s_block · B σ(z̃[column group]) + v_phase + Σ_parts P · source )

where σ is each column group's activation (applied to ``sigma_gain`` × the group's voltage), ``s_block``
is 1 for ``fixed`` blocks, the phase's step scale for ``step`` blocks, and for ``feedback`` blocks the step
scale in closed phases and 0 in open ones. In an open phase, ``z̃`` equals z except that ``held`` groups
read the phase's hold vector (the loop's feedback from the diffusion state is replaced by the held input);
in a closed phase ``z̃ = z``. Injection parts of
kind ``inject`` always read the phase's inject vector; parts of kind ``feedback`` read the inject vector in
closed phases and the hold vector in open ones. ``v_phase`` is the phase's static injected vector (biases
and time terms at the phase's time, scaled by their class). Groups carry a ``voltage_scale``: held and
initial values are written as voltage_scale × value, and the readout is divided by it.

Only non-zero blocks are stored, each as a dense matrix: no n × n array is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from admc.ir.adm import TimeTerm

FIXED = "fixed"
STEP = "step"
FEEDBACK = "feedback"
SCALE_CLASSES = (FIXED, STEP, FEEDBACK)
INJECT = "inject"
OPEN = "open"
CLOSED = "closed"


@dataclass(frozen=True)
class StateGroup:
    """A contiguous range of state channels, ``offset .. stop - 1``, with its activation and role."""

    name: str
    offset: int
    size: int
    activation: str  # "tanh", "relu", "identity", or "none" (read by no block)
    held: bool = False
    role: str = "hidden"  # "state", "hidden" or "readout"
    # Voltage = voltage_scale × value; the activation reads σ(sigma_gain · voltage). Both 1 before the
    # state-scaling pass, which sets sigma_gain = 1 / voltage_scale so σ sees the same argument.
    voltage_scale: float = 1.0
    sigma_gain: float = 1.0

    @property
    def stop(self) -> int:
        return self.offset + self.size


@dataclass
class MatrixBlock:
    """A stored non-zero block of the loop matrix: row_group channels ← matrix · σ(column_group channels)."""

    row_group: str
    column_group: str
    matrix: np.ndarray
    scale_class: str = FIXED
    layer: int = 0
    # (left, right) with matrix = left @ right when the block is known to have low rank (a fold-input MLP's
    # feedback block V·W has rank d): analyses may use it after checking it still holds (a pass that changes
    # ``matrix`` without it leaves it stale, and realised weights are not low-rank at all).
    low_rank: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)


def block_name(index: int) -> str:
    """The name of a program's block ``index`` in placements and bundles (``block_0003``); the one place it is
    formatted. Code that needs the index back looks it up (:func:`block_indices`), never parses the name."""
    return f"block_{index:04d}"


def block_indices(count: int) -> dict[str, int]:
    """Each block name of a program with ``count`` blocks → the block's index."""
    return {block_name(index): index for index in range(count)}


@dataclass
class BiasPart:
    """A static vector entering ``group``: ``vector + Σ time terms(t)``, scaled by ``scale_class``."""

    group: str
    vector: np.ndarray
    time_terms: list[TimeTerm] = field(default_factory=list)
    scale_class: str = FIXED


@dataclass
class InjectionPart:
    """``matrix @ source`` entering ``group`` each iteration; kind ``inject`` or ``feedback`` (see module)."""

    group: str
    matrix: np.ndarray
    kind: str = INJECT

    def is_identity(self) -> bool:
        rows, columns = self.matrix.shape
        return rows == columns and np.array_equal(self.matrix, np.eye(rows))


@dataclass
class BlockProgram:
    state_dimension: int
    groups: list[StateGroup]
    blocks: list[MatrixBlock]
    biases: list[BiasPart]
    injections: list[InjectionPart]
    readout_group: str
    open_iterations: int
    layout: str  # "direct" (state channels in the loop) or "folded-input" (docs/design.md §2 rewrite)
    notes: list[str] = field(default_factory=list)
    static_table: StaticInjection | None = None
    # Targets without per-channel gains hold one image set per phase factor triple (fixed, step, feedback):
    # the realised blocks of each set, with the class factors already in the weights.
    phase_blocks: dict[tuple[float, float, float], list[np.ndarray]] | None = None

    @property
    def size(self) -> int:
        return sum(group.size for group in self.groups)

    def group(self, name: str) -> StateGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def digital_multiply_adds_per_injection(self) -> int:
        """Multiply-adds the host does per injected vector (identity injections are plain voltages)."""
        return sum(int(np.count_nonzero(part.matrix)) for part in self.injections if not part.is_identity())


def block_scale(scale_class: str, step_scale: float, loop: str) -> float:
    if scale_class == FIXED:
        return 1.0
    if scale_class == STEP:
        return step_scale
    return step_scale if loop == CLOSED else 0.0


@dataclass(frozen=True)
class Phase:
    """One phase of a diffusion step. Sources are ``"x"`` (the step's input) or ``"phase:k"``."""

    loop: str
    step_scale: float
    time: float
    inject: tuple[tuple[str, float], ...]
    hold: tuple[tuple[str, float], ...] = ()
    init: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict:
        return {
            "loop": self.loop,
            "step_scale": self.step_scale,
            "time": self.time,
            "inject": [list(pair) for pair in self.inject],
            "hold": [list(pair) for pair in self.hold],
            "init": [list(pair) for pair in self.init],
        }

    @staticmethod
    def from_dict(data: dict) -> Phase:
        def pairs(key: str) -> tuple[tuple[str, float], ...]:
            return tuple((str(source), float(coefficient)) for source, coefficient in data.get(key, []))

        return Phase(str(data["loop"]), float(data["step_scale"]), float(data["time"]),
                     pairs("inject"), pairs("hold"), pairs("init"))


def phase_vectors(phase: Phase, outputs: dict):
    """The phase's inject, hold and init vectors from the step's input ``"x"`` and earlier phases' readouts
    (``hold``/``init`` are None when the phase has none). Works on numpy arrays and torch tensors alike."""

    def combine(pairs: tuple[tuple[str, float], ...]):
        return sum(coefficient * outputs[source] for source, coefficient in pairs)

    return (combine(phase.inject), combine(phase.hold) if phase.hold else None,
            combine(phase.init) if phase.init else None)


@dataclass
class Schedule:
    solver: str
    grid: np.ndarray
    steps: list[list[Phase]]
    fp_iterations: int | None = None


@dataclass
class StaticInjection:
    """Per scale class, a constant vector and a table of time-term vectors at the schedule's time points.

    ``vector(phase)`` = Σ_class block_scale(class) · (constant[class] + time_table[class][time]). Built once
    from the biases at compile time and stored in the bundle, so the time embedding is never re-evaluated
    by an executor.
    """

    times: np.ndarray
    constants: dict[str, np.ndarray]
    time_tables: dict[str, np.ndarray]

    def vector(self, step_scale: float, time: float, loop: str) -> np.ndarray:
        size = next(iter(self.constants.values())).size
        total = np.zeros(size)
        matches = np.flatnonzero(self.times == time)
        for scale_class, constant in self.constants.items():
            factor = block_scale(scale_class, step_scale, loop)
            if factor == 0.0:
                continue
            value = constant
            table = self.time_tables.get(scale_class)
            if table is not None:
                if matches.size == 0:
                    raise KeyError(f"time {time!r} is not in the program's time table")
                value = value + table[matches[0]]
            total += factor * value
        return total


def tabulate_static_injection(program: BlockProgram, times: np.ndarray) -> StaticInjection:
    """Evaluate every bias part's time terms at ``times`` (exact phase times) into per-class tables."""
    times = np.unique(np.asarray(times, dtype=np.float64))
    groups = {group.name: group for group in program.groups}
    constants = {scale_class: np.zeros(program.size) for scale_class in SCALE_CLASSES}
    tables: dict[str, np.ndarray] = {}
    for part in program.biases:
        group = groups[part.group]
        constants[part.scale_class][group.offset:group.stop] += part.vector
        for term in part.time_terms:
            table = tables.setdefault(part.scale_class, np.zeros((times.size, program.size)))
            table[:, group.offset:group.stop] += term.evaluate(times)
    return StaticInjection(times, constants, tables)
