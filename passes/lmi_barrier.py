"""Barrier method for an LMI whose terms have rank two: minimise t subject to Σ_k x_k U_k D_k U_kᵀ ⪯ t B, x > 0.

Requires: the terms as one sparse N × 2m matrix ``basis`` (columns 2k, 2k + 1 are U_k), their symmetric 2 × 2
cores ``cores`` [m, 2, 2], a start x [m] > 0, a mask of the variables whose sum is held fixed (F is
homogeneous in x, so one normalisation is needed) and B = diag(b), b ≥ 0 (where b = 0 the start's F must be
negative definite). Guarantees: every iterate is strictly feasible (t B − F(x) ≻ 0 by a Cholesky
factorisation, x > 0, the masked sum unchanged); the answer is the iterate reached, its t, and a flag when
the duality-gap bound proves min t > 0. Nothing here is trusted by a certificate: callers check the x they
get independently.

Why a dedicated solver: with m ≈ N variables a general conic solver either works on the N(N + 1)/2-dimensional
PSD cone (interior point: a dense block of that size, squared) or projects onto it thousands of times (SCS).
The Newton system needs only G = Uᵀ S⁻¹ U (S = t B − F(x)), because each term has rank two:
Hessian_kl = tr(D_k G_kl D_l G_lk). One Newton step costs one N × N Cholesky factorisation and inverse,
sparse-times-dense products and an m × m solve (primal barrier method, Boyd & Vandenberghe §11.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as linalg
import scipy.sparse as sparse

ARMIJO = 0.25
SMALLEST_STEP = 1e-10
GROWTH = 2.0  # barrier weight factor per centring (larger: centrings leave Newton's quadratic region)
NEWTON_LIMIT = 20  # Newton steps per centring (an approximate centre is enough)
TOTAL_NEWTON_LIMIT = 120  # per call: a round that stalls still returns a feasible x, checked by the caller
RELATIVE_GAP = 0.05  # t to 5 %: the caller only needs a good x, its ρ is computed exactly
CENTRED = 0.1  # Newton decrement² / 2 at which a centring stops


@dataclass(frozen=True)
class BarrierResult:
    x: np.ndarray
    t: float  # F(x) ≺ t B
    proven_positive: bool  # the duality gap shows min t > 0: no x makes F(x) ≺ 0
    newton_steps: int
    weight: float  # the barrier weight reached (a warm start for a nearby problem)


def block_diagonal(cores: np.ndarray) -> sparse.csr_matrix:
    """blockdiag(D_0, …, D_{m−1}) as a sparse 2m × 2m matrix."""
    size = cores.shape[0]
    rows = np.repeat(np.arange(2 * size).reshape(size, 2), 2, axis=1).ravel()
    columns = np.tile(np.arange(2 * size).reshape(size, 2), (1, 2)).ravel()
    return sparse.csr_matrix((cores.ravel(), (rows, columns)), shape=(2 * size, 2 * size))


def assemble(basis: sparse.csc_matrix, cores: np.ndarray, x: np.ndarray) -> np.ndarray:
    """F(x) = Σ_k x_k U_k D_k U_kᵀ as a dense N × N matrix."""
    return np.asarray((basis @ block_diagonal(cores * x[:, None, None]) @ basis.T).todense())


def term_matrix(basis: sparse.csc_matrix, cores: np.ndarray) -> sparse.csr_matrix:
    """The linear map x ↦ vec(F(x)), [N², m] sparse: F is then one sparse product per evaluation."""
    dimension, size = basis.shape[0], cores.shape[0]
    coo = sparse.coo_matrix(basis)
    term = coo.col // 2  # the k of each nonzero of U
    rows, columns, values = [], [], []
    order = np.argsort(term, kind="stable")
    starts = np.searchsorted(term[order], np.arange(size + 1))
    for k in range(size):  # one small outer product per term (each touches a handful of entries)
        chosen = order[starts[k]:starts[k + 1]]
        row, column, value = coo.row[chosen], coo.col[chosen] % 2, coo.data[chosen]
        weight = cores[k][column[:, None], column[None, :]] * value[:, None] * value[None, :]
        rows.append((row[:, None] * dimension + row[None, :]).ravel())
        columns.append(np.full(weight.size, k))
        values.append(weight.ravel())
    return sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
                             shape=(dimension * dimension, size))


def _cholesky(matrix: np.ndarray):
    try:
        return linalg.cho_factor(matrix, lower=True, check_finite=False)
    except linalg.LinAlgError:
        return None


def _inverse(lower_factor: np.ndarray) -> np.ndarray:
    """S⁻¹ from S's lower Cholesky factor (LAPACK potri: a third of the work of solving against I)."""
    inverse, info = linalg.lapack.dpotri(lower_factor, lower=1)
    if info != 0:
        raise linalg.LinAlgError(f"potri failed ({info})")
    inverse = np.tril(inverse)
    return inverse + np.tril(inverse, -1).T


def _feasible_t(matrix: np.ndarray, bound_matrix: np.ndarray) -> float | None:
    """A t with t B − F ≻ 0 and some room (doubling from the dense λ_max), None if there is none."""
    top = float(linalg.eigvalsh(matrix, subset_by_index=[matrix.shape[0] - 1] * 2, check_finite=False)[0])
    room = 0.1 * (1.0 + abs(top))
    for _ in range(60):
        if _cholesky((top + room) * bound_matrix - matrix) is not None:
            return top + room
        room *= 2.0
    return None


def minimise_lmi_bound(basis: sparse.csc_matrix, cores: np.ndarray, start: np.ndarray, normalised: np.ndarray,
                       scale: np.ndarray, gap: float = 5e-4, weight: float | None = None) -> BarrierResult | None:
    """Approximately minimise t with Σ_k x_k U_k D_k U_kᵀ ⪯ t diag(``scale``) over x > 0, Σ_{normalised} x fixed.

    Stops when the duality-gap bound is below max(``gap``, ``RELATIVE_GAP`` |t|) or proves min t > 0. None when
    no t makes the start strictly feasible.
    """
    size, dimension = cores.shape[0], basis.shape[0]
    basis = sparse.csc_matrix(basis)
    transposed = sparse.csr_matrix(basis.T)
    core_matrix = block_diagonal(cores)
    constraint = np.concatenate([normalised.astype(float), [0.0]])
    degree = dimension + size  # barrier parameter: log det (N) and one log per x
    bound_diagonal, bound_matrix = scale.astype(float), np.diag(scale.astype(float))
    x = start.astype(float).copy()
    linear = term_matrix(basis, cores)

    def assembled(x_values: np.ndarray) -> np.ndarray:
        return (linear @ x_values).reshape(dimension, dimension)

    t = _feasible_t(assembled(x), bound_matrix)
    if t is None:
        return None
    weight = degree / (1.0 + abs(t)) if weight is None else weight

    def objective(x_values: np.ndarray, t_value: float) -> float | None:
        if np.any(x_values <= 0.0):
            return None
        factor = _cholesky(t_value * bound_matrix - assembled(x_values))
        if factor is None:
            return None
        return weight * t_value - 2.0 * float(np.sum(np.log(np.diag(factor[0])))) - float(np.sum(np.log(x_values)))

    steps = 0
    while steps < TOTAL_NEWTON_LIMIT:
        for _ in range(NEWTON_LIMIT):
            factor = _cholesky(t * bound_matrix - assembled(x))
            if factor is None:
                break
            found = _newton_step(factor[0], transposed, core_matrix, cores, bound_diagonal, x, weight,
                                 constraint, size, dimension)
            if found is None:
                break
            gradient, direction = found
            decrement = -float(gradient @ direction)
            steps += 1
            if decrement / 2.0 < CENTRED:
                break
            accepted = _line_search(objective, x, t, direction, decrement)
            if accepted is None:
                break
            x, t = accepted
        bound = degree / weight  # on the central path t − min t ≤ degree / weight
        if t - bound > 0.0:
            return BarrierResult(x, t, True, steps, weight)
        if bound < max(gap, RELATIVE_GAP * abs(t)):
            break
        weight *= GROWTH
    return BarrierResult(x, t, False, steps, weight)


def _newton_step(factor: np.ndarray, transposed: sparse.csr_matrix, core_matrix, cores: np.ndarray,
             bound_diagonal: np.ndarray, x: np.ndarray, weight: float, constraint: np.ndarray, size: int,
             dimension: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The barrier's gradient and its Newton direction under the normalisation constraint at (x, t), from the
    Cholesky factor of the slack S = t B − Σ x_k U_k D_k U_kᵀ; None when the Hessian is not positive definite."""
    inverse = _inverse(factor)  # S⁻¹
    projected = np.asarray(transposed @ inverse).T  # S⁻¹ U, [N, 2m]
    gram = np.asarray(transposed @ projected)  # Uᵀ S⁻¹ U, [2m, 2m]
    weighted = np.asarray(core_matrix @ gram)  # blockdiag(D) G
    diagonal_blocks = gram.reshape(size, 2, size, 2)[np.arange(size), :, np.arange(size), :]
    squared = np.einsum("rka,rkb->kab", projected.reshape(dimension, size, 2),
                        (bound_diagonal[:, None] * projected).reshape(dimension, size, 2))
    inverse_bound = inverse * bound_diagonal[None, :]  # S⁻¹ B
    hessian = np.empty((size + 1, size + 1))
    product = weighted * weighted.T
    rows_summed = product[0::2] + product[1::2]  # the 2 × 2 block sums, as strided adds
    hessian[:size, :size] = (rows_summed[:, 0::2] + rows_summed[:, 1::2]
                             + np.diag(1.0 / x ** 2))  # tr(D_k G_kl D_l G_lk) + 1/x²
    hessian[:size, size] = hessian[size, :size] = -np.einsum("kab,kba->k", cores, squared)
    hessian[size, size] = float(np.sum(inverse_bound * inverse_bound.T))  # tr(S⁻¹ B S⁻¹ B)
    gradient = np.concatenate([np.einsum("kab,kba->k", cores, diagonal_blocks) - 1.0 / x,
                               [weight - float(np.trace(inverse_bound))]])
    # Jacobi scaling before the factorisation: x spans orders of magnitude (p ~ 1, some λ ≪ 1)
    jacobi = 1.0 / np.sqrt(np.diag(hessian))
    newton_factor = _cholesky(jacobi[:, None] * hessian * jacobi[None, :])
    if newton_factor is None:
        return None
    solved_gradient = jacobi * linalg.cho_solve(newton_factor, jacobi * gradient, check_finite=False)
    solved_constraint = jacobi * linalg.cho_solve(newton_factor, jacobi * constraint, check_finite=False)
    multiplier = -(constraint @ solved_gradient) / (constraint @ solved_constraint)
    direction = -(solved_gradient + multiplier * solved_constraint)
    return gradient, direction


def _line_search(objective, x: np.ndarray, t: float, direction: np.ndarray, decrement: float
                 ) -> tuple[np.ndarray, float] | None:
    """Backtracking (Armijo) along the Newton direction; None when no step above ``SMALLEST_STEP`` decreases."""
    size = x.size
    current, step = objective(x, t), 1.0
    while step > SMALLEST_STEP:
        candidate_x, candidate_t = x + step * direction[:size], t + step * direction[size]
        value = objective(candidate_x, candidate_t)
        if value is not None and current is not None and value <= current - ARMIJO * step * decrement:
            return candidate_x, candidate_t
        step *= 0.5
    return None
