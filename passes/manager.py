"""Pass manager: runs the compiler's stages in order, records their time, can dump the IR after each one, and in
verify mode checks that each stage kept the semantics within the error it is allowed to add (docs/design.md §3:
zero for exact passes up to rounding, a stated bound for quantisation).

Requires: each stage as ``(name, function, check)`` where ``check(result) -> (error, bound)`` compares the stage's
result with an independent computation. Guarantees: a check that fails raises ``AdmcError`` naming the pass, the
error and the bound, before anything is written; ``records`` holds every stage's name, seconds, checked error and
the process's peak resident memory during it (Linux). A target's lowering is a :class:`Lowering`: a first state and
named :class:`BackendPass` es, each taking the state to a new one (``run_lowering`` runs them one by one, so each
has its own record, check and dump; the last returns the lowered program). An optional :class:`PassObserver` (the
CLI's progress line) is told when each pass starts and ends; it never changes a result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from admc.core.errors import AdmcError
from admc.core.process_memory import peak_bytes, reset_peak

Check = Callable[[Any], tuple[float, float]]
# The Greek letters pass names use, spelled out in IR dump file names (which are ASCII).
SPELLED = {"α": "alpha", "β": "beta", "σ": "sigma", "Δ": "delta"}


@dataclass
class PassRecord:
    name: str
    seconds: float
    error: float | None = None
    bound: float | None = None
    peak_bytes: int | None = None  # the process's peak resident memory during the pass (None: not measured)


class PassObserver(Protocol):
    """Told as each pass starts and ends (e.g. to show progress); what it does cannot change the build."""

    def pass_started(self, name: str, index: int) -> None: ...

    def pass_finished(self, record: PassRecord) -> None: ...


class PassManager:
    def __init__(self, verify: bool = False, dump_directory: str | Path | None = None,
                 observer: PassObserver | None = None):
        self.verify = verify
        self.dump_directory = None if dump_directory is None else Path(dump_directory)
        self.observer = observer
        self.records: list[PassRecord] = []

    def run(self, name: str, function: Callable[..., Any], *arguments: Any, check: Check | None = None) -> Any:
        """Run one pass, ``function(*arguments)``: time it, check it in verify mode, dump its IR if asked."""
        if self.observer is not None:
            self.observer.pass_started(name, len(self.records))
        reset_peak()
        started = time.perf_counter()
        result = function(*arguments)
        record = PassRecord(name, time.perf_counter() - started, peak_bytes=peak_bytes())
        if self.verify and check is not None:
            record.error, record.bound = (float(value) for value in check(result))
            if not record.error <= record.bound:
                raise AdmcError(f"pass '{name}' changed the program's semantics: error {record.error:.3e} exceeds "
                                f"its bound {record.bound:.1e}")
        if self.dump_directory is not None:
            self._dump(len(self.records), name, result)
        self.records.append(record)
        if self.observer is not None:
            self.observer.pass_finished(record)
        return result

    def _dump(self, index: int, name: str, result: Any) -> None:
        self.dump_directory.mkdir(parents=True, exist_ok=True)
        spelled = "".join(SPELLED.get(character, character) for character in name)
        slug = "".join(character if character.isascii() and character.isalnum() else "_" for character in spelled)
        path = self.dump_directory / f"{index:02d}_{slug.strip('_')}.json"
        path.write_text(json.dumps(describe_ir(result), indent=1, sort_keys=True, default=str) + "\n")

    def table(self) -> str:
        width = max([28, *(len(record.name) for record in self.records)])
        lines = [f"{'pass':<{width}} {'seconds':>9} {'peak MiB':>9} {'checked error':>14} {'bound':>9}"]
        for record in self.records:
            error = "" if record.error is None else f"{record.error:14.2e}"
            bound = "" if record.bound is None else f"{record.bound:9.2e}"
            peak = "" if record.peak_bytes is None else f"{record.peak_bytes / 2 ** 20:9.0f}"
            lines.append(f"{record.name:<{width}} {record.seconds:9.3f} {peak:>9} {error:>14} {bound:>9}")
        return "\n".join(lines)


def describe_ir(result: Any) -> dict:
    """A JSON-able summary of an IR (graph, canonical network, block program, compiled program)."""
    if hasattr(result, "ops") and hasattr(result, "constants"):
        return {"kind": "graph", "source": result.source, "inputs": [vars(entry) for entry in result.inputs],
                "ops": [{"name": op.name, "op": op.op_type, "inputs": list(op.inputs), "outputs": list(op.outputs)}
                        for op in result.ops]}
    if hasattr(result, "nodes") and hasattr(result, "output"):
        def node(entry) -> dict:
            return {"name": entry.name, "size": entry.size, "time_terms": len(entry.time_terms),
                    "terms": {f"{atom.activation}({atom.source})": list(matrix.shape)
                              for atom, matrix in sorted(entry.terms.items())}}
        return {"kind": "canonical network", "state_dimension": result.state_dimension,
                "nodes": [node(entry) for entry in result.nodes], "output": node(result.output)}
    program = getattr(result, "program", result)
    if hasattr(program, "groups") and hasattr(program, "blocks"):
        return {"kind": "block program", "layout": program.layout, "size": program.size,
                "groups": [vars(group) for group in program.groups],
                "blocks": [{"row_group": block.row_group, "column_group": block.column_group,
                            "shape": list(block.matrix.shape), "scale_class": block.scale_class,
                            "max_abs": float(np.max(np.abs(block.matrix), initial=0.0))}
                           for block in program.blocks],
                "open_iterations": program.open_iterations, "notes": program.notes}
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {"kind": type(result).__name__, **_describe_fields(result, depth=0)}
    return {"kind": type(result).__name__}


# A dataclass field marked with this metadata is an input the state carries along, not part of its IR dump.
NOT_IR = {"ir": False}
DESCRIBE_DEPTH = 4
DESCRIBE_ITEMS = 8


def _describe_fields(value: Any, depth: int) -> dict:
    return {field.name: _summary(getattr(value, field.name), depth + 1) for field in dataclasses.fields(value)
            if field.metadata.get("ir", True) and getattr(value, field.name) is not None}


def _summary(value: Any, depth: int) -> Any:
    """A short JSON-able account of one field of a lowering state: arrays by shape and size, programs by
    their block-program description, collections by their first items, nested records by their fields."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        numeric = value.dtype.kind in "biuf" and value.size > 0
        return {"shape": list(value.shape), "dtype": str(value.dtype),
                **({"min": float(np.min(value)), "max": float(np.max(value))} if numeric else {})}
    if hasattr(value, "groups") and hasattr(value, "blocks"):
        return describe_ir(value)
    if hasattr(value, "number_of_nodes"):  # a graph (routing)
        return {"nodes": value.number_of_nodes(), "edges": value.number_of_edges()}
    if isinstance(value, dict):
        items = list(value.items())
        return {**{str(key): _summary(item, depth + 1) for key, item in items[:DESCRIBE_ITEMS]},
                **({"…": f"{len(items)} entries"} if len(items) > DESCRIBE_ITEMS else {})}
    if isinstance(value, (list, tuple)):
        return {"length": len(value), "first": [_summary(item, depth + 1) for item in value[:DESCRIBE_ITEMS]]}
    if dataclasses.is_dataclass(value) and depth < DESCRIBE_DEPTH:
        return {"kind": type(value).__name__, **_describe_fields(value, depth)}
    return {"kind": type(value).__name__}


@dataclass(frozen=True)
class BackendPass:
    """One named step of a target's lowering: ``run(state)`` returns a new state (never changes its
    argument); ``check(new state) -> (error, bound)``, where an independent check of the step can be stated."""

    name: str
    run: Callable[[Any], Any]
    check: Check | None = None


@dataclass(frozen=True)
class Lowering:
    """A target's lowering of one compiled program: its first state and its passes in order (the last one
    returns the lowered program)."""

    state: Any
    passes: tuple[BackendPass, ...]


def run_lowering(lowering: Lowering, manager: PassManager | None = None, final_check: Check | None = None) -> Any:
    """Run ``lowering``'s passes one by one under ``manager`` (a plain one when None); ``final_check`` (the
    lowered program against the spine) is checked after the last pass, beside that pass's own check."""
    manager = manager or PassManager()
    state, last = lowering.state, len(lowering.passes) - 1
    for index, step in enumerate(lowering.passes):
        check = both_checks(step.check, final_check) if index == last else step.check
        state = manager.run(step.name, step.run, state, check=check)
    return state


def both_checks(first: Check | None, second: Check | None) -> Check | None:
    """One check running both: it reports the pair nearest to (or furthest beyond) its bound."""
    if first is None or second is None:
        return first or second

    def check(result: Any) -> tuple[float, float]:
        return max((first(result), second(result)), key=_bound_use)
    return check


def _bound_use(pair: tuple[float, float]) -> float:
    error, bound = (float(value) for value in pair)
    if not error <= bound:
        return math.inf
    return error / bound if bound > 0 else 0.0
