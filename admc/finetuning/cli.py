"""The ``admc finetune`` subcommand: its arguments and what it prints (``admc.finetuning.run`` does the work).

Requires: parsed arguments from :func:`add_parser`. Guarantees: options are validated while parsing
(``admc.cli.options``); the progress line is shown on a terminal only (``-q`` quiet); the figures of the program's
fit and of the digital control are printed, then the tuned model's path. Bad input is an ``AdmcError`` (exit 2,
handled by ``admc.cli.main``).
"""

from __future__ import annotations

import argparse

from admc.cli import options as option
from admc.core.errors import AdmcError
from admc.finetuning.objectives import FLOW_MATCHING, OBJECTIVES


def add_parser(commands) -> None:
    finetune = commands.add_parser("finetune", help="fine-tune a model through its compiled program on the twin",
                                   description="Conditional flow matching on your data with the velocity "
                                   "computed through the compiled program on the target's twin (a measured machine "
                                   "with --calibration); a digital control with the same steps; the tuned model is "
                                   "written in the source's format, for admc build (docs/finetune.md).")
    finetune.add_argument("model", help="an .onnx or .pt2 file")
    finetune.add_argument("--target", default="aoc-48", metavar="TARGET", help="aoc | aoc-48 | aoc-16 | FILE.yaml")
    finetune.add_argument("--calibration", metavar="hw48|hw16|FILE", help="fine-tune for this measured machine")
    finetune.add_argument("--data", required=True, type=option.input_file, metavar="SAMPLES.npy",
                          help="training samples [N, d] (a share is held out for early stopping)")
    finetune.add_argument("--condition", action="append", metavar="NAME=FILE.npy",
                          help="a conditional model's condition input NAME for each sample of --data (one row per "
                          "sample: [N] class indices, or [N, *shape] for a vector); repeatable")
    finetune.add_argument("--guidance", type=float, metavar="W",
                          help="fine-tune the program built with classifier-free guidance W, as build --guidance")
    finetune.add_argument("--null-condition", action="append", metavar="NAME=VALUE",
                          help="the unconditional input for --guidance (a class index or 'zeros'); repeatable")
    # The structure fine-tuned must be the one the user builds: the same schedule options as admc build.
    option.schedule_arguments(finetune)
    finetune.add_argument("-o", "--output", required=True, type=option.output_file, metavar="TUNED.onnx|.pt2",
                          help="where to write the tuned model (the source's format)")
    finetune.add_argument("--max-steps", type=option.FINETUNE_STEPS, default=200, metavar="N",
                          help="optimiser steps at most (default 200; early stopping may end sooner)")
    finetune.add_argument("--seed", type=option.SEED, default=0, metavar="S",
                          help="seed of the split, the draws and the chips' static errors (default 0)")
    finetune.add_argument("--objective", default=FLOW_MATCHING, choices=OBJECTIVES,
                          help="what is fitted: flow-matching, the velocity to the data's x₁ − x₀ (default); "
                          "teacher, the velocity to the source model's own at the same states (no flow-matching "
                          "variance: the machine learns to compute what the source computes); samples, the "
                          "program's final samples to the source's ideal ones from the same noise, through every "
                          "step of the sampler (costlier per step)")
    finetune.add_argument("--workers", type=option.WORKERS, default=1, metavar="N",
                          help="torch processes computing each step's gradient on Ray, data-parallel (default 1: "
                          "this process, no Ray)")
    finetune.add_argument("--address", metavar="ADDR",
                          help="join this Ray cluster (as admc sweep does) and run on its CPUs, or on --workers")
    finetune.add_argument("--no-rebuild", action="store_true",
                          help="measure the held-out loss through the structure compiled for the source instead of "
                          "recompiling the tuned weights at each evaluation (faster; the rebuilt model may then "
                          "differ from what was measured)")
    finetune.add_argument("-q", "--quiet", action="store_true",
                          help="no progress line (it is shown only when stderr is a terminal)")
    finetune.set_defaults(handler=command_finetune)


def command_finetune(arguments: argparse.Namespace) -> int:
    from admc.finetuning.progress import FinetuneProgress
    from admc.finetuning.run import finetune

    conditions = {}
    for pair in arguments.condition or []:
        name, separator, path = pair.partition("=")
        if not separator or not name or not path:
            raise AdmcError(f"--condition '{pair}': expected NAME=FILE.npy (one row per sample of --data)")
        conditions[name] = path
    with FinetuneProgress(quiet=arguments.quiet) as progress:
        result = finetune(arguments.model, arguments.data, arguments.output, arguments.target,
                          conditions=conditions or None, guidance=arguments.guidance,
                          null_conditions=arguments.null_condition,
                          calibration=arguments.calibration, solver=arguments.solver, steps=arguments.steps,
                          fp_iterations=arguments.fp_iterations, max_steps=arguments.max_steps, seed=arguments.seed,
                          objective=arguments.objective, workers=arguments.workers, address=arguments.address,
                          rebuild=not arguments.no_rebuild, progress=progress.update)
    for name, fitted in (("program", result.program), ("control", result.control)):
        print(f"{name}: {fitted.steps} steps, best held-out loss {min(loss for _, loss in fitted.holdout_loss):.5f} "
              f"(step {fitted.best_step}; before {fitted.holdout_loss[0][1]:.5f})")
    if result.program.rebuilds:
        print(f"program: rebuilt {result.program.rebuilds} times; each held-out loss is the rebuilt program's")
    if result.program.stopped:
        print(f"program: stopped at {result.program.stopped}")
    print(f"wrote {result.output}")
    return 0
