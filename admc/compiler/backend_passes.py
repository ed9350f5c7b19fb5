"""The target's own passes in the build: the backend a description names lowers the spine program.

Requires: a backend (``admc.targets.backends.TargetBackend``) and the compiled spine program. Guarantees: the
backend's lowering runs under the pass manager one named pass at a time (each timed, checked in verify mode
where it states a check, dumped with ``--dump-ir``), and ``check`` (the lowered program against the spine)
after the last one.
"""

from __future__ import annotations

from typing import Any

from admc.passes.manager import Check, PassManager, run_lowering


def run_backend_passes(backend: Any, compiled: Any, layout: str, passes: PassManager,
                       check: Check | None = None) -> Any:
    """Lower ``compiled`` with ``backend``; ``check`` compares the lowered program with the spine."""
    return run_lowering(backend.lowering(compiled, layout), passes, check)
