"""The target's own passes in the build: the backend a description names lowers the spine program.

Requires: a backend (``admc.targets.backends.TargetBackend``) and the compiled spine program. Guarantees:
the lowering runs under the pass manager (timed, checked in verify mode, dumped with ``--dump-ir``).
"""

from __future__ import annotations

from typing import Any

from admc.passes.manager import Check, PassManager


def run_backend_passes(backend: Any, compiled: Any, layout: str, passes: PassManager,
                       check: Check | None = None) -> Any:
    """Lower ``compiled`` with ``backend``; ``check`` compares the lowered program with the spine."""
    return passes.run(f"lower to {backend.name.upper()}", backend.lower, compiled, layout, check=check)
