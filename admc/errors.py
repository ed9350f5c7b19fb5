"""The one exception type admc raises for bad input; the CLI turns it into a one-line message and exit 2."""

from __future__ import annotations


class AdmcError(Exception):
    """A user-facing error. The message names what is wrong and where (file, node, op, field)."""


class ConvergenceError(AdmcError):
    """A fixed-point solve did not settle: the message names the step, the phase and the residual."""
