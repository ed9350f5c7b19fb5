"""The reference executor, the source-model runners, the signature and the schedule.

Solvers are checked against closed forms on linear velocities (where every implicit step is a linear solve)
and against each other; the runners are checked against the float64 torch module they came from.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from admc.core.errors import AdmcError, ConvergenceError
from admc.core.schedule import load_grid, time_grid
from admc.frontends.signature import identify_signature
from admc.ir.graph import GraphInput
from admc.runtime.onnx_velocity import OnnxVelocity, onnx_to_float64
from admc.runtime.reference import canonical_solver, run_reference
from admc.runtime.source_model import make_velocity
from admc.runtime.torch_velocity import TorchVelocity

# --------------------------------------------------------------------------- analytic velocities

DIMENSION = 3
GENERATOR = np.random.default_rng(20240601)
MATRIX = 0.8 * GENERATOR.standard_normal((DIMENSION, DIMENSION)) / np.sqrt(DIMENSION)
OFFSET = GENERATOR.standard_normal(DIMENSION)
NOISE = GENERATOR.standard_normal((5, DIMENSION))


def linear_velocity(matrix: np.ndarray, offset: np.ndarray):
    def velocity(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return x @ matrix.T + t[:, None] * offset[None, :]

    return velocity


def nonlinear_velocity(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.tanh(x @ MATRIX.T) + t[:, None] * OFFSET[None, :] - 0.3 * x


def closed_form_trajectory(solver: str, matrix: np.ndarray, offset: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Each linear step written out independently of the solver code: matrix inverses and explicit sums."""
    identity = np.eye(matrix.shape[0])
    states = [NOISE.copy()]
    for step in range(grid.size - 1):
        x = states[-1].T  # columns are samples
        time, later = grid[step], grid[step + 1]
        delta = later - time
        slope = matrix @ x + time * offset[:, None]
        if solver == "explicit-euler":
            y = x + delta * slope
        elif solver == "heun":
            predicted = x + delta * slope
            y = x + delta / 2 * (slope + matrix @ predicted + later * offset[:, None])
        elif solver == "implicit-euler":
            y = np.linalg.inv(identity - delta * matrix) @ (x + delta * later * offset[:, None])
        else:
            right = x + delta / 2 * slope + delta / 2 * later * offset[:, None]
            y = np.linalg.inv(identity - delta / 2 * matrix) @ right
        states.append(y.T)
    return np.stack(states)


@pytest.mark.parametrize("solver", ["explicit-euler", "heun", "implicit-euler", "crank-nicolson"])
def test_solvers_match_closed_form_on_linear_velocity(solver: str) -> None:
    grid = time_grid(grid=[0.0, 0.07, 0.2, 0.45, 0.6, 1.0])  # non-uniform on purpose
    result = run_reference(linear_velocity(MATRIX, OFFSET), NOISE, solver, grid)
    expected = closed_form_trajectory(solver, MATRIX, OFFSET, grid)
    assert result.trajectory.shape == (grid.size, *NOISE.shape)
    np.testing.assert_allclose(result.trajectory, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.samples, result.trajectory[-1])
    if solver in ("implicit-euler", "crank-nicolson"):
        assert result.residuals.shape == (grid.size - 1,)
        assert np.all(result.residuals <= 1e-12)
        assert np.all(result.fixed_point_iterations >= 2)


def test_implicit_residual_is_tight_on_nonlinear_velocity() -> None:
    grid = time_grid(steps=8)
    for solver, scale in (("implicit-euler", 1.0), ("crank-nicolson", 0.5)):
        result = run_reference(nonlinear_velocity, NOISE, solver, grid)
        for step in range(8):
            x, y = result.trajectory[step], result.trajectory[step + 1]
            delta = grid[step + 1] - grid[step]
            now, later = np.full(len(x), grid[step]), np.full(len(x), grid[step + 1])
            base = x if solver == "implicit-euler" else x + delta / 2 * nonlinear_velocity(x, now)
            # The equation checked independently of the solver's own bookkeeping.
            residual = y - base - scale * delta * nonlinear_velocity(y, later)
            assert np.max(np.abs(residual)) <= 1e-12
        assert result.residuals.max() <= 1e-12


def test_fixed_iteration_counting_follows_the_paper() -> None:
    grid = time_grid(steps=6)
    heun = run_reference(nonlinear_velocity, NOISE, "heun", grid)
    euler = run_reference(nonlinear_velocity, NOISE, "euler", grid)
    crank_nicolson_two = run_reference(nonlinear_velocity, NOISE, "cn", grid, fp_iterations=2)
    np.testing.assert_allclose(crank_nicolson_two.trajectory, heun.trajectory, rtol=0, atol=1e-14)
    for solver in ("implicit-euler", "crank-nicolson"):
        one = run_reference(nonlinear_velocity, NOISE, solver, grid, fp_iterations=1)
        np.testing.assert_array_equal(one.trajectory, euler.trajectory)
        assert one.function_evaluations == 6
    # Many iterations converge to the tightly solved step.
    many = run_reference(nonlinear_velocity, NOISE, "implicit", grid, fp_iterations=80)
    tight = run_reference(nonlinear_velocity, NOISE, "implicit-euler", grid)
    np.testing.assert_allclose(many.trajectory, tight.trajectory, rtol=0, atol=1e-12)
    assert many.function_evaluations == 6 * 80
    assert np.all(many.fixed_point_iterations == 80)
    # Three iterations of implicit Euler differ from both explicit Euler and the converged step.
    three = run_reference(nonlinear_velocity, NOISE, "implicit-euler", grid, fp_iterations=3)
    assert np.max(np.abs(three.samples - tight.samples)) > 1e-6
    assert np.max(np.abs(three.samples - euler.samples)) > 1e-6
    assert np.all(three.residuals > 1e-10)


def test_function_evaluation_counts_of_explicit_solvers() -> None:
    grid = time_grid(steps=7)
    assert run_reference(nonlinear_velocity, NOISE, "explicit-euler", grid).function_evaluations == 7
    assert run_reference(nonlinear_velocity, NOISE, "heun", grid).function_evaluations == 14


def test_newton_solves_stiff_step_where_fixed_point_diverges() -> None:
    stiff = -30.0 * np.eye(DIMENSION) + MATRIX
    grid = time_grid(steps=4)  # Δt·‖A‖ ≈ 7.5: the plain fixed-point map expands
    delta = 0.25
    assert np.max(np.abs(np.linalg.eigvals(delta * stiff))) > 1.0
    for solver in ("implicit-euler", "crank-nicolson"):
        result = run_reference(linear_velocity(stiff, OFFSET), NOISE, solver, grid)
        expected = closed_form_trajectory(solver, stiff, OFFSET, grid)
        np.testing.assert_allclose(result.trajectory, expected, rtol=0, atol=1e-12)
        assert np.all(result.newton_iterations >= 1)
        assert np.all(result.residuals <= 1e-12 * max(1.0, np.abs(result.trajectory).max()))
    # The fixed-point map alone really diverges there.
    diverging = run_reference(linear_velocity(stiff, OFFSET), NOISE, "implicit-euler", grid, fp_iterations=12)
    assert np.max(np.abs(diverging.samples)) > 1e6


def test_unsolvable_step_raises_convergence_error_naming_step() -> None:
    # y = x + Δt f(y) with f(y) = y / Δt + 1 reads 0 = x + Δt: no solution exists.
    def velocity(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return 2.0 * x + 1.0

    with pytest.raises(ConvergenceError, match=r"implicit-euler step 0 \(t = 0.5\).*residual"):
        run_reference(velocity, NOISE, "implicit-euler", time_grid(steps=2))


def test_explicit_divergence_is_reported() -> None:
    def velocity(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return 1e200 * x  # finite after step 0, overflows in step 1

    with pytest.raises(ConvergenceError, match=r"explicit-euler step 1 \(t = 1\): .*non-finite in 5 samples"):
        run_reference(velocity, NOISE, "explicit-euler", time_grid(steps=2))


def test_solver_names() -> None:
    assert canonical_solver("Euler") == "explicit-euler"
    assert canonical_solver("implicit") == "implicit-euler"
    assert canonical_solver("CN") == "crank-nicolson"
    assert canonical_solver("crank_nicolson") == "crank-nicolson"
    with pytest.raises(AdmcError, match="unknown solver 'rk4'.*explicit-euler, heun, implicit-euler, crank-nicolson"):
        canonical_solver("rk4")
    with pytest.raises(AdmcError, match="fp_iterations applies to implicit solvers"):
        run_reference(nonlinear_velocity, NOISE, "heun", time_grid(steps=2), fp_iterations=2)
    with pytest.raises(AdmcError, match="positive integer"):
        run_reference(nonlinear_velocity, NOISE, "cn", time_grid(steps=2), fp_iterations=0)


# --------------------------------------------------------------------------- schedule


def test_time_grid_uniform_and_user() -> None:
    grid = time_grid(steps=4)
    assert grid.dtype == np.float64
    np.testing.assert_array_equal(grid, [0.0, 0.25, 0.5, 0.75, 1.0])
    assert time_grid(steps=3)[1] == 1 / 3
    np.testing.assert_array_equal(time_grid(grid=[0.0, 0.1, 1.0]), [0.0, 0.1, 1.0])
    with pytest.raises(AdmcError, match="not strictly increasing at index 2"):
        time_grid(grid=[0.0, 0.5, 0.5, 1.0])
    with pytest.raises(AdmcError, match="point 1 is not finite"):
        time_grid(grid=[0.0, float("nan"), 1.0])
    with pytest.raises(AdmcError, match="at least 2 points"):
        time_grid(grid=[0.0])
    with pytest.raises(AdmcError, match="positive integer"):
        time_grid(steps=0)
    with pytest.raises(AdmcError, match="not both"):
        time_grid(steps=2, grid=[0.0, 1.0])


def test_load_grid(tmp_path: Path) -> None:
    np.save(tmp_path / "grid.npy", np.array([0.0, 0.3, 1.0]))
    np.testing.assert_array_equal(load_grid(tmp_path / "grid.npy"), [0.0, 0.3, 1.0])
    (tmp_path / "grid.txt").write_text("0\n0.5, 0.75\n1\n")
    np.testing.assert_array_equal(load_grid(tmp_path / "grid.txt"), [0.0, 0.5, 0.75, 1.0])
    (tmp_path / "bad.txt").write_text("0 0.5 0.4 1")
    with pytest.raises(AdmcError, match=r"bad.txt: .*index 2"):
        load_grid(tmp_path / "bad.txt")
    with pytest.raises(AdmcError, match="missing.npy"):
        load_grid(tmp_path / "missing.npy")


# --------------------------------------------------------------------------- signature


def test_signature_identifies_state_and_time() -> None:
    signature = identify_signature([GraphInput("t", ("B",)), GraphInput("x", ("B", 2))], "m.onnx")
    assert (signature.state_input, signature.time_input, signature.state_dimension, signature.time_rank) == (
        "x",
        "t",
        2,
        1,
    )
    column = identify_signature([GraphInput("x", ("B", 4)), GraphInput("tau", (None, 1))], "m.onnx")
    assert (column.state_input, column.time_input, column.time_rank) == ("x", "tau", 2)
    named = identify_signature([GraphInput("a", ("B", 1)), GraphInput("b", ("B",))], "m.onnx", time_input="b")
    assert (named.state_input, named.state_dimension) == ("a", 1)


def test_signature_errors_name_the_inputs() -> None:
    three = [GraphInput("a", ("B", 2)), GraphInput("b", ("B",)), GraphInput("c", ("B", 3))]
    with pytest.raises(AdmcError, match=r"model.onnx: expected 2 inputs .*found 3: a, b, c"):
        identify_signature(three, "model.onnx")
    with pytest.raises(AdmcError, match=r"neither of the inputs \(x \[B, 2\], y \[B, 3\]\).*--time-input"):
        identify_signature([GraphInput("x", ("B", 2)), GraphInput("y", ("B", 3))], "model.onnx")
    with pytest.raises(AdmcError, match="both of the inputs.*--time-input"):
        identify_signature([GraphInput("x", ("B", 1)), GraphInput("t", ("B",))], "model.onnx")
    with pytest.raises(AdmcError, match="--time-input 'tau' is not an input.*inputs are x, t"):
        identify_signature([GraphInput("x", ("B", 2)), GraphInput("t", ("B",))], "model.onnx", time_input="tau")
    with pytest.raises(AdmcError, match="state input 'x' has a dynamic feature size"):
        identify_signature([GraphInput("x", ("B", "d")), GraphInput("t", ("B",))], "model.onnx")
    with pytest.raises(AdmcError, match=r"time input 'x' has shape \[B, 2\]"):
        identify_signature([GraphInput("x", ("B", 2)), GraphInput("t", ("B",))], "model.onnx", time_input="x")


# --------------------------------------------------------------------------- source model runners


class TanhMlp(torch.nn.Module):
    """Concat([x, t]) → Linear → tanh → Linear → tanh → Linear; ``column_time`` takes t as [B, 1]."""

    def __init__(self, dimension: int = 2, hidden: int = 16, column_time: bool = False) -> None:
        super().__init__()
        self.column_time = column_time
        self.first = torch.nn.Linear(dimension + 1, hidden)
        self.middle = torch.nn.Linear(hidden, hidden)
        self.last = torch.nn.Linear(hidden, dimension)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        time = t if self.column_time else t.unsqueeze(-1)
        hidden = torch.tanh(self.first(torch.cat([x, time], dim=-1)))
        return self.last(torch.tanh(self.middle(hidden)))


def make_mlp(column_time: bool = False) -> TanhMlp:
    torch.manual_seed(7)
    return TanhMlp(column_time=column_time).eval()


def example(module: TanhMlp, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1))
    t = torch.rand(batch, generator=torch.Generator().manual_seed(2))
    return x, (t.unsqueeze(-1) if module.column_time else t)


def export_onnx(module: TanhMlp, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            module,
            example(module),
            str(path),
            input_names=["x", "t"],
            output_names=["velocity"],
            dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "velocity": {0: "B"}},
            dynamo=False,
        )
    return path


def export_pt2(module: TanhMlp, path: Path) -> Path:
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, example(module), dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "onnx": export_onnx(make_mlp(), folder / "mlp.onnx"),
        "pt2": export_pt2(make_mlp(), folder / "mlp.pt2"),
        "onnx_column": export_onnx(make_mlp(column_time=True), folder / "mlp_column.onnx"),
        "pt2_column": export_pt2(make_mlp(column_time=True), folder / "mlp_column.pt2"),
    }


STATES = np.random.default_rng(3).standard_normal((9, 2))
TIMES = np.random.default_rng(4).uniform(0, 1, 9)


def module_in_float64(column_time: bool = False) -> np.ndarray:
    module = make_mlp(column_time).double()
    t = torch.from_numpy(TIMES)
    with torch.no_grad():
        return module(torch.from_numpy(STATES), t.unsqueeze(-1) if column_time else t).numpy()


def test_onnx_and_torch_runners_agree_in_float64(models: dict[str, Path]) -> None:
    expected = module_in_float64()
    onnx_velocity = make_velocity(models["onnx"])
    torch_velocity = make_velocity(models["pt2"])
    assert isinstance(onnx_velocity, OnnxVelocity) and isinstance(torch_velocity, TorchVelocity)
    from_onnx = onnx_velocity(STATES, TIMES)
    from_torch = torch_velocity(STATES, TIMES)
    assert from_onnx.dtype == np.float64 and from_torch.dtype == np.float64
    np.testing.assert_allclose(from_onnx, from_torch, rtol=0, atol=1e-12)
    np.testing.assert_allclose(from_onnx, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(from_torch, expected, rtol=0, atol=1e-12)
    live = TorchVelocity(make_mlp(), example_inputs=example(make_mlp()))
    np.testing.assert_allclose(live(STATES, TIMES), expected, rtol=0, atol=1e-12)
    assert not torch_velocity.precision_loss


def test_onnx_runner_really_runs_in_float64(models: dict[str, Path]) -> None:
    expected = module_in_float64()
    in_double = OnnxVelocity(models["onnx"])(STATES, TIMES)
    in_single = OnnxVelocity(models["onnx"], float64=False)(STATES, TIMES)
    single_error = np.max(np.abs(in_single - expected))
    double_error = np.max(np.abs(in_double - expected))
    assert 1e-9 < single_error < 1e-5
    assert double_error < 1e-14


def test_time_as_column_works(models: dict[str, Path]) -> None:
    expected = module_in_float64(column_time=True)
    for key in ("onnx_column", "pt2_column"):
        velocity = make_velocity(models[key])
        assert velocity.signature is not None and velocity.signature.time_rank == 2
        np.testing.assert_allclose(velocity(STATES, TIMES), expected, rtol=0, atol=1e-12)
    assert make_velocity(models["onnx"]).signature.time_rank == 1


def test_reference_runs_agree_across_runners(models: dict[str, Path]) -> None:
    noise = np.random.default_rng(5).standard_normal((6, 2))
    for solver in ("heun", "crank-nicolson"):
        from_onnx = run_reference(models["onnx"], noise, solver, 5)
        from_torch = run_reference(models["pt2"], noise, solver, 5)
        np.testing.assert_allclose(from_onnx.trajectory, from_torch.trajectory, rtol=0, atol=1e-12)
    with pytest.raises(AdmcError, match="noise has 3 features.*'x' has 2"):
        run_reference(models["onnx"], np.zeros((2, 3)), "heun", 2)


def test_torch_jacobian_matches_finite_differences(models: dict[str, Path]) -> None:
    velocity = make_velocity(models["pt2"])
    jacobian = velocity.jacobian(STATES, TIMES)
    step = 1e-6
    for feature in range(2):
        shift = np.zeros(2)
        shift[feature] = step
        column = (velocity(STATES + shift, TIMES) - velocity(STATES - shift, TIMES)) / (2 * step)
        np.testing.assert_allclose(jacobian[:, :, feature], column, rtol=0, atol=1e-8)


def test_onnx_conversion_covers_casts_and_constants(tmp_path: Path) -> None:
    weights = np.random.default_rng(6).standard_normal((2, 2)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["x"], ["x_cast"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x_cast", "weights"], ["product"]),
        helper.make_node("Constant", [], ["gain"], value_float=0.3),
        helper.make_node("Mul", ["t", "gain"], ["scaled"]),
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([1], dtype=np.int64))),
        helper.make_node("Unsqueeze", ["scaled", "axes"], ["column"]),
        helper.make_node("Add", ["product", "column"], ["velocity"]),
    ]
    graph = helper.make_graph(
        nodes,
        "handmade",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 2]),
            helper.make_tensor_value_info("t", TensorProto.FLOAT, ["B"]),
        ],
        [helper.make_tensor_value_info("velocity", TensorProto.FLOAT, ["B", 2])],
        [numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path / "handmade.onnx"
    onnx.save(model, str(path))
    converted = onnx_to_float64(model)
    assert converted.graph.initializer[0].data_type == TensorProto.DOUBLE
    assert converted.graph.node[0].attribute[0].i == TensorProto.DOUBLE
    expected = STATES @ weights.astype(np.float64) + float(np.float32(0.3)) * TIMES[:, None]
    np.testing.assert_allclose(OnnxVelocity(path)(STATES, TIMES), expected, rtol=0, atol=1e-15)
    assert np.max(np.abs(OnnxVelocity(path, float64=False)(STATES, TIMES) - expected)) > 1e-10
    assert model.graph.initializer[0].data_type == TensorProto.FLOAT  # the input model is left untouched


def test_exported_float32_factories_are_rewritten_to_float64() -> None:
    class WithRamp(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            ramp = torch.arange(2, dtype=torch.float32) * 0.1
            return x * t.unsqueeze(-1) + ramp

    batch = torch.export.Dim("batch")
    program = torch.export.export(WithRamp(), example(make_mlp()), dynamic_shapes=({0: batch}, {0: batch}))
    result = TorchVelocity(program)(STATES, TIMES)
    expected = STATES * TIMES[:, None] + np.arange(2) * 0.1
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-15)


def test_float32_module_output_is_flagged() -> None:
    class Single(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return (x * t.unsqueeze(-1)).float()

    velocity = TorchVelocity(Single())
    with pytest.warns(RuntimeWarning, match="float32"):
        result = velocity(STATES, TIMES)
    assert velocity.precision_loss and velocity.output_dtype == torch.float32
    assert result.dtype == np.float64


def test_unreadable_models_name_the_path(tmp_path: Path, models: dict[str, Path]) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(models["onnx"].read_bytes()[:200])
    with pytest.raises(AdmcError, match="truncated.onnx"):
        make_velocity(truncated)
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(models["pt2"].read_bytes()[:300])
    with pytest.raises(AdmcError, match="broken.pt2"):
        make_velocity(broken)
    with pytest.raises(AdmcError, match="unknown model format '.bin'"):
        (tmp_path / "model.bin").write_bytes(b"x")
        make_velocity(tmp_path / "model.bin")
    with pytest.raises(AdmcError, match="no such model file"):
        make_velocity(tmp_path / "absent.onnx")
