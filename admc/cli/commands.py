"""The ``admc`` command line: build, inspect, estimate, reference, simulate, verify, finetune.

Exit status: 0 success (verify: passed), 1 verify failed, 2 bad input (one line on stderr naming what is
wrong and where; no traceback; nothing half-written), 70 internal error (one line naming a saved traceback);
see ``admc.cli.errors``. Options are validated while parsing (``admc.cli.options``), before any work.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

import numpy as np

from admc.cli import options as option
from admc.cli.errors import OneLineParser, banners_to_stderr, run
from admc.core import limits
from admc.core.atomic import write_file_atomically
from admc.core.errors import AdmcError
from admc.core.precision import PRECISIONS


def _load_noise(path: str) -> np.ndarray:
    from admc.core.array_files import read_npy

    return read_npy(path, "noise array", dimensions=2)


def _save_array(path: str, array: np.ndarray) -> None:
    from admc.bundle.store import npy_bytes

    write_file_atomically(path, npy_bytes(array))


def _require_run_memory(batch: int, steps: int, channels: int, repeats: int = 1, what: str = "the run") -> None:
    """Trajectories of every executor ([steps + 1, batch, channels] float64, a few of them) and the twin's
    repeated state must fit the memory limit; refused before they are allocated."""
    trajectories = 8.0 * (steps + 1) * batch * channels * 4
    repeated = 8.0 * batch * channels * repeats * 8
    limits.require_memory(trajectories + repeated, f"{what} ({batch} samples × {steps} steps × {channels} "
                          f"channels × {repeats} repeats)")


def _grid_arguments(parser: argparse.ArgumentParser) -> None:
    option.schedule_arguments(parser, "the target's; implicit-euler for the reference")
    parser.add_argument("--grid", metavar="FILE", help="a .npy or .txt file of time points (overrides --steps)")
    parser.add_argument("--time-input", metavar="NAME",
                        help="name of the model's time input, when admc cannot tell which input is t")


def _grid(arguments: argparse.Namespace):
    from admc.core.schedule import load_grid

    return load_grid(arguments.grid) if arguments.grid else None


def command_build(arguments: argparse.Namespace) -> int:
    from admc.cli.progress import BuildProgress
    from admc.passes.manager import PassManager

    grid = _grid(arguments)
    steps = len(grid) - 1 if grid is not None else arguments.steps
    if steps * ((arguments.fp_iterations or 1) + 1) > limits.PHASES:
        raise AdmcError(f"--steps × --fp-iterations: {steps} steps of up to {(arguments.fp_iterations or 1) + 1} "
                        f"phases exceed the limit of {limits.PHASES} phases per program")
    with BuildProgress(quiet=arguments.quiet) as progress, banners_to_stderr():
        from admc.compiler.driver import build  # the compiler's imports, under the progress line

        passes = PassManager(verify=arguments.verify_passes, dump_directory=arguments.dump_ir, observer=progress)
        path = build(arguments.model, arguments.output, target=arguments.target, solver=arguments.solver,
                     steps=arguments.steps, grid=grid, time_input=arguments.time_input,
                     fp_iterations=arguments.fp_iterations, layout=arguments.layout, passes=passes,
                     calibration=arguments.calibration, condition_inputs=arguments.condition or (),
                     guidance=arguments.guidance, null_conditions=arguments.null_condition,
                     distributions=arguments.condition_distribution, alpha=arguments.alpha,
                     force=arguments.force)
    if arguments.timings or arguments.verify_passes:
        print(passes.table(), file=sys.stderr)
    print(f"wrote {path}")
    return 0


def command_inspect(arguments: argparse.Namespace) -> int:
    from admc.api.bundle_handle import load

    bundle = load(arguments.bundle)
    print(json.dumps(bundle.inspect(), indent=1, sort_keys=True) if arguments.json else bundle.describe())
    return 0


def command_estimate(arguments: argparse.Namespace) -> int:
    from admc.bundle.program import check_loaded_files
    from admc.bundle.store import Bundle
    from admc.estimate.cost import assert_finite, estimate
    from admc.estimate.report import describe

    bundle = Bundle(arguments.bundle)
    check_loaded_files(bundle)
    target = None
    if arguments.target:
        from admc.targets.loader import load_target

        target = load_target(arguments.target)
    result = estimate(bundle, target, arguments.iterations, arguments.loop_iterations, arguments.baseline_steps)
    assert_finite(result)
    print(json.dumps(result, indent=1, sort_keys=True, allow_nan=False) if arguments.json else describe(result))
    return 0


def command_reference(arguments: argparse.Namespace) -> int:
    from admc.core.schedule import time_grid
    from admc.runtime.condition_options import load_condition_files
    from admc.runtime.reference import run_reference

    noise = _load_noise(arguments.noise)
    grid = _grid(arguments)
    times = time_grid(steps=None if grid is not None else arguments.steps, grid=grid)
    _require_run_memory(noise.shape[0], len(times) - 1, noise.shape[1], what="the reference run")
    result = run_reference(arguments.model, noise, arguments.solver or "implicit-euler", times,
                           arguments.fp_iterations, arguments.time_input,
                           load_condition_files(arguments.condition or []), arguments.guidance,
                           arguments.null_condition)
    _save_array(arguments.output, result.samples)
    residual = float(np.max(result.residuals, initial=0.0))
    print(f"{result.solver}: {len(times) - 1} steps, {result.function_evaluations} batched evaluations, "
          f"max implicit residual {residual:.3e}; wrote {arguments.output}")
    return 0


def command_simulate(arguments: argparse.Namespace) -> int:
    from admc.api.bundle_handle import load
    from admc.runtime.condition_options import load_condition_files

    bundle = load(arguments.bundle)
    noise = _load_noise(arguments.noise)
    manifest = bundle.manifest
    if noise.shape[1] != manifest["source"]["state_dimension"]:
        raise AdmcError(f"{arguments.noise}: noise has shape {list(noise.shape)}; the bundle's state has "
                        f"{manifest['source']['state_dimension']} features")
    _require_run_memory(noise.shape[0], len(manifest["phases"]), manifest["layout"]["size"],
                        getattr(getattr(bundle.target, "timing", None), "repeats", 1), "the simulation")
    if arguments.ideal and arguments.precision != "float64":
        raise AdmcError("--precision: the ideal execution is exact float64; drop --precision or --ideal")
    run = bundle.run(noise, load_condition_files(arguments.condition or []), arguments.ideal,
                     arguments.calibration, arguments.seed, arguments.guidance, arguments.loop_iterations,
                     arguments.precision)
    print(run.description)
    _save_array(arguments.output, run.samples)
    print(f"wrote {arguments.output}")
    return 0


def _print_verification(report: dict) -> None:
    for link in report["links"]:
        status = "PASS" if link["passed"] else "FAIL"
        if link["tolerance"] is None:
            status, bound = "INFO", "informative"
        else:
            bound = f"tolerance {link['tolerance']:.1e}"
        if link["criterion"] == "unsettled_fraction":
            phases = link["per_step_nrmse"]
            print(f"{status}  {link['link']}: {link['measured']:.3g} (must be 0); {len(phases)} closed phases, "
                  f"{sum(value > 0 for value in phases)} with samples not settled")
            continue
        print(f"{status}  {link['link']}: {link['criterion'].replace('_', ' ')} {link['measured']:.3e} "
              f"({bound}), max abs error {link['max_abs_error']:.3e}")
    for name, values in report["distributions"].items():
        print(f"      {name}: MMD² {values['mmd']:.3e}, W2 {values['wasserstein2']:.4f}")
    for row in report["per_class"]:
        twin = f", twin W2 ratio {row['twin_w2_ratio']:.3f}" if "twin_w2_ratio" in row else ""
        print(f"{'PASS' if row['passed'] else 'FAIL'}  class {row['class']} ({row['samples']} samples): ideal "
              f"relative error {row['ideal_relative_error']:.3e}{twin}")


def command_verify(arguments: argparse.Namespace) -> int:
    from tqdm import tqdm

    from admc.api.bundle_handle import load
    from admc.verify.report import write_report

    bundle = load(arguments.bundle)
    manifest = bundle.manifest
    # Repeated readouts multiply the twin's memory on targets that declare them.
    repeats = arguments.repeats or getattr(getattr(bundle.target, "timing", None), "repeats", 1)
    _require_run_memory(arguments.samples, len(manifest["phases"]), manifest["layout"]["size"], repeats,
                        "verification")
    # A status line on a terminal only (tqdm disables itself when stderr is not a TTY), cleared when done.
    status = tqdm(desc="admc verify", bar_format="{desc}: {postfix}", file=sys.stderr, disable=None, leave=False)
    verify = bundle.verify
    if arguments.workers is not None or arguments.address:  # samples sharded over Ray (the sweep extra)
        from admc.sweep.verify_shards import verify_on_ray

        verify = functools.partial(verify_on_ray, bundle.path, workers=arguments.workers, address=arguments.address)
    try:
        result = verify(arguments.samples, arguments.seed, arguments.tolerance, not arguments.no_twin,
                        arguments.calibration, arguments.loop_iterations, arguments.twin_mode,
                        arguments.repeats, arguments.twin_ratio, arguments.twin_nrmse,
                        progress=status.set_postfix_str)
    finally:
        status.close()
    report = result.to_json()
    _print_verification(report)
    if arguments.json:
        write_file_atomically(arguments.json, (json.dumps(report, indent=1, sort_keys=True, allow_nan=False)
                                               + "\n").encode("utf-8"))
    if arguments.report:
        write_report(arguments.report, result)
        print(f"wrote {arguments.report}/ (verify.json, report.md, samples.png, nrmse.png, residuals.png)")
    print("verification " + ("passed" if result.passed else "FAILED"))
    return 0 if result.passed else 1


VERIFY_OUTPUT = ("Prints one line per link (PASS, FAIL, or INFO for a figure reported, not judged), then each sample "
                 "set's distance to the reference samples: MMD² is the unbiased estimator of the squared maximum "
                 "mean discrepancy, around zero and possibly negative when two sets are closer than sampling noise "
                 "resolves; W2 is the exact Wasserstein-2 distance. Exit 0 when every link holds, 1 when one fails.")


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="admc", description=__doc__.splitlines()[0])
    parser.add_argument("--max-memory", type=option.memory_size, metavar="SIZE", default=limits.default_max_memory(),
                        help="refuse work estimated to need more memory than this, e.g. 8G (default: ¾ of "
                        "physical memory, at most 16G)")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="compile a model into a program bundle")
    build.add_argument("model", help="an .onnx or .pt2 file meeting the model contract (docs/models.md)")
    build.add_argument("-o", "--output", required=True, type=option.output_bundle, metavar="BUNDLE",
                       help="bundle directory to write (an existing bundle there is replaced atomically)")
    build.add_argument("--target", default="aoc-48", metavar="TARGET",
                       help="ideal | aoc | aoc-48 | aoc-16 | rram | rram-128 | "
                       "FILE.yaml")
    build.add_argument("--layout", default="auto", choices=["packed", "ring", "auto"],
                       help="how tiles are placed on an AOC's modules (default auto)")
    build.add_argument("--calibration", metavar="hw48|hw16|FILE",
                       help="compile for this measured machine: hw48, hw16 or a calibration file "
                       "(the makers' format): dead ports avoided, transfer/efficiency/gain compensated, offsets "
                       "cancelled")
    build.add_argument("--timings", action="store_true", help="print each pass's time and peak memory")
    build.add_argument("-q", "--quiet", action="store_true",
                       help="no progress line (it is shown only when stderr is a terminal)")
    build.add_argument("--verify-passes", action="store_true",
                       help="check after each pass that the semantics survived (within the pass's bound)")
    build.add_argument("--dump-ir", metavar="DIR", type=option.new_directory,
                       help="write a JSON summary of the IR after each pass")
    build.add_argument("--alpha", default="auto", metavar="auto|global|min|FILE",
                       help="skip fractions α: auto (channel-wise, by cone programs, judged by measured iterations; "
                       "default), global (one α per phase), min (smallest α the limits allow), or a .npy table "
                       "[n] (or [phases, n])")
    build.add_argument("--force", action="store_true",
                       help="build even when the closed loops do not settle on fresh samples with the α chosen")
    _grid_arguments(build)
    build.add_argument("--condition", action="append", metavar="NAME",
                       help="a condition input (class index, condition vector, guidance scale); repeatable")
    build.add_argument("--guidance", type=float, metavar="W", help="classifier-free guidance weight: the loop "
                       "runs (1 + W)·f(x, t, c) − W·f(x, t, ∅)")
    build.add_argument("--null-condition", action="append", metavar="NAME=VALUE",
                       help="the unconditional input for --guidance (a class index or 'zeros'); repeatable")
    build.add_argument("--condition-distribution", action="append", metavar="NAME=SPEC",
                       help="how verify draws a condition: uniform:K (class index), one-hot:K or normal")
    build.set_defaults(handler=command_build)

    inspect = commands.add_parser("inspect", help="describe a bundle")
    inspect.add_argument("bundle", help="a bundle directory")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON (Bundle.inspect() in Python)")
    inspect.set_defaults(handler=command_inspect)

    estimate = commands.add_parser("estimate", help="latency and energy per sample beside a digital baseline")
    estimate.add_argument("bundle", help="a bundle directory")
    estimate.add_argument("--target", metavar="TARGET",
                          help="take the figures from this description (preset or YAML of the same "
                          "kind, e.g. an override with `inherits:`) instead of the bundle's")
    estimate.add_argument("--iterations", default="budget", choices=["budget", "measured", "certified"],
                          help="closed-phase iterations: the loop budget the twin runs (default), the measured "
                          "or the certified counts of the manifest's convergence section")
    estimate.add_argument("--loop-iterations", type=option.LOOP_ITERATIONS, metavar="N",
                          help="fixed iterations per closed phase (overrides --iterations)")
    estimate.add_argument("--baseline-steps", type=option.STEPS, metavar="T",
                          help="explicit-Euler steps of the digital baseline (default: the program's steps)")
    estimate.add_argument("--json", action="store_true", help="print the estimate as JSON")
    estimate.set_defaults(handler=command_estimate)

    reference = commands.add_parser("reference", help="run the source model with a solver (float64)")
    reference.add_argument("model", help="an .onnx or .pt2 file")
    reference.add_argument("--noise", required=True, metavar="X0.npy", help=".npy [B, d] initial samples")
    reference.add_argument("-o", "--output", required=True, type=option.output_file, metavar="OUT.npy",
                           help="where to write the final samples [B, d]")
    _grid_arguments(reference)
    reference.add_argument("--condition", action="append", metavar="NAME=FILE.npy",
                           help="per-sample values of a condition input; repeatable")
    reference.add_argument("--guidance", type=float, metavar="W", help="classifier-free guidance weight")
    reference.add_argument("--null-condition", action="append", metavar="NAME=VALUE",
                           help="the unconditional input for --guidance (a class index or 'zeros')")
    reference.set_defaults(handler=command_reference)

    simulate = commands.add_parser("simulate", help="execute a bundle")
    simulate.add_argument("bundle", help="a bundle directory")
    simulate.add_argument("--noise", required=True, metavar="X0.npy", help=".npy [B, d] initial samples")
    simulate.add_argument("-o", "--output", required=True, type=option.output_file, metavar="OUT.npy",
                          help="where to write the final samples [B, d]")
    simulate.add_argument("--ideal", action="store_true", help="exact float64 execution of the program")
    simulate.add_argument("--loop-iterations", type=option.LOOP_ITERATIONS, metavar="N",
                          help="fixed loop-iteration budget per closed phase (default: the bundle's loop budget)")
    simulate.add_argument("--seed", type=option.SEED, default=0, metavar="S",
                          help="seed of the twin's noise (default 0)")
    simulate.add_argument("--calibration", metavar="hw48|hw16|FILE",
                          help="a measured machine for the twin's device figures: "
                          "hw48, hw16 or a calibration file (the makers' format)")
    simulate.add_argument("--condition", action="append", metavar="NAME=FILE.npy",
                          help="per-sample values of a condition input; repeatable")
    simulate.add_argument("--guidance", type=float, metavar="W",
                          help="run-time guidance weight (bundles whose W is in the gains)")
    simulate.add_argument("--precision", choices=PRECISIONS, default="float64",
                          help="the twin's arithmetic: float32 runs large programs about 1.7x faster; verify and "
                               "--ideal stay float64 (default float64)")
    simulate.set_defaults(handler=command_simulate)

    verify = commands.add_parser("verify", help="compare a bundle against its source model", description=VERIFY_OUTPUT)
    verify.add_argument("bundle", help="a bundle directory")
    verify.add_argument("--samples", type=option.SAMPLES, default=256, metavar="N",
                        help="samples drawn from the noise (default 256)")
    verify.add_argument("--seed", type=option.SEED, default=0, metavar="S",
                        help="seed of the noise and the twin (default 0)")
    verify.add_argument("--tolerance", type=option.positive_float(), metavar="X",
                        help="relative tolerance of the program link")
    verify.add_argument("--json", type=option.output_file, metavar="R.json", help="write the report as JSON")
    verify.add_argument("--report", type=option.output_report, metavar="DIR",
                        help="directory for verify.json, report.md and PNG plots")
    verify.add_argument("--no-twin", action="store_true", help="check only source ≡ canonical ≡ ideal program")
    verify.add_argument("--twin-mode", default="discrete", choices=["discrete", "continuous"],
                        help="run the twin's loops as discrete iterations or as settling in continuous time "
                        "(default discrete)")
    verify.add_argument("--loop-iterations", type=option.LOOP_ITERATIONS, metavar="N",
                        help="twin loop iterations per closed phase (default: the bundle's loop budget)")
    verify.add_argument("--repeats", type=option.REPEATS, metavar="R",
                        help="twin repeats averaged per readout (default: target's)")
    verify.add_argument("--twin-ratio", type=option.positive_float(), default=0.5, metavar="R",
                        help="pass if W2(twin, reference) ≤ this × W2(Gaussian fit, reference) (default 0.5)")
    verify.add_argument("--twin-nrmse", type=option.positive_float(), metavar="X",
                        help="also require the twin's per-step NRMSE ≤ this")
    verify.add_argument("--calibration", metavar="hw48|hw16|FILE",
                        help="a measured machine for the twin's device figures: "
                        "hw48, hw16 or a calibration file (the makers' format)")
    verify.add_argument("--workers", type=option.WORKERS, metavar="K",
                        help="shard the samples over a local Ray instance of K CPUs (the sweep extra)")
    verify.add_argument("--address", metavar="ADDR", help="shard the samples over the Ray cluster at ADDR")
    verify.set_defaults(handler=command_verify)


    from admc.finetuning.cli import add_parser as add_finetune_parser

    add_finetune_parser(commands)
    from admc.sweep.cli import add_parser as add_sweep_parser

    add_sweep_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    def command() -> int:
        arguments = make_parser().parse_args(argv)
        limits.set_max_memory(arguments.max_memory)
        return arguments.handler(arguments)

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
