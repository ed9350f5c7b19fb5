"""Twin benchmark: loop iterations per second of the AOC twin's inner loop against dense baselines.

Requires: admc installed (``pip install -e .``). Run ``python benchmarks/twin_benchmark.py`` for a table,
``--json PATH`` to also write the figures, ``--device cuda`` on a GPU. Guarantees: every figure is the best
(shortest) of ``--rounds`` interleaved timings, so a loaded machine slows all contenders alike; the
numbers themselves vary from machine to machine.

The network is a cyclic ADM chain with K = 4 blocks of 256 channels (d = 256 state, hidden [256, 256, 256],
n = 1,024 channels, 4 × 256² = 262,144 non-zero weights), compiled for aoc-48 (8-bit SLM images, 48-port
modules). Contenders, batch 1,024, per loop iteration:
- twin inner loop: ``AocTwin._operator`` (σ, the realised operator, α z + drive) + read noise + saturation,
  with the preset's non-idealities and with all off, float64 and float32;
- twin phase loop: ``AocTwin._iterate`` per iteration (adds the divergence/convergence checks);
  both with the element-wise work on one thread, as ``AocTwin.run`` runs them (``twin_threads.py``);
- dense n × n: z ← α z + W σ(z) + v with the full 1,024 × 1,024 matrix (torch.addmm);
- torch blocks: the four 256 × 256 blocks as four matmuls (torch.mm) on the same batch.
Effective GFLOP/s counts 2 FLOPs per non-zero weight per sample for every contender.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.targets.aoc.physics import activation
from admc.targets.aoc.twin import AocTwin, all_off, nonidealities_of
from admc.targets.aoc.twin_threads import ELEMENTWISE_THREADS, threads

STATE, HIDDEN, BATCH = 256, (256, 256, 256), 1024


class AdmChain(nn.Module):
    """ADM form: every layer is W tanh(h) + b + t e; weights N(0, 1)/√fan-in × 0.5 from a fixed seed."""

    def __init__(self, state: int = STATE, hidden: tuple[int, ...] = HIDDEN, seed: int = 0) -> None:
        super().__init__()
        sizes = [state, *hidden, state]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.time_vectors = nn.ParameterList(nn.Parameter(torch.zeros(size)) for size in sizes[1:])
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in self.parameters():
                fan_in = parameter.shape[-1] if parameter.dim() > 1 else max(parameter.numel(), 1)
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, time_vector in zip(self.layers, self.time_vectors, strict=True):
            h = layer(torch.tanh(h)) + t[:, None] * time_vector
        return h


def build_bundle(directory: Path) -> Bundle:
    """Compile the benchmark network for aoc-48 into ``directory`` (reused when it already exists)."""
    path = directory / "adm-chain-4x256"
    if not path.exists():
        model = AdmChain().eval()
        example = (torch.randn(4, STATE), torch.rand(4))
        build(model, path, target="aoc-48", steps=4, example_inputs=example)
    return Bundle(path)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(function: Callable[[], object], device: torch.device, calls: int) -> float:
    function()
    synchronise(device)
    started = time.perf_counter()
    for _ in range(calls):
        function()
    synchronise(device)
    return (time.perf_counter() - started) / calls


def twin_contenders(bundle: Bundle, device: torch.device, dtype: torch.dtype, preset: bool) -> dict:
    """Closures running one loop iteration of the twin (inner loop) and of its phase loop."""
    nonidealities = nonidealities_of(bundle) if preset else all_off(nonidealities_of(bundle))
    twin = AocTwin(bundle, nonidealities, device=device, dtype=dtype, loop_iterations=8, repeats=1)
    twin._history = []
    phase = next(phase for phases in twin.schedule.steps for phase in phases if phase.loop == "closed")
    operator = twin.loop_operator(phase)
    generator = twin._generator()
    inject = torch.randn(BATCH, STATE, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    drive = twin._drive(phase, inject, None)
    buffers = {"state": 0.1 * torch.randn(BATCH, twin.size, dtype=dtype, device=device)}
    buffers["spare"] = torch.empty_like(buffers["state"])
    noise = torch.empty(BATCH, twin.size, dtype=torch.float32, device=device) if twin.noisy else None

    def inner() -> None:
        with threads(ELEMENTWISE_THREADS):  # as AocTwin.run runs an iteration
            updated = twin._operator(buffers["state"], operator, drive, True, out=buffers["spare"])
            twin._saturate(twin._add_noise(updated, noise, generator))
        buffers["spare"], buffers["state"] = buffers["state"], updated

    def phase_loop() -> None:
        # Noisy runs take exactly loop_iterations; noise-free runs go to convergence (then time per iteration
        # is what counts: the caller divides by the iterations reported).
        with threads(ELEMENTWISE_THREADS):
            phase_loop.iterations = twin._iterate(0, 0, phase, buffers["state"], drive, None, generator)[2]

    phase_loop.iterations = twin.loop_iterations
    return {"twin": twin, "operator": operator, "inner": inner, "phase_loop": phase_loop}


def dense_contenders(size: int, device: torch.device, dtype: torch.dtype, nonidealities) -> dict:
    """Baselines: a dense n×n loop (plain, and with the preset's per-iteration physics: the measured sigmoid,
    read noise drawn like the twin's, the saturation clamp) and torch matmuls on the four non-zero blocks."""
    generator = torch.Generator().manual_seed(2)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype).to(device)

    weights_t = randn(size, size) / math.sqrt(size)  # Wᵀ: rows index the input channel
    alpha, drive, state = torch.rand(size, dtype=dtype).to(device), randn(BATCH, size), randn(BATCH, size)
    blocks = [randn(STATE, STATE) / math.sqrt(STATE) for _ in range(4)]
    activated = torch.tanh(state)
    outputs = [torch.empty(BATCH, STATE, dtype=dtype, device=device) for _ in range(4)]
    columns = [activated[:, k * STATE:(k + 1) * STATE].contiguous() for k in range(4)]

    def dense() -> torch.Tensor:
        return torch.addmm(torch.addcmul(drive, alpha, state), torch.tanh(state), weights_t)

    noise_generator = torch.Generator(device=device).manual_seed(3)
    noise = torch.empty(BATCH, size, dtype=torch.float32, device=device)

    def dense_with_physics() -> torch.Tensor:
        updated = torch.addmm(torch.addcmul(drive, alpha, state), activation(state, nonidealities), weights_t)
        noise.normal_(generator=noise_generator)
        updated.add_(noise, alpha=nonidealities.read_noise.std)
        return updated.clamp_(nonidealities.saturation.low, nonidealities.saturation.high)

    def torch_blocks() -> None:
        for block, column, output in zip(blocks, columns, outputs, strict=True):
            torch.mm(column, block, out=output)

    return {"dense": dense, "dense_physics": dense_with_physics, "blocks": torch_blocks}


def measure(device: torch.device, dtype: torch.dtype, bundle: Bundle, rounds: int, calls: int) -> dict:
    """Interleaved timings (best of ``rounds``) of every contender for one dtype."""
    twins = {name: twin_contenders(bundle, device, dtype, preset) for name, preset in
             (("preset", True), ("all off", False))}
    size = twins["preset"]["twin"].size
    baselines = dense_contenders(size, device, dtype, nonidealities_of(bundle))
    best: dict[str, float] = {}
    for _ in range(rounds):
        timings = {"dense n×n": seconds_per_call(baselines["dense"], device, calls),
                   "dense n×n, preset physics": seconds_per_call(baselines["dense_physics"], device, calls),
                   "torch 4 blocks": seconds_per_call(baselines["blocks"], device, calls)}
        for name, contender in twins.items():
            timings[f"twin inner, {name}"] = seconds_per_call(contender["inner"], device, calls)
            loop = contender["phase_loop"]
            per_phase = seconds_per_call(loop, device, 1)
            timings[f"twin phase loop, {name}"] = per_phase / max(loop.iterations, 1)
        for name, seconds in timings.items():
            best[name] = min(best.get(name, math.inf), seconds)
    weights = 4 * STATE * STATE
    rows = {name: {"seconds_per_iteration": seconds, "iterations_per_second": 1.0 / seconds,
                   "effective_gflops": 2.0 * weights * BATCH / seconds / 1e9} for name, seconds in best.items()}
    for name in rows:
        # Like against like: the preset twin against the dense loop doing the same per-iteration physics.
        dense = "dense n×n, preset physics" if "preset" in name else "dense n×n"
        rows[name]["speedup_over_dense"] = best[dense] / best[name]
        rows[name]["fraction_of_torch_blocks_rate"] = best["torch 4 blocks"] / best[name]
    kinds = {name: contender["operator"].kind for name, contender in twins.items()}
    return {"dtype": str(dtype).removeprefix("torch."), "rows": rows, "operator": kinds}


def print_table(result: dict) -> None:
    print(f"\n{result['dtype']} on {result['device']}, batch {BATCH}, n = {result['channels']} "
          f"(twin operator: {result['operator']})")
    print(f"{'contender':30} {'iter/s':>9} {'GFLOP/s':>9} {'× dense':>9} {'/ torch blocks':>15}")
    print("(× dense: preset rows against the dense loop with the same physics, the others against plain dense)")
    for name, row in result["rows"].items():
        print(f"{name:30} {row['iterations_per_second']:9.1f} {row['effective_gflops']:9.2f} "
              f"{row['speedup_over_dense']:9.2f} {row['fraction_of_torch_blocks_rate']:15.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best is kept)")
    parser.add_argument("--calls", type=int, default=10, help="iterations timed per round")
    parser.add_argument("--bundle-dir", help="where to build (or reuse) the bundle; default a temporary directory")
    parser.add_argument("--dtypes", default="float64,float32")
    arguments = parser.parse_args(argv)
    device = torch.device(arguments.device)
    with tempfile.TemporaryDirectory(prefix="admc-twin-benchmark-") as temporary:
        bundle = build_bundle(Path(arguments.bundle_dir or temporary))
        results = []
        for name in arguments.dtypes.split(","):
            result = measure(device, getattr(torch, name), bundle, arguments.rounds, arguments.calls)
            result.update(device=str(device), channels=int(bundle.manifest["report"]["state_channels"]),
                          threads=torch.get_num_threads())
            print_table(result)
            results.append(result)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"batch": BATCH, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    raise SystemExit(main())
