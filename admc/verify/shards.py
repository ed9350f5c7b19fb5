"""``admc verify`` over slices of its samples: each slice's runs on its own (a Ray task: ``admc.sweep.verify_shards``),
then one report judged on all of them.

Requires: a checked bundle; slices ``[start, stop)`` that together cover ``0 … samples`` in order.
Guarantees: :func:`slice_runs` runs rows ``start … stop`` of exactly the noise and conditions ``verify_bundle``
draws for ``(samples, seed)``: the reference executor, the ideal program, the canonical network at the grid
times and, with twin options, the twin (the options' seed: the same chip, its static errors, in every slice).
:func:`assemble` joins the slices in order and judges them with ``verify_bundle``'s own code (links, sample
distances, per-class figures), so the report has the same fields and figures: every run is per sample, and
the canonical scales, settled fractions and residual maxima combine exactly (to rounding); loops that
iterate to convergence stop per batch at their tolerance (1e-13), well inside 1e-12 of the unsliced figures.
The one exception is the twin's read noise, which the twin draws per batch: with read noise on, a sliced
twin run is another realisation of the same chip's noise (its figures agree statistically, not digit for
digit); with a noise-free twin they agree like the rest.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from admc.bundle.store import Bundle
from admc.runtime.simulate import SimulateOptions
from admc.targets.backends import TwinRun, backend_of_manifest
from admc.verify import conditions as verify_conditions
from admc.verify.chain import ChainRuns, chain_report, chain_runs, judged, seeded_noise, twin_options_for
from admc.verify.conditions import ConditionDraw
from admc.verify.result import VerifyReport


def slices(samples: int, count: int) -> list[tuple[int, int]]:
    """``count`` (at most ``samples``) contiguous slices of ``0 … samples``, sizes differing by at most one."""
    count = max(1, min(count, samples))
    bounds = [samples * index // count for index in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _slice_draw(conditioning: ConditionDraw, start: int, stop: int) -> ConditionDraw:
    classes = conditioning.classes[start:stop] if conditioning.classes.size else conditioning.classes
    return replace(conditioning, classes=classes,
                   conditions={name: values[start:stop] for name, values in conditioning.conditions.items()})


def slice_runs(bundle: Bundle, samples: int, seed: int, start: int, stop: int,
               twin_options: SimulateOptions | None = None) -> tuple[ChainRuns, TwinRun | None]:
    """The chain's runs (and the twin's, with ``twin_options``) on samples ``start … stop`` (module docstring)."""
    noise = seeded_noise(bundle, samples, seed)[start:stop]
    conditioning = _slice_draw(verify_conditions.draw(bundle, samples, seed), start, stop)
    runs = chain_runs(bundle, noise, conditioning, record_residuals=True)
    if twin_options is None:
        return runs, None
    backend = backend_of_manifest(bundle.manifest, str(bundle.path))
    return runs, backend.run_twin(bundle, noise, twin_options_for(bundle, twin_options, conditioning))


def _histories(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per closed phase, the slices' [k, B] residual histories side by side (a shorter one padded with NaN)."""
    joined = []
    for phase in zip(*parts, strict=True):
        length = max(history.shape[0] for history in phase)
        joined.append(np.concatenate([np.pad(history.astype(np.float64), ((0, length - history.shape[0]), (0, 0)),
                                             constant_values=np.nan) for history in phase], axis=1))
    return joined


def _settled(parts: list[ChainRuns]) -> list:
    """Per closed phase, the fraction of all samples settled (each slice's fraction weighted by its samples)."""
    total = sum(part.noise.shape[0] for part in parts)
    phases = zip(*(part.settled for part in parts), strict=True)
    return [(entries[0][0], entries[0][1], sum(part.noise.shape[0] * entry[2] for part, entry in
                                               zip(parts, entries, strict=True)) / total) for entries in phases]


def join_runs(parts: list[ChainRuns]) -> ChainRuns:
    """The slices' runs as one run of all their samples."""
    total = sum(part.noise.shape[0] for part in parts)
    squares = [sum(part.noise.shape[0] * part.canonical_scales[time] ** 2 for part in parts)
               for time in range(len(parts[0].canonical_scales))]
    return ChainRuns(np.concatenate([part.noise for part in parts]),
                     np.concatenate([part.reference for part in parts], axis=1),
                     max(part.reference_residual for part in parts),
                     np.concatenate([part.ideal for part in parts], axis=1),
                     _histories([part.ideal_history for part in parts]), _settled(parts),
                     [max(errors) for errors in zip(*(part.canonical_errors for part in parts), strict=True)],
                     [float(np.sqrt(square / total)) for square in squares], parts[0].solver, parts[0].steps)


def join_twins(parts: list[TwinRun]) -> TwinRun:
    """The slices' twin runs as one: trajectories side by side, the summary's iteration counts and residuals
    the largest of any slice."""
    summary = dict(parts[0].summary)
    for part in parts[1:]:
        for name, value in part.summary.items():
            if isinstance(value, list):
                summary[name] = [max(first, second) for first, second in zip(summary[name], value, strict=True)]
            elif isinstance(value, float | int) and not isinstance(value, bool):
                summary[name] = max(summary[name], value)
    return TwinRun(np.concatenate([part.trajectory for part in parts], axis=1),
                   _histories([part.residual_history for part in parts]), summary)


def assemble(bundle: Bundle, samples: int, seed: int, parts: list[tuple[ChainRuns, TwinRun | None]],
             tolerance: float | None = None, twin_ratio: float = 0.5,
             twin_nrmse: float | None = None) -> VerifyReport:
    """The report of ``verify_bundle`` from the slices' runs, in order (module docstring)."""
    if sum(runs.noise.shape[0] for runs, _ in parts) != samples:
        raise ValueError(f"the slices hold {sum(runs.noise.shape[0] for runs, _ in parts)} samples, not {samples}")
    conditioning = verify_conditions.draw(bundle, samples, seed)
    result = chain_report(bundle, samples, seed, join_runs([runs for runs, _ in parts]), conditioning, tolerance)
    twins = [twin for _, twin in parts]
    return judged(result, None if twins[0] is None else join_twins(twins), twin_ratio, twin_nrmse)
