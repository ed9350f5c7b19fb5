"""The one table of ODE solver names and aliases, read by every command (build, reference, simulate, verify).

Requires: nothing. Guarantees: ``solver_name`` maps any accepted spelling (case-insensitive, '_' or '-') to
its canonical name, or raises AdmcError listing every accepted name. A new solver is one entry in
``SOLVERS`` (and, if it has short names, in ``SOLVER_ALIASES``).
"""

from __future__ import annotations

from admc.core.errors import AdmcError

SOLVERS = ("explicit-euler", "heun", "implicit-euler", "crank-nicolson", "continuous")
SOLVER_ALIASES = {"euler": "explicit-euler", "explicit": "explicit-euler", "implicit": "implicit-euler",
                  "cn": "crank-nicolson"}
# Solvers whose step solves a fixed-point equation (they accept --fp-iterations).
IMPLICIT_SOLVERS = ("implicit-euler", "crank-nicolson")


def solver_name(name: str) -> str:
    """The canonical solver name for ``name`` (case and '_' / '-' insensitive, aliases accepted)."""
    key = str(name).strip().lower().replace("_", "-")
    key = SOLVER_ALIASES.get(key, key)
    if key not in SOLVERS:
        valid = ", ".join(SOLVERS + tuple(SOLVER_ALIASES))
        raise AdmcError(f"unknown solver '{name}'; valid solvers: {valid}")
    return key
