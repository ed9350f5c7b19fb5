"""One chip of one point: its twin run, judged by the verify links, as one row of the results table.

Requires: the point's bundle (its directory, or a loaded ``Bundle``: ``loaded_bundles``) and reference data
(``build_cache.point_reference``), the chip's non-idealities overrides and seed, the twin options and the pass
criterion; the bundle's target backend declares a twin for a chip (``TargetBackend.make_twin``:
``check_points`` refuses a target without one).
Guarantees: :func:`run_chip` returns the metric columns of :data:`admc.sweep.results.COLUMNS` for the chip.
The pass decision is ``admc verify``'s: the ideal chain's links pass, W2(twin, reference) is at most
``twin_ratio`` × W2(Gaussian fit, reference), and, when ``twin_nrmse`` is set, the twin's worst per-step
NRMSE against the reference is at most that. A loop that diverges or does not settle is status
``diverged`` with the twin's message; any other refusal is status ``error`` with its message. Never raises
for a chip's failure. Deterministic: the same inputs give the same row on any machine (torch uses one thread).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from admc.core.errors import AdmcError, ConvergenceError
from admc.targets.backends import backend_of_manifest

if TYPE_CHECKING:
    from admc.bundle.store import Bundle

OK, DIVERGED, ERROR = "ok", "diverged", "error"
NAN = float("nan")


def failed_metrics(status: str, reason: str) -> dict:
    return {"status": status, "reason": reason, "passed": False, "w2": NAN, "w2_ratio": NAN, "mmd": NAN,
            "nrmse_max_step": NAN, "nrmse_final": NAN, "nrmse_vs_ideal": NAN, "loop_iterations": -1,
            "latency_s": NAN}


def run_chip(bundle: Path | str | Bundle, reference: dict, overrides: dict, seed: int, twin_options: dict,
             criterion: dict) -> dict:
    """One chip's row (see module docstring); ``bundle``: its directory, or a loaded bundle (only read)."""
    import torch

    from admc.bundle.store import Bundle
    from admc.verify.metrics import mmd, nrmse, per_step_nrmse, wasserstein2

    torch.set_num_threads(1)
    summary = reference["summary"]
    try:
        bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
        backend = backend_of_manifest(bundle.manifest, str(bundle.path))
        twin = backend.make_twin(bundle, overrides, seed, twin_options)
        result = twin.run(reference["noise"])
        samples = result.trajectory[-1]
        target = reference["reference"]
        if not np.all(np.isfinite(samples)):
            raise ConvergenceError("twin: samples are not finite")
        w2 = float(wasserstein2(samples, target[-1]))
        steps = per_step_nrmse(result.trajectory[1:], target[1:])
        metrics = {
            "status": OK, "reason": "", "w2": w2, "w2_ratio": w2 / max(summary["w2_gaussian"], 1e-300),
            "mmd": float(mmd(samples, target[-1])), "nrmse_max_step": float(np.max(steps, initial=0.0)),
            "nrmse_final": float(nrmse(samples, target[-1])),
            "nrmse_vs_ideal": float(np.max(per_step_nrmse(result.trajectory[1:], reference["ideal"][1:]),
                                           initial=0.0)),
            "loop_iterations": int(sum(sum(phases) for phases in result.iterations)),
        }
        # The build's own estimate where the target gives one; else every loop iteration of every repeat
        # (run one after another on the machine) at the target's iteration time.
        estimate = summary.get("latency_s")
        metrics["latency_s"] = float(estimate if estimate is not None else
                                     metrics["loop_iterations"] * summary["loop_iteration_s"] * twin.repeats)
    except ConvergenceError as error:
        return failed_metrics(DIVERGED, " ".join(str(error).split()))
    except (AdmcError, ValueError, RuntimeError) as error:
        return failed_metrics(ERROR, f"{type(error).__name__}: {' '.join(str(error).split())}")
    passed = summary["ideal_passed"] and metrics["w2_ratio"] <= criterion["twin_ratio"]
    if criterion.get("twin_nrmse") is not None:
        passed = passed and metrics["nrmse_max_step"] <= criterion["twin_nrmse"]
    metrics["passed"] = bool(passed and math.isfinite(metrics["w2_ratio"]))
    if not summary["ideal_passed"]:
        metrics["reason"] = "ideal chain failed: " + "; ".join(summary["ideal_failures"])
    return metrics
