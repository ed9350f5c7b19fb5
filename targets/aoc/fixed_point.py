"""Fixed points of a phase's loop and their gradients, for the differentiable twin (fine-tuning).

Why a solver other than the machine's own iteration: the value a phase reads out is its loop's fixed point
z* = F(z*); any method that reaches the same point to the twin's tolerance gives the same value, and the implicit
gradient depends only on z* (dz*/dθ = (I − ∂F/∂z)⁻¹ ∂F/∂θ), not on how z* was found. The plain iteration needs
~140 applications on two moons (the relaxation α makes the loop contract by only ~0.82 per pass); the unrelaxed
splitting G of ``differentiable_loop`` has the same fixed points and contracts by ~0.08, so ~14 applications reach
the twin's tolerance, and its adjoint converges as fast. (Newton's method on the dense per-sample Jacobian needed
5 applications but an LU of [128, 66, 66] costs ~6 ms, more than the splitting's whole solve; measured in
docs/finetune.md.)

Requires: maps on a batch [B, n] (no graph needed). Guarantees: :func:`plain_fixed_point` is the twin's own
iteration (stop at relative change ≤ tolerance, returning the last application); :func:`split_fixed_point`
iterates another map with the same fixed points to the same test and returns None when it does not get there
within ``SPLIT_MAX_ITERATIONS`` or stops contracting (the caller then iterates plainly: a closed phase's loop,
where the relaxation damps the state's feedback, often does not split); :func:`split_adjoint`
solves (I − Jᵀ) g = v by a split step, None when that does not converge; :func:`iterative_adjoint` makes a graph
application F(z*) pass back (I − Jᵀ)⁻¹ v by g ← v + Jᵀ g (the loop's own rate), the fallback.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from admc.core.errors import ConvergenceError

ADJOINT_TOLERANCE = 1e-10
SPLIT_MAX_ITERATIONS = 200  # the splitting contracts by ~0.1; this many without converging: it does not here
SPLIT_CHECK = 10
Map = Callable[[torch.Tensor], torch.Tensor]


def relative_change(updated: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Per sample max |updated − state| / max(1, max |updated|): the twin's stopping test."""
    scale = updated.abs().amax(dim=1).clamp_min(1.0)
    return (updated - state).abs().amax(dim=1) / scale


def _largest(change: torch.Tensor) -> float:
    return float(change.max()) if change.numel() else 0.0


def plain_fixed_point(apply: Map, state: torch.Tensor, tolerance: float, limit: int, where: str
                      ) -> tuple[torch.Tensor, int]:
    """(the fixed point, iterations) by the twin's own iteration, without a graph."""
    with torch.no_grad():
        for count in range(1, limit + 1):
            updated = apply(state)
            change = _largest(relative_change(updated, state))
            state = updated
            if not np.isfinite(change):
                raise ConvergenceError(f"fine-tuning twin: {where} diverged after {count} iterations")
            if change <= tolerance:
                return state, count
    raise ConvergenceError(f"fine-tuning twin: {where} not settled after {limit} iterations (relative change "
                           f"{change:.3e})")


def split_fixed_point(split: Map, state: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, int] | None:
    """(the fixed point, iterations) of ``split`` to the twin's test, or None where it does not contract (its
    change has not fallen tenfold over ``SPLIT_CHECK`` iterations: the plain loop is then the faster)."""
    best, checkpoint = float("inf"), float("inf")
    with torch.no_grad():
        for count in range(1, SPLIT_MAX_ITERATIONS + 1):
            updated = split(state)
            # max |G(z) − z| ≤ tolerance implies the twin's relative test (its scale is at least 1) and costs
            # half as much; at ~0.1 per iteration it asks for at most one iteration more.
            change = float((updated - state).abs().max()) if updated.numel() else 0.0
            state = updated
            if change <= tolerance:
                return state, count
            if not np.isfinite(change):
                return None
            best = min(best, change)
            if count % SPLIT_CHECK == 0:
                if best > 0.1 * checkpoint:
                    return None
                checkpoint = best
    return None


def split_adjoint(step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], gradient: torch.Tensor,
                  tolerance: float = ADJOINT_TOLERANCE) -> tuple[torch.Tensor, int] | None:
    """(g with g = step(v, g), steps) (the split adjoint), from g = v, to a change ≤ ``tolerance`` of its
    largest entry; None if it does not converge."""
    solution = gradient
    for count in range(1, SPLIT_MAX_ITERATIONS + 1):
        updated = step(gradient, solution)
        change = float((updated - solution).abs().max())
        solution = updated
        if not np.isfinite(change):
            return None
        if change <= tolerance * max(1.0, float(solution.abs().max())):
            return solution, count
    return None


def iterative_adjoint(function: Map, fixed: torch.Tensor, gradient: torch.Tensor, limit: int
                      ) -> tuple[torch.Tensor, int]:
    """((I − Jᵀ)⁻¹ v, steps) by iterating g ← v + Jᵀ g, J = ∂function/∂z at ``fixed`` (autograd products)."""
    probe = fixed.detach().requires_grad_()
    with torch.enable_grad():
        applied = function(probe)
    solution = gradient
    for count in range(1, limit + 1):
        step = torch.autograd.grad(applied, probe, solution, retain_graph=True)[0] + gradient
        done = float((step - solution).abs().max()) <= ADJOINT_TOLERANCE * max(1.0, float(step.abs().max()))
        solution = step
        if done:
            return solution, count
    return solution, limit
