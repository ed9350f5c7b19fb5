"""Pass manager: runs the compiler's stages in order, records their time, can dump the IR after each one,
and in verify mode checks that each stage kept the semantics within the error it is allowed to add
(docs/design.md §3: zero for exact passes up to rounding, a stated bound for quantisation).

Requires: each stage as ``(name, function, check)`` where ``check(result) -> (error, bound)`` compares the
stage's result with an independent computation. Guarantees: a check that fails raises ``AdmcError``
naming the pass, the error and the bound, before anything is written; ``records`` holds every stage's
name, seconds and checked error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from admc.core.errors import AdmcError

Check = Callable[[Any], tuple[float, float]]


@dataclass
class PassRecord:
    name: str
    seconds: float
    error: float | None = None
    bound: float | None = None


class PassManager:
    def __init__(self, verify: bool = False, dump_directory: str | Path | None = None):
        self.verify = verify
        self.dump_directory = None if dump_directory is None else Path(dump_directory)
        self.records: list[PassRecord] = []

    def run(self, name: str, function: Callable[..., Any], *arguments: Any, check: Check | None = None) -> Any:
        started = time.perf_counter()
        result = function(*arguments)
        record = PassRecord(name, time.perf_counter() - started)
        if self.verify and check is not None:
            record.error, record.bound = (float(value) for value in check(result))
            if not record.error <= record.bound:
                raise AdmcError(f"pass '{name}' changed the program's semantics: error {record.error:.3e} exceeds "
                                f"its bound {record.bound:.1e}")
        if self.dump_directory is not None:
            self._dump(len(self.records), name, result)
        self.records.append(record)
        return result

    def _dump(self, index: int, name: str, result: Any) -> None:
        self.dump_directory.mkdir(parents=True, exist_ok=True)
        slug = "".join(character if character.isascii() and character.isalnum() else "_" for character in name)
        path = self.dump_directory / f"{index:02d}_{slug.strip('_')}.json"
        path.write_text(json.dumps(describe_ir(result), indent=1, sort_keys=True, default=str) + "\n")

    def table(self) -> str:
        lines = [f"{'pass':<28} {'seconds':>9} {'checked error':>14} {'bound':>8}"]
        for record in self.records:
            error = "" if record.error is None else f"{record.error:14.2e}"
            bound = "" if record.bound is None else f"{record.bound:8.0e}"
            lines.append(f"{record.name:<28} {record.seconds:9.3f} {error:>14} {bound:>8}")
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
    return {"kind": type(result).__name__}
