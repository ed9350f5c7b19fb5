"""``admc.load`` and ``admc.Bundle``: a compiled program as an object to inspect, run and verify.

Requires: a bundle directory written by ``admc build`` or :func:`admc.build`. Guarantees: a ``Bundle`` is
checked once, when it is made (the store's manifest, schema and payload-hash checks, and the target's check
that the files its machine loads — images, routing — agree with the arrays), so every method runs what was
checked; ``inspect`` is ``admc inspect --json``'s data, ``simulate`` ``admc simulate``'s samples and
``verify`` ``admc verify``'s chain, with the same defaults. Bad input is an ``AdmcError`` naming it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from admc.bundle import store
from admc.bundle.program import check_loaded_files
from admc.bundle.summary import describe, summary
from admc.core.errors import AdmcError
from admc.passes.loop_budget import bundle_loop_budget
from admc.runtime.simulate import SimulateOptions, Simulation, read_machine, run_simulation
from admc.verify.chain import TWIN_W2_RATIO, verify_bundle
from admc.verify.result import VerifyReport


class Bundle:
    """A program bundle on disk, checked and loaded (see :func:`admc.load`).

    ``keep_alive``: an object the bundle holds for as long as it lives (``admc.build`` without ``output``
    passes the temporary directory the bundle is in, which is removed with the last reference to it).
    """

    def __init__(self, path: str | os.PathLike, keep_alive: object = None) -> None:
        self._stored = store.Bundle(path)
        check_loaded_files(self._stored)
        self._keep_alive = keep_alive

    @property
    def path(self) -> Path:
        """The bundle's directory."""
        return self._stored.path

    @property
    def target(self) -> Any:
        """The target description the bundle was built for (validated, read-only)."""
        return self._stored.target

    @property
    def manifest(self) -> dict:
        """A copy of the checked manifest (``docs/bundle-format.md``)."""
        return copy.deepcopy(self._stored.manifest)

    def __repr__(self) -> str:
        manifest = self._stored.manifest
        return (f"admc.Bundle({str(self.path)!r}, target={manifest['target'].get('name')!r}, "
                f"solver={manifest['solver']['name']!r}, steps={manifest['solver']['steps']})")

    def inspect(self) -> dict:
        """The bundle's summary: target, source, solver, layout, groups, blocks, digital work, convergence,
        conditions and the target's own section (the data ``admc inspect --json`` prints)."""
        return summary(self._stored)

    def describe(self) -> str:
        """The summary as the text ``admc inspect`` prints."""
        return describe(self._stored)

    def simulate(self, noise: np.ndarray, conditions: Mapping[str, Any] | None = None, ideal: bool = False,
                 calibration: str | os.PathLike | None = None, seed: int | None = None,
                 guidance: float | None = None, loop_iterations: int | None = None) -> np.ndarray:
        """The program's final samples [B, d] from ``noise`` [B, d] (float64).

        ``ideal`` False runs the target's digital twin (an ``AdmcError`` for a target without one, such as
        ``ideal``), True the program's exact execution. ``conditions``: per-sample values of each condition
        input the program declares (``{"label": array [B] of class indices}``); required exactly when the
        model has condition inputs. ``calibration``: the measured machine the twin runs as (``"hw48"``,
        ``"hw16"`` or a calibration file; twin only). ``seed``: the twin's random draws (None: the seed of
        the bundle's non-idealities). ``guidance``: a run-time guidance weight W for a bundle built with
        guidance whose W sits in its gains. ``loop_iterations``: iterations per closed phase (None: the
        twin runs the bundle's loop budget, the ideal executor iterates to convergence).
        """
        if ideal and calibration is not None:
            raise AdmcError("calibration: a measured machine applies to the twin; drop it or set ideal=False")
        return self.run(noise, conditions, ideal, calibration, seed, guidance, loop_iterations).samples

    def run(self, noise: np.ndarray, conditions: Mapping[str, Any] | None = None, ideal: bool = False,
            calibration: Any = None, seed: int | None = None, guidance: float | None = None,
            loop_iterations: int | None = None, precision: str = "float64") -> Simulation:
        """:meth:`simulate`'s run with its one-line account (executor, steps, loop iterations), as
        ``admc simulate`` prints it; a calibration is read (and checked against the target) even for an
        ideal run. ``precision``: the twin's arithmetic (``float64`` or ``float32``; the ideal run is float64)."""
        if loop_iterations is None and not ideal:
            # The twin runs the program's loop budget; the ideal executor iterates to its exact tolerance.
            loop_iterations = bundle_loop_budget(self._stored.manifest)
        run_conditions = None if conditions is None else {name: np.asarray(value) for name, value in conditions.items()}
        options = SimulateOptions(seed=seed, loop_iterations=loop_iterations,
                                  calibration=read_machine(self._stored, calibration), precision=precision)
        return run_simulation(self._stored, noise, run_conditions, guidance, ideal, options)

    def verify(self, samples: int = 256, seed: int = 0, tolerance: float | None = None, twin: bool = True,
               calibration: str | os.PathLike | None = None, loop_iterations: int | None = None,
               twin_mode: str = "discrete", repeats: int | None = None, twin_ratio: float = TWIN_W2_RATIO,
               twin_nrmse: float | None = None, progress: Callable[[str], None] | None = None) -> VerifyReport:
        """Verify the program against its bundled source model on ``samples`` seeded noise draws (and, for a
        conditional model, conditions drawn from the bundle's declared distribution): source ≡ canonical
        network ≡ bundle (ideal executor), and, when ``twin`` and the target has one, ≈ bundle (twin).

        ``tolerance``: the program link's bound (None: the target's, exact 1e-6 for ``ideal``).
        ``calibration``, ``loop_iterations`` (None: the bundle's loop budget), ``twin_mode`` (``discrete`` or
        ``continuous``) and ``repeats`` (None: the target's) configure the twin; it passes when its W2 to the
        reference is at most ``twin_ratio`` × a fitted Gaussian's, and (``twin_nrmse``) per step.

        Returns an :class:`admc.VerifyReport`: ``passed``, ``links`` (each with ``measured``, ``tolerance``,
        ``passed``, ``per_step_nrmse``), ``distributions`` (MMD² and W2 against the reference samples),
        ``per_class`` (empty for a model without conditions), ``final_samples`` and ``to_json()``.
        ``progress``: called with a short status text as the chain advances.
        """
        if loop_iterations is None:
            loop_iterations = bundle_loop_budget(self._stored.manifest)
        options = SimulateOptions(loop_iterations=loop_iterations, calibration=read_machine(self._stored, calibration),
                                  mode=twin_mode, repeats=repeats)
        return verify_bundle(self._stored, samples=samples, seed=seed, tolerance=tolerance, twin=twin,
                             twin_options=options, twin_ratio=twin_ratio, twin_nrmse=twin_nrmse, progress=progress)


def load(path: str | os.PathLike) -> Bundle:
    """The bundle at ``path``, checked (manifest, schema, payload hashes, the files its machine loads); a
    bundle that fails a check is refused with an ``AdmcError`` naming the file and field."""
    return Bundle(path)
