"""α selection, convergence certificates and the loop budget (issue 8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from block_programs import random_cycle_program
from models import AdmForm, export_onnx, seeded

from admc.cli import main
from admc.compiler.driver import BuildOptions, compile_source, load_source
from admc.core.errors import AdmcError
from admc.ir.program import CLOSED, BlockProgram, MatrixBlock, Phase
from admc.passes.alpha_problem import Linearisation, solve_global, spectral_radius
from admc.passes.alpha_selection import AlphaCapabilities, read_alpha_file, select_alpha
from admc.passes.convergence_certificates import certify_phase
from admc.passes.loop_jacobian import loop_matrix, slope_bounds
from admc.passes.solvers import SOLVER_ALIASES, SOLVERS, solver_name
from admc.passes.step_phases import build_schedule
from admc.runtime.executor import IdealExecutor
from admc.runtime.reference import canonical_solver
from admc.targets.loader import load_target

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "two_moons.onnx"


def random_program(seed: int, gain: float, hidden: tuple[int, ...] = (8, 8), d: int = 2) -> BlockProgram:
    """A pure block cycle state ← hidden_K ← … ← state (no biases, no injection)."""
    return random_cycle_program(hidden, seed, gain, d, driven=False)


# --- one solver table -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", [*SOLVERS, *SOLVER_ALIASES, "Explicit", "CRANK_NICOLSON", "Implicit_Euler"])
def test_every_command_accepts_the_same_solver_names(spelling: str) -> None:
    grid = np.linspace(0.0, 1.0, 3)
    assert build_schedule(spelling, grid).solver == canonical_solver(spelling) == solver_name(spelling)


def test_reference_and_build_accept_explicit(tmp_path: Path) -> None:
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).standard_normal((4, 2)))
    assert main(["reference", str(EXAMPLE), "--noise", str(noise), "-o", str(tmp_path / "r.npy"),
                 "--solver", "explicit", "--steps", "2"]) == 0
    assert main(["build", str(EXAMPLE), "-o", str(tmp_path / "b"), "--target", "ideal", "--solver", "explicit",
                 "--steps", "2"]) == 0
    with pytest.raises(AdmcError, match="valid solvers: explicit-euler"):
        solver_name("rk4")


# --- the convex problem and its judge ---------------------------------------------------------------------

def test_global_alpha_contracts_modes_with_negative_real_part() -> None:
    # A 2-cycle with cycle product −9: eigenvalues ±3i. No norm of |J| contracts, but α does.
    jacobian = np.array([[0.0, 3.0], [-3.0, 0.0]])
    import scipy.sparse as sparse

    part = Linearisation(sparse.csr_matrix(jacobian), np.ones((1, 2)))
    u = solve_global([part], 0.01, 1.0)
    factor = spectral_radius(sparse.csr_matrix(jacobian), np.full(2, u))
    assert factor < 1.0
    # Exact optimum of |1 − u(1 − 3i)|: u = 1/10, factor sqrt(0.9).
    assert factor == pytest.approx(np.sqrt(0.9), abs=2e-3)
    assert spectral_radius(sparse.csr_matrix(jacobian), np.ones(2)) == pytest.approx(3.0)


def test_spectral_radius_matches_dense_eigenvalues() -> None:
    program = random_program(3, 1.5)
    phase = Phase(CLOSED, 0.5, 1.0, ())
    jacobian = loop_matrix(program, phase).multiply(slope_bounds(program)[None, :]).tocsr()
    u = np.random.default_rng(1).uniform(0.2, 1.0, program.size)
    dense = np.eye(program.size) - np.diag(u) @ (np.eye(program.size) - jacobian.toarray())
    assert spectral_radius(jacobian, u) == pytest.approx(np.max(np.abs(np.linalg.eigvals(dense))), rel=1e-10)


def _compiled(tmp_path: Path, target: str, steps: int, alpha: str = "auto", solver: str = "implicit-euler",
              force: bool = False, model: Path = EXAMPLE):
    return compile_source(load_source(model), load_target(target),
                          BuildOptions(solver=solver, steps=steps, alpha=alpha, force=force))


@pytest.mark.parametrize("mode", ["auto", "global", "min"])
def test_chosen_alpha_keeps_the_fixed_point(tmp_path: Path, mode: str) -> None:
    compiled = _compiled(tmp_path, "ideal", 8, mode)
    noise = np.random.default_rng(5).standard_normal((16, 2))
    relaxed = IdealExecutor(compiled.program, compiled.alpha).run(compiled.schedule, noise).trajectory
    plain = IdealExecutor(compiled.program).run(compiled.schedule, noise).trajectory
    np.testing.assert_allclose(relaxed, plain, atol=1e-10)
    assert compiled.alpha.shape == (8, compiled.program.size)  # ideal: one row per phase
    assert np.all((compiled.alpha >= 0) & (compiled.alpha <= 0.99))


def test_auto_converges_where_min_does_not(tmp_path: Path) -> None:
    compiled = _compiled(tmp_path, "ideal", 2, "auto")
    noise = np.random.default_rng(7).standard_normal((32, 2))
    IdealExecutor(compiled.program, compiled.alpha).run(compiled.schedule, noise)  # settles
    # min's loops do not settle at T = 2: the build is refused (acceptance on fresh samples) unless forced,
    # and the forced program indeed does not settle.
    with pytest.raises(AdmcError, match=r"α \(min\): step \d+, phase 0 \(closed loop\): .* on fresh samples"):
        _compiled(tmp_path, "ideal", 2, "min")
    minimal = _compiled(tmp_path, "ideal", 2, "min", force=True)
    from admc.core.errors import ConvergenceError

    with pytest.raises(ConvergenceError):
        IdealExecutor(minimal.program, minimal.alpha, max_iterations=20_000).run(minimal.schedule, noise)
    section = compiled.convergence
    assert section["loop_budget"] is not None and section["loop_budget"] > 0
    assert section["alpha"]["acceptance"]["settled"] is True


def test_aoc_alpha_respects_the_gain_range(tmp_path: Path) -> None:
    compiled = _compiled(tmp_path, "aoc-48", 4, "auto")
    target = compiled.target
    alpha = compiled.alpha
    assert alpha.ndim == 1 and np.all(alpha >= target.alpha.min) and np.all(alpha <= target.alpha.max)
    for block in compiled.program.blocks:
        group = compiled.program.group(block.row_group)
        peaks = np.max(np.abs(block.matrix), axis=1)
        assert np.all((1.0 - alpha[group.offset:group.stop]) * peaks <= target.gain.beta_max * (1 + 1e-9))
    beta = compiled.extra_payloads["aoc/beta.npy"]
    assert beta  # gains were written for this α


def test_alpha_file_is_validated(tmp_path: Path) -> None:
    capabilities = AlphaCapabilities(0.0, 0.9, False, 0.0)
    path = tmp_path / "alpha.npy"
    np.save(path, np.full(5, 0.95))
    with pytest.raises(AdmcError, match=r"index \(0,\) is 0.95, outside"):
        read_alpha_file(path, 5, 3, capabilities)
    np.save(path, np.zeros((3, 5)))
    with pytest.raises(AdmcError, match="shape"):
        read_alpha_file(path, 5, 3, capabilities)
    np.save(path, np.full(5, 0.25))
    assert np.all(read_alpha_file(path, 5, 3, capabilities) == 0.25)


# --- certificates -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gain", [0.5, 0.6])
def test_every_certificate_bounds_the_observed_contraction(seed: int, gain: float) -> None:
    # Each certificate's own (raw) factor, where it is below 1, must bound how fast two trajectories with the
    # same drive actually approach each other: an independent check of each bound against the loop itself.
    program = random_program(seed, gain)
    phase = Phase(CLOSED, 1.0, 1.0, ())
    alpha = np.full(program.size, 0.2)
    certificate = certify_phase(program, phase, alpha, 1e-6)
    raw = {"theorem1": certificate["theorem1"], "block": certificate["block_raw"], "sdp": certificate["sdp_raw"]}
    certified = {name: value for name, value in raw.items() if value is not None and value < 1.0}
    assert certified, f"no certificate holds on this case ({raw}): the case checks nothing"
    rng = np.random.default_rng(seed)
    matrix = loop_matrix(program, phase).toarray()
    drive = rng.standard_normal(program.size)
    for start in range(3):
        first, second = rng.standard_normal((2, program.size)) * (3 + start)
        distance0 = np.linalg.norm(first - second)
        for iteration in range(1, 60):
            first = alpha * first + (1 - alpha) * (matrix @ np.tanh(first) + drive)
            second = alpha * second + (1 - alpha) * (matrix @ np.tanh(second) + drive)
            # Up to the norm-equivalence constant of each certificate's weighting (bounded here by 10).
            for rho in certified.values():
                assert np.linalg.norm(first - second) <= 10 * rho ** iteration * distance0 + 1e-12


def test_sdp_sees_damping_the_norm_bounds_cannot() -> None:
    program = random_program(1, 0.8)
    certificate = certify_phase(program, Phase(CLOSED, 1.0, 1.0, ()), np.full(program.size, 0.2), 1e-6)
    assert certificate["block"] > 1.0 > certificate["sdp_raw"]


def _steep_model(tmp_path: Path) -> Path:
    return export_onnx(seeded(AdmForm((16,)), 3, scale=6.0), tmp_path / "steep.onnx")


def test_large_lipschitz_network_is_refused_with_t_min_and_forced(tmp_path: Path) -> None:
    # tanh saturation gives large-Lipschitz networks contracting fixed points far out, where α ≤ 0.99 always
    # finds a contraction; a machine whose α stops at 0.5 cannot damp the steep loop at T = 2.
    model = _steep_model(tmp_path)
    target = tmp_path / "short-alpha.yaml"
    target.write_text("inherits: ideal\nalpha:\n  max: 0.5\n")
    with pytest.raises(AdmcError, match=r"step \d+, phase 0 \(closed loop\): .* on fresh samples; "
                                        r"T_min: (\d+) uniform steps settle") as refusal:
        _compiled(tmp_path, str(target), 2, model=model)
    t_min = int(refusal.value.args[0].split(" uniform steps")[0].split()[-1])
    assert t_min > 2
    _compiled(tmp_path, str(target), t_min, model=model)  # the suggested number of steps builds
    with pytest.raises(AdmcError, match="on fresh samples"):  # and is the fewest: one fewer is refused
        _compiled(tmp_path, str(target), t_min - 1, model=model)
    status = main(["build", str(model), "-o", str(tmp_path / "refused"), "--target", str(target), "--steps", "2"])
    assert status == 2 and not (tmp_path / "refused").exists()
    assert main(["build", str(model), "-o", str(tmp_path / "forced"), "--target", str(target), "--steps", "2",
                 "--force"]) == 0


def test_inspect_prints_certificates_and_budget(tmp_path: Path, capsys) -> None:
    assert main(["build", str(EXAMPLE), "-o", str(tmp_path / "b"), "--target", "ideal", "--steps", "4"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    assert "loop budget" in text and "Theorem 1" in text and "T_min implicit-euler" in text


def test_select_alpha_global_is_one_value_per_phase() -> None:
    program = random_program(2, 1.5)
    from admc.ir.program import tabulate_static_injection

    schedule = build_schedule("implicit-euler", np.linspace(0, 1, 3))
    program.biases = []
    program.static_table = tabulate_static_injection(program, np.array([0.5, 1.0]))
    selection = select_alpha(program, schedule, AlphaCapabilities(0.0, 0.99, True, 0.0), "global", force=True)
    for row in selection.alpha:
        assert np.unique(row).size == 1


@pytest.mark.parametrize("seed", range(3))
def test_cycle_spectrum_equals_the_dense_eigenvalues(seed: int) -> None:
    from admc.passes.alpha_cycle import block_cycle, blockwise_radius

    program = random_program(seed, 2.0, hidden=(6, 5, 7))
    phase = Phase(CLOSED, 0.5, 1.0, ())
    rng = np.random.default_rng(seed)
    slope = rng.uniform(0.1, 1.0, (2, program.size))
    cycle = block_cycle(program, phase, slope)
    assert cycle is not None and cycle.groups[0] == "state"
    group_u = rng.uniform(0.05, 1.0, len(program.groups))
    u = np.concatenate([np.full(group.size, group_u[cycle.groups.index(group.name)]) for group in program.groups])
    matrix = loop_matrix(program, phase).toarray()
    dense = max(np.max(np.abs(np.linalg.eigvals(np.eye(program.size) - np.diag(u) @ (np.eye(program.size)
                                                                                      - matrix * s[None, :]))))
                for s in slope)
    ordered = np.array([group_u[cycle.groups.index(name)] for name in cycle.groups])
    assert float(blockwise_radius(cycle, ordered)) == pytest.approx(dense, rel=1e-8)


def test_block_cycle_refuses_skip_edges() -> None:
    from admc.passes.alpha_cycle import block_cycle

    program = random_program(0, 1.0)
    program.blocks.append(MatrixBlock("hidden_1", "state", np.ones((8, 2))))
    assert block_cycle(program, Phase(CLOSED, 0.5, 1.0, ()), np.ones((1, program.size))) is None
