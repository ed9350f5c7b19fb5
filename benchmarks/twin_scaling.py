"""Twin at scale (issue 25): the AOC twin's loop iteration against a block-sparse product on the same non-zeros,
and ``admc simulate`` / ``admc verify`` end to end, on any AOC bundle (built for the 36M-weight network).

Requires: admc installed (``pip install -e .``), scipy, a built AOC bundle; Linux ``/usr/bin/time`` for the
end-to-end peak memory. Run::

    python benchmarks/twin_scaling.py --bundle BUNDLE                       # the product table, float32 and float64
    python benchmarks/twin_scaling.py --bundle BUNDLE --run --samples 64 \\
        --json benchmarks/results/twin_scaling.json                        # also simulate and verify end to end

Guarantees: every timed figure is the best (shortest) of ``--rounds`` interleaved rounds, so a loaded machine
slows all contenders alike; the figures themselves vary from machine to machine and with the load (recorded).
Contenders per dtype, on ``--batch`` rows (the twin's rows are samples × repeats when it runs):

- twin iteration: one discrete-mode loop iteration as ``simulate`` runs it (``AocTwin._iterate`` over
  ``--loop-iterations`` noisy iterations of the first closed phase, per iteration: σ, the realised loop operator,
  α z + drive, read noise, the clamp, the readout and the change check), the bundle's own non-idealities;
- twin operator: the realised loop operator's product alone (``LoopOperator.accumulate``);
- block products: the program's blocks (the realised weights, one dense matrix per (row group, column group)
  pair that holds weights) as one ``torch.mm`` per block on contiguous inputs into contiguous outputs, and as
  one ``addmm_`` per block on column slices of the state into row slices of one sum;
- scipy BSR and torch CSR (``--sparse``): the same non-zeros as one sparse matrix (scipy BSR with square blocks
  of the largest size that divides every group; torch's CSR product).

The baseline is the fastest block-sparse contender. Effective GFLOP/s counts 2 FLOPs per non-zero weight of the
program per row for every contender. ``--run`` times ``admc simulate`` (twin and ``--ideal``) on ``--simulate-
samples`` and ``admc verify --samples N`` in child processes under ``/usr/bin/time -v``: wall seconds, seconds per
sample and peak resident memory. ``--verify-log`` reads the verify figures from an earlier ``/usr/bin/time -v``
log of the same command instead of running it again (it takes an hour at 36M weights on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from admc.bundle.store import Bundle
from admc.core.errors import ConvergenceError
from admc.targets.aoc.twin import AocTwin
from admc.targets.aoc.twin_threads import ELEMENTWISE_THREADS, threads


def best_seconds(function: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``calls`` calls after one warm-up call."""
    function()
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def twin_contenders(bundle: Bundle, dtype: torch.dtype, batch: int, iterations: int) -> dict:
    """One twin iteration (the phase loop per iteration) and the realised operator's product alone."""
    twin = AocTwin(bundle, dtype=dtype, loop_iterations=iterations, repeats=1)
    twin._history = []
    phase = next(phase for phases in twin.schedule.steps for phase in phases if phase.loop == "closed")
    generator = twin._generator()
    with threads(ELEMENTWISE_THREADS):
        operator = twin.loop_operator(phase)
        inject = torch.randn(batch, twin.program.state_dimension, generator=torch.Generator().manual_seed(1),
                             dtype=dtype)
        drive = twin._drive(phase, inject, None)
    state = 0.1 * torch.randn(batch, twin.size, generator=torch.Generator().manual_seed(2), dtype=dtype)
    activated = torch.tanh(state)
    summed = torch.zeros_like(state)

    def iteration() -> None:
        # A few iterations from a random state have not settled: the phase loop then raises after its last
        # iteration, having done the same work.
        with threads(ELEMENTWISE_THREADS), contextlib.suppress(ConvergenceError):  # as AocTwin.run runs it
            twin._iterate(0, 0, phase, state, drive, None, generator)

    iteration.count = iterations
    return {"twin": twin, "operator_kind": operator.kind, "iteration": iteration,
            "operator": lambda: operator.accumulate(activated, summed)}


def block_contenders(twin: AocTwin, batch: int, sparse: bool) -> tuple[dict, int]:
    """The program's blocks as dense block products (and as one sparse matrix); their non-zero count."""
    program, dtype = twin.program, twin.dtype
    generator = torch.Generator().manual_seed(3)
    activated = torch.tanh(torch.randn(batch, program.size, generator=generator, dtype=dtype))
    products = []
    for block in program.blocks:
        rows, columns = program.group(block.row_group), program.group(block.column_group)
        matrix_t = torch.as_tensor(np.ascontiguousarray(block.matrix.T), dtype=dtype)
        products.append((activated[:, columns.offset:columns.stop].contiguous(), matrix_t,
                         torch.empty(batch, rows.size, dtype=dtype)))
    nonzeros = int(sum(np.count_nonzero(block.matrix) for block in program.blocks))
    summed = torch.zeros(batch, program.size, dtype=dtype)
    in_place = [(slice(program.group(block.row_group).offset, program.group(block.row_group).stop),
                 slice(program.group(block.column_group).offset, program.group(block.column_group).stop), matrix_t)
                for block, (_, matrix_t, _) in zip(program.blocks, products, strict=True)]

    def block_products() -> None:
        for inputs, matrix_t, outputs in products:
            torch.mm(inputs, matrix_t, out=outputs)

    def block_products_in_place() -> None:
        for rows, columns, matrix_t in in_place:
            summed[:, rows].addmm_(activated[:, columns], matrix_t)

    contenders = {"block products (torch.mm per block)": block_products,
                  "block products (addmm_ into the sum)": block_products_in_place}
    if sparse:
        contenders.update(sparse_contenders(program, activated, dtype))
    return contenders, nonzeros


def sparse_contenders(program, activated: torch.Tensor, dtype: torch.dtype) -> dict:
    """The whole loop matrix as scipy BSR (square blocks dividing every group) and as torch CSR."""
    import scipy.sparse as sparse

    side = math.gcd(*(group.size for group in program.groups), *(group.offset for group in program.groups))
    numpy_dtype = np.float32 if dtype == torch.float32 else np.float64
    parts = []
    for block in program.blocks:
        rows, columns = program.group(block.row_group), program.group(block.column_group)
        part = sparse.coo_matrix(block.matrix.astype(numpy_dtype))
        parts.append((part.row + rows.offset, part.col + columns.offset, part.data))
    row, column, data = (np.concatenate(values) for values in zip(*parts, strict=True))
    matrix = sparse.coo_matrix((data, (row, column)), shape=(program.size,) * 2).tocsr()
    bsr = matrix.tobsr(blocksize=(side, side))
    inputs_t = np.ascontiguousarray(activated.numpy().T)
    csr = torch.sparse_csr_tensor(torch.as_tensor(matrix.indptr, dtype=torch.int64),
                                  torch.as_tensor(matrix.indices, dtype=torch.int64),
                                  torch.as_tensor(matrix.data), size=matrix.shape)
    activated_t = activated.T.contiguous()
    return {f"scipy BSR ({side}×{side} blocks)": lambda: bsr @ inputs_t,
            "torch CSR (torch.sparse.mm)": lambda: torch.sparse.mm(csr, activated_t)}


def measure(bundle: Bundle, dtype: torch.dtype, arguments: argparse.Namespace) -> dict:
    """Interleaved best-of-rounds timings of every contender for one dtype."""
    twin_side = twin_contenders(bundle, dtype, arguments.batch, arguments.loop_iterations)
    baselines, nonzeros = block_contenders(twin_side["twin"], arguments.batch, arguments.sparse)
    best: dict[str, float] = {}
    for _ in range(arguments.rounds):
        timings = {name: best_seconds(function, arguments.calls) for name, function in baselines.items()}
        timings["twin operator (accumulate)"] = best_seconds(twin_side["operator"], arguments.calls)
        loop = twin_side["iteration"]
        timings["twin iteration (phase loop)"] = best_seconds(loop, 1) / max(loop.count, 1)
        for name, seconds in timings.items():
            best[name] = min(best.get(name, math.inf), seconds)
    baseline = min(best[name] for name in baselines)
    rows = {name: {"seconds": seconds, "effective_gflops": 2.0 * nonzeros * arguments.batch / seconds / 1e9,
                   "fraction_of_baseline_rate": baseline / seconds} for name, seconds in best.items()}
    return {"dtype": str(dtype).removeprefix("torch."), "batch": arguments.batch, "nonzeros": nonzeros,
            "channels": twin_side["twin"].size, "operator": twin_side["operator_kind"],
            "baseline": min(baselines, key=best.__getitem__), "rows": rows,
            "twin_fraction_of_baseline": baseline / best["twin iteration (phase loop)"]}


def timed(command: list[str], log: Path) -> dict:
    """Run ``command`` under ``/usr/bin/time -v`` (its report into ``log``); wall seconds and peak memory."""
    completed = subprocess.run(["/usr/bin/time", "-v", "-o", str(log), *command], capture_output=True, text=True)
    if completed.returncode not in (0, 1):  # verify exits 1 when a link fails: still a completed run
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-2000:]}")
    return {**time_log(log), "exit_status": completed.returncode}


def time_log(log: Path) -> dict:
    """Wall seconds and peak resident bytes from a ``/usr/bin/time -v`` report."""
    text = log.read_text()
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
    seconds = sum(float(part) * 60 ** power for power, part in enumerate(reversed(clock.split(":"))))
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) * 1024
    return {"seconds": seconds, "peak_bytes": peak}


def end_to_end(bundle: Path, arguments: argparse.Namespace, scratch: Path) -> dict:
    """``admc simulate`` (twin, ideal) and ``admc verify`` on the bundle, per sample, with peak memory."""
    admc = [sys.executable, "-m", "admc.cli"]
    dimension = int(Bundle(bundle).manifest["source"]["state_dimension"])
    noise = scratch / "noise.npy"
    np.save(noise, np.random.default_rng(0).standard_normal((arguments.simulate_samples, dimension)))
    figures = {}
    for label, extra in (("simulate (twin)", []), ("simulate --ideal", ["--ideal"])):
        command = [*admc, "simulate", str(bundle), "--noise", str(noise), "-o", str(scratch / "out.npy"), *extra]
        figures[label] = {"samples": arguments.simulate_samples, **timed(command, scratch / "time.log")}
    command = [*admc, "verify", str(bundle), "--samples", str(arguments.samples)]
    verify = time_log(Path(arguments.verify_log)) if arguments.verify_log else timed(command, scratch / "time.log")
    figures[f"verify --samples {arguments.samples}"] = {"samples": arguments.samples, **verify,
                                                         "from_log": arguments.verify_log}
    for row in figures.values():
        row["seconds_per_sample"] = row["seconds"] / row["samples"]
    return figures


def print_table(result: dict) -> None:
    print(f"\n{result['dtype']}, batch {result['batch']}, {result['nonzeros']:,} non-zeros, n = {result['channels']} "
          f"(twin operator: {result['operator']}; baseline: {result['baseline']})")
    for name, row in result["rows"].items():
        print(f"  {name:42} {row['seconds'] * 1e3:10.2f} ms {row['effective_gflops']:8.2f} GFLOP/s "
              f"{row['fraction_of_baseline_rate']:6.2f} × baseline rate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="a built AOC bundle (read only)")
    parser.add_argument("--batch", type=int, default=64, help="rows per product (samples × repeats in a run)")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best is kept)")
    parser.add_argument("--calls", type=int, default=4, help="products timed per round")
    parser.add_argument("--loop-iterations", type=int, default=8, help="twin iterations timed per round")
    parser.add_argument("--sparse", action="store_true", help="also time scipy BSR and torch CSR products")
    parser.add_argument("--run", action="store_true", help="also time admc simulate and verify end to end")
    parser.add_argument("--samples", type=int, default=64, help="verify's samples")
    parser.add_argument("--simulate-samples", type=int, default=8, help="simulate's samples")
    parser.add_argument("--verify-log", help="a /usr/bin/time -v log of the same verify command to read instead")
    parser.add_argument("--scratch", default="/tmp", help="where --run writes its noise and outputs")
    parser.add_argument("--json", help="write the figures to this file")
    arguments = parser.parse_args(argv)
    bundle = Bundle(arguments.bundle)
    report = {"bundle": str(arguments.bundle), "weights": bundle.manifest["report"]["weights"],
              "threads": torch.get_num_threads(), "load_average_start": os.getloadavg(), "products": []}
    for name in arguments.dtypes.split(","):
        result = measure(bundle, getattr(torch, name), arguments)
        print_table(result)
        report["products"].append(result)
    if arguments.run:
        report["end_to_end"] = end_to_end(Path(arguments.bundle), arguments, Path(arguments.scratch))
        for label, row in report["end_to_end"].items():
            print(f"  {label:28} {row['seconds']:9.1f} s  {row['seconds_per_sample']:8.2f} s/sample  "
                  f"peak {row['peak_bytes'] / 2 ** 30:.2f} GiB")
    report["load_average_end"] = os.getloadavg()
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
