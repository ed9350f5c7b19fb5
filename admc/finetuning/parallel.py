"""Data-parallel fine-tuning on Ray (the sweep's engine, ``admc.sweep.cluster``): each worker is a torch process
holding its own compiled model; the driver keeps the optimiser.

Requires: ray (the ``sweep`` extra) and a model file every worker can read as bytes from the driver (they are
sent, not shared). Guarantees: :class:`DataParallel` starts ``workers`` actors (one CPU each) in a session of
``ray_session`` (a local instance when ``address`` is None, else that cluster); each compiles the same model for
the same target and machine (compilation is deterministic, so every worker holds the same program). Called with
one step's draws, it splits them into contiguous shards, one per worker, and returns the loss and the gradient
of the whole batch as the shard-size-weighted mean of the workers' (summed in worker order, so the same draws
give the same result); ``rebuild`` recompiles every worker's model for given weights; ``close`` ends the actors
and the session.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from admc.finetuning.flow_matching import Draws, loss_of


class GradientWorker:
    """One worker's compiled model: the gradient of the loss on a shard of draws at given weights."""

    def __init__(self, content: bytes, suffix: str, target: str, calibration, seed: int, chips: int,
                 writable: set[str], build: dict | None = None):
        """``build``: further build options as ``BuildOptions`` fields (a conditional model's condition inputs,
        guidance and null conditions), as the driver compiled with."""
        from admc.compiler.build_options import BuildOptions, target_machine
        from admc.compiler.driver import load_source
        from admc.finetuning.compiled_model import CompiledModel
        from admc.targets.loader import load_target

        self._directory = tempfile.TemporaryDirectory(prefix="admc-finetune-worker-")
        path = Path(self._directory.name) / f"model{suffix}"
        path.write_bytes(content)
        self.path = path
        description = load_target(target)
        options = replace(BuildOptions(), **(build or {}), calibration=target_machine(description, calibration))
        self.model = CompiledModel(load_source(path, condition_inputs=options.condition_inputs), description, options,
                                   seed=seed, chips=chips, writable=writable)

    def gradient(self, weights: dict[str, np.ndarray], draws: Draws, chip: int, objective: str
                 ) -> tuple[float, dict[str, np.ndarray], int]:
        with torch.no_grad():
            for name, value in self.model.parameters.items():
                value.copy_(torch.as_tensor(weights[name]))
                value.grad = None
        loss = loss_of(self.model, draws, "program", chip, objective)
        loss.backward()
        return float(loss.detach()), {name: value.grad.numpy().copy() for name, value in
                                      self.model.parameters.items()}, int(self.model.iterations)

    def rebuild(self, weights: dict[str, np.ndarray]) -> None:
        """Recompile for ``weights`` as the driver does (``CompiledModel.rebuild``)."""
        from admc.finetuning.model_writer import load_tuned

        self.model.rebuild(load_tuned(self.path, weights, self._directory.name,
                                      self.model.source.graph.condition_inputs))

    def close(self) -> None:
        """Remove the worker's temporary model and bundle."""
        self.model.close()
        self._directory.cleanup()


class DataParallel:
    """``workers`` Ray actors computing one step's gradient together (see the module docstring)."""

    def __init__(self, model: Path, target: str, calibration, seed: int, chips: int, writable: set[str],
                 workers: int | None, address: str | None, parameters: dict[str, torch.Tensor],
                 build: dict | None = None):
        from admc.sweep.cluster import cluster_cpus, ray_session

        self._stack = ExitStack()
        ray = self._stack.enter_context(ray_session(workers, address))
        count = workers or cluster_cpus(ray)
        actor = ray.remote(num_cpus=1)(GradientWorker)
        arguments = (Path(model).read_bytes(), Path(model).suffix, str(target), calibration, seed, chips, writable,
                     build)
        self._ray, self._actors, self._parameters = ray, [actor.remote(*arguments) for _ in range(count)], parameters
        self.iterations = 0

    def __call__(self, draws: Draws, chip: int, objective: str) -> tuple[float, dict[str, torch.Tensor]]:
        weights = {name: value.detach().numpy().copy() for name, value in self._parameters.items()}
        bounds = np.linspace(0, len(draws.points), len(self._actors) + 1).astype(int)
        shards = [(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True) if stop > start]
        calls = [actor.gradient.remote(weights, draws.shard(start, stop), chip, objective)
                 for actor, (start, stop) in zip(self._actors, shards, strict=False)]
        results = self._ray.get(calls)
        total = len(draws.points)
        loss = sum((stop - start) / total * value for (start, stop), (value, _, _) in zip(shards, results,
                                                                                         strict=True))
        gradients = {name: sum((stop - start) / total * torch.from_numpy(np.array(grads[name]))
                               for (start, stop), (_, grads, _) in zip(shards, results, strict=True))
                     for name in weights}
        self.iterations = sum(count for _, _, count in results)
        return loss, gradients

    def rebuild(self, weights: dict[str, np.ndarray]) -> None:
        """Every worker recompiles for ``weights`` (the driver's rebuild; the build is deterministic)."""
        self._ray.get([actor.rebuild.remote(weights) for actor in self._actors])

    def close(self) -> None:
        try:
            self._ray.get([actor.close.remote() for actor in self._actors])
            for actor in self._actors:
                self._ray.kill(actor)
        finally:
            self._stack.close()
