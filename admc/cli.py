"""The ``admc`` command line: build, inspect, reference, simulate, verify.

Exit status: 0 success (verify: passed), 1 verify failed, 2 bad input (one line on stderr naming what is
wrong and where; no traceback; nothing half-written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from admc.errors import AdmcError


def _load_noise(path: str) -> np.ndarray:
    try:
        noise = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise AdmcError(f"{path}: cannot read noise array ({error})") from None
    if noise.ndim != 2 or not np.issubdtype(noise.dtype, np.number) or not np.all(np.isfinite(noise)):
        raise AdmcError(f"{path}: noise must be a finite numeric [B, d] array, got shape {noise.shape}")
    return noise.astype(np.float64)


def _save_array(path: str, array: np.ndarray) -> None:
    """Write via a temporary file and rename, so a failure leaves no partial output."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.partial.npy")
    np.save(temporary, array, allow_pickle=False)
    temporary.replace(target)


def _grid_arguments(parser: argparse.ArgumentParser) -> None:
    from admc.passes.solvers import SOLVER_ALIASES, SOLVERS

    parser.add_argument("--solver", default="implicit-euler",
                        help=f"{' | '.join(SOLVERS)} (aliases: {', '.join(SOLVER_ALIASES)}; default implicit-euler)")
    parser.add_argument("--steps", type=int, default=16, help="uniform grid t_n = n/T (default 16)")
    parser.add_argument("--grid", help="a .npy or .txt file of time points (overrides --steps)")
    parser.add_argument("--fp-iterations", type=int, help="fixed-point iterations per implicit step, the "
                        "explicit-Euler warm start counted as the first")
    parser.add_argument("--time-input", help="name of the model's time input")


def _grid(arguments: argparse.Namespace):
    from admc.schedule import load_grid

    return load_grid(arguments.grid) if arguments.grid else None


def command_build(arguments: argparse.Namespace) -> int:
    from admc.driver import build
    from admc.passes.manager import PassManager

    passes = PassManager(verify=arguments.verify_passes, dump_directory=arguments.dump_ir)
    path = build(arguments.model, arguments.output, target=arguments.target, solver=arguments.solver,
                 steps=arguments.steps, grid=_grid(arguments), time_input=arguments.time_input,
                 fp_iterations=arguments.fp_iterations, layout=arguments.layout, passes=passes,
                 alpha=arguments.alpha, force=arguments.force)
    if arguments.timings or arguments.verify_passes:
        print(passes.table(), file=sys.stderr)
    print(f"wrote {path}")
    return 0


def command_inspect(arguments: argparse.Namespace) -> int:
    from admc.bundle import Bundle
    from admc.inspect_bundle import describe, summary

    bundle = Bundle(arguments.bundle)
    if arguments.json:
        print(json.dumps(summary(bundle), indent=1, sort_keys=True))
    else:
        print(describe(bundle))
    return 0


def command_reference(arguments: argparse.Namespace) -> int:
    from admc.reference import integrate
    from admc.schedule import time_grid
    from admc.source_model import make_velocity

    noise = _load_noise(arguments.noise)
    velocity = make_velocity(arguments.model, time_input=arguments.time_input)
    grid = _grid(arguments)
    times = time_grid(steps=None if grid is not None else arguments.steps, grid=grid)
    result = integrate(velocity, noise, arguments.solver, times, arguments.fp_iterations)
    _save_array(arguments.output, result.samples)
    residual = float(np.max(result.residuals, initial=0.0))
    print(f"{result.solver}: {len(times) - 1} steps, {result.function_evaluations} batched evaluations, "
          f"max implicit residual {residual:.3e}; wrote {arguments.output}")
    return 0


def command_simulate(arguments: argparse.Namespace) -> int:
    from admc.bundle import Bundle
    from admc.bundle_program import bundle_program
    from admc.executor import IdealExecutor
    from admc.passes.loop_budget import bundle_loop_budget

    bundle = Bundle(arguments.bundle)
    noise = _load_noise(arguments.noise)
    if arguments.loop_iterations is None and not arguments.ideal:
        # The twin runs the program's loop budget; the ideal executor iterates to its exact tolerance.
        arguments.loop_iterations = bundle_loop_budget(bundle.manifest)
    if arguments.ideal:
        program, schedule, alpha = bundle_program(bundle)
        if noise.shape[1] != program.state_dimension:
            raise AdmcError(f"{arguments.noise}: noise has {noise.shape[1]} features, the program's state "
                            f"has {program.state_dimension}")
        result = IdealExecutor(program, alpha, loop_iterations=arguments.loop_iterations).run(schedule, noise)
        samples = result.trajectory[-1]
        iterations = [sum(phases) for phases in result.iterations]
        print(f"ideal: {len(schedule.steps)} steps, loop iterations per step {min(iterations)}–"
              f"{max(iterations)}")
    else:
        from admc.targets.aoc.twin_cli import simulate_twin

        samples = simulate_twin(bundle, noise, arguments)
    _save_array(arguments.output, samples)
    print(f"wrote {arguments.output}")
    return 0


def command_verify(arguments: argparse.Namespace) -> int:
    from admc.bundle import Bundle
    from admc.passes.loop_budget import bundle_loop_budget
    from admc.verify import verify_bundle
    from admc.verify_report import write_report

    bundle = Bundle(arguments.bundle)
    loop_iterations = arguments.loop_iterations
    if loop_iterations is None:
        loop_iterations = bundle_loop_budget(bundle.manifest)
    twin_options = {"mode": arguments.twin_mode, "loop_iterations": loop_iterations,
                    "repeats": arguments.repeats}
    if arguments.calibration:
        from admc.targets.aoc.calibration import read_calibration

        twin_options["calibration"] = read_calibration(arguments.calibration)

    def progress(message: str) -> None:
        print(f"admc verify: {message}…", file=sys.stderr, flush=True)

    report = verify_bundle(bundle, arguments.samples, arguments.seed, arguments.tolerance,
                           twin=not arguments.no_twin, twin_options=twin_options, twin_ratio=arguments.twin_ratio,
                           twin_nrmse=arguments.twin_nrmse, progress=progress)
    samples, histories = report.pop("_samples"), report.pop("_histories")
    for key in [key for key in report if key.startswith("_")]:
        report.pop(key)
    for link in report["links"]:
        status = "PASS" if link["passed"] else "FAIL"
        if link["tolerance"] is None:
            status, bound = "INFO", "informative"
        else:
            bound = f"tolerance {link['tolerance']:.1e}"
        print(f"{status}  {link['link']}: {link['criterion'].replace('_', ' ')} {link['measured']:.3e} "
              f"({bound}), max abs error {link['max_abs_error']:.3e}")
    for name, values in report.get("distributions", {}).items():
        print(f"      {name}: MMD² {values['mmd']:.3e}, W2 {values['wasserstein2']:.4f}")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(report, indent=1, sort_keys=True, allow_nan=False) + "\n")
    if arguments.report:
        write_report(arguments.report, report, samples, histories)
        print(f"wrote {arguments.report}/ (verify.json, report.md, samples.png, nrmse.png, residuals.png)")
    print("verification " + ("passed" if report["passed"] else "FAILED"))
    return 0 if report["passed"] else 1


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="admc", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="compile a model into a program bundle")
    build.add_argument("model", help="an .onnx or .pt2 file")
    build.add_argument("-o", "--output", required=True, help="bundle directory to write")
    build.add_argument("--target", default="aoc-48", help="ideal | aoc | aoc-48 | aoc-16 | FILE.yaml")
    build.add_argument("--layout", default="auto", choices=["packed", "ring", "auto"])
    build.add_argument("--timings", action="store_true", help="print each pass's time")
    build.add_argument("--verify-passes", action="store_true",
                       help="check after each pass that the semantics survived (within the pass's bound)")
    build.add_argument("--dump-ir", metavar="DIR", help="write a JSON summary of the IR after each pass")
    build.add_argument("--alpha", default="auto", metavar="auto|global|min|FILE",
                       help="skip fractions α: auto (channel-wise convex program, default), global (one α per "
                       "phase), min (smallest α the gain range allows), or a .npy table [n] (or [phases, n])")
    build.add_argument("--force", action="store_true",
                       help="build even when no α in range makes a closed loop contract")
    _grid_arguments(build)
    build.set_defaults(handler=command_build)

    inspect = commands.add_parser("inspect", help="describe a bundle")
    inspect.add_argument("bundle")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=command_inspect)

    reference = commands.add_parser("reference", help="run the source model with a solver (float64)")
    reference.add_argument("model")
    reference.add_argument("--noise", required=True, help=".npy [B, d] initial samples")
    reference.add_argument("-o", "--output", required=True)
    _grid_arguments(reference)
    reference.set_defaults(handler=command_reference)

    simulate = commands.add_parser("simulate", help="execute a bundle")
    simulate.add_argument("bundle")
    simulate.add_argument("--noise", required=True)
    simulate.add_argument("-o", "--output", required=True)
    simulate.add_argument("--ideal", action="store_true", help="exact float64 execution of the program")
    simulate.add_argument("--loop-iterations", type=int, help="fixed loop-iteration budget per closed phase "
                          "(default: the bundle's loop budget)")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--calibration", help="a measured machine's calibration file (FIELDS.md format) for "
                          "the twin's device figures")
    simulate.set_defaults(handler=command_simulate)

    verify = commands.add_parser("verify", help="compare a bundle against its source model")
    verify.add_argument("bundle")
    verify.add_argument("--samples", type=int, default=256)
    verify.add_argument("--seed", type=int, default=0)
    verify.add_argument("--tolerance", type=float, help="relative tolerance of the program link")
    verify.add_argument("--json", help="write the report as JSON")
    verify.add_argument("--report", help="directory for verify.json, report.md and PNG plots")
    verify.add_argument("--no-twin", action="store_true", help="check only source ≡ canonical ≡ ideal program")
    verify.add_argument("--twin-mode", default="discrete", choices=["discrete", "continuous"])
    verify.add_argument("--loop-iterations", type=int, help="twin loop iterations per closed phase (default: the "
                        "bundle's loop budget)")
    verify.add_argument("--repeats", type=int, help="twin repeats averaged per readout (default: target's)")
    verify.add_argument("--twin-ratio", type=float, default=0.5,
                        help="pass if W2(twin, reference) ≤ this × W2(Gaussian fit, reference) (default 0.5)")
    verify.add_argument("--twin-nrmse", type=float, help="also require the twin's per-step NRMSE ≤ this")
    verify.add_argument("--calibration", help="a measured machine's calibration file (FIELDS.md format) for "
                        "the twin's device figures")
    verify.set_defaults(handler=command_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    arguments = parser.parse_args(argv)
    try:
        return arguments.handler(arguments)
    except AdmcError as error:
        print(f"admc: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("admc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
