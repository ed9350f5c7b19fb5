"""The ``admc sweep`` subcommand: run or resume a sweep, or report on a finished one.

Requires: parsed arguments from :func:`add_parser`.
Guarantees: ``admc sweep SPEC -o DIR`` validates the whole spec before anything is written or Ray starts,
then runs (or resumes) it; ``admc sweep --report DIR`` writes ``DIR/report/`` and prints the tables.
Exit status 0 on success, 1 when Ray lost tasks (run again to retry them), 2 on bad input (``AdmcError``,
handled by ``admc.cli.main``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from admc.core.errors import AdmcError


def add_parser(commands) -> None:
    sweep = commands.add_parser("sweep", help="yield / sensitivity / design sweeps of the twin on Ray")
    sweep.add_argument("spec", nargs="?", help="a sweep spec (YAML; see examples/sweeps/)")
    sweep.add_argument("-o", "--output", help="results directory (new, or an interrupted run of the same spec)")
    sweep.add_argument("--report", metavar="RESULTS_DIR", help="analyse a results directory instead of running")
    sweep.add_argument("--workers", type=int, help="CPUs of the local Ray instance (default: all)")
    sweep.add_argument("--address", help="join an existing Ray cluster (e.g. ray://head:10001 or head:6379)")
    sweep.add_argument("--format", default="parquet", choices=["parquet", "csv"], help="results table format")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.set_defaults(handler=command_sweep)


def command_sweep(arguments: argparse.Namespace) -> int:
    if arguments.report:
        if arguments.spec or arguments.output:
            raise AdmcError("sweep: give either SPEC -o RESULTS_DIR (run) or --report RESULTS_DIR, not both")
        from admc.sweep.report import write_report

        text = write_report(Path(arguments.report))
        print(text)
        return 0
    if not arguments.spec or not arguments.output:
        raise AdmcError("sweep: give SPEC.yaml -o RESULTS_DIR (or --report RESULTS_DIR)")
    if arguments.workers is not None and arguments.address:
        raise AdmcError("sweep: --workers sizes the local Ray instance; with --address the cluster's CPUs are used")
    from admc.sweep.execute import run_sweep
    from admc.sweep.spec import load_spec

    spec = load_spec(arguments.spec)
    summary = run_sweep(spec, Path(arguments.output), workers=arguments.workers, address=arguments.address,
                        file_format=arguments.format, progress=not arguments.no_progress and sys.stderr.isatty())
    print(f"{summary.rows} chips ({summary.rows_run} run now), {summary.passed} of those passed; "
          f"{summary.wall_s:.1f} s; wrote {summary.results}")
    if summary.lost:
        print(f"admc sweep: {summary.lost} chips were lost by Ray (no rows); run the same command again to "
              "retry them", file=sys.stderr)
        return 1
    return 0
