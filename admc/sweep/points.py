"""Expand a validated spec into sweep points, check each against its target, and seed every chip.

Requires: a :class:`~admc.sweep.spec.SweepSpec` (axes expanded).
Guarantees:
- :func:`expand_points` lists the grid points (Cartesian product of the axes, first axis slowest), then, when
  the spec asks for sensitivity, the one-at-a-time points (every effect off, then each effect alone). Indices
  and keys depend on the spec only.
- The effects are the entries the target description declares under ``nonidealities`` that have an
  ``enabled`` switch: new effects added to a target are swept without a change here.
- :func:`chip_seed` depends on the spec's seed, the point's key and the chip index only (sha256), never on
  workers or order; :func:`chip_overrides` draws the per-chip distribution values from that seed.
- :func:`check_points` resolves every point's target description (overrides and twin non-idealities
  merged) through the target's own schema, so a bad value is refused before any work, naming the point.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from admc.core.errors import AdmcError
from admc.sweep.spec import (
    NONIDEALITY_PREFIX,
    TARGET_PREFIX,
    TWIN_AXES,
    SweepSpec,
    canonical_json,
    distribution_extremes,
    grid,
    resolve_target_reference,
)
from admc.targets.backends import backend_of
from admc.targets.description_schema import deep_merge as description_deep_merge
from admc.targets.loader import description_of_kind, load_target

GRID, SENSITIVITY = "grid", "sensitivity"
BASELINE = "baseline"  # the sensitivity point with every effect off


@dataclass(frozen=True)
class Point:
    index: int
    kind: str  # GRID or SENSITIVITY
    effect: str  # "" on grid points; BASELINE or the effect's name on sensitivity points
    parameters: dict  # the axis values of this point (JSON data)
    build: dict  # target (preset name or absolute path), target_overrides, solver, steps, ... ({} for bundles)
    twin: dict  # mode, loop_iterations, repeats
    nonidealities: dict  # nested overrides of the bundle's own non-idealities
    chips: int
    distributions: dict = field(default_factory=dict)  # "nonidealities.<effect>.<parameter>" -> distribution

    @property
    def key(self) -> str:
        return canonical_json({"kind": self.kind, "effect": self.effect, "parameters": self.parameters})


def _set_nested(mapping: dict, path: list[str], value: Any) -> None:
    for part in path[:-1]:
        mapping = mapping.setdefault(part, {})
        if not isinstance(mapping, dict):
            raise AdmcError(f"cannot set {'.'.join(path)}: {part} is not a section")
    mapping[path[-1]] = value


def deep_merge(parent: dict, child: dict) -> dict:
    """The target loader's ``inherits:`` merge, on copies (the result shares nothing with its inputs)."""
    return copy.deepcopy(description_deep_merge(parent, child))


def _base_build(spec: SweepSpec) -> dict:
    if spec.is_bundle:
        return {}
    options = spec.raw.build.model_dump(mode="json")
    options["target"] = resolve_target_reference(options["target"], spec.path, "build.target")
    if options.get("alpha") is None:
        options.pop("alpha", None)  # passed to the build only when the spec sets it
    return options


def _point(spec: SweepSpec, index: int, parameters: dict, kind: str = GRID, effect: str = "",
           effects_enabled: dict | None = None, chips: int | None = None) -> Point:
    build = _base_build(spec)
    twin = spec.raw.twin.model_dump(mode="json")
    nonidealities = twin.pop("nonidealities")
    for name, value in parameters.items():
        if name.startswith(TARGET_PREFIX):
            _set_nested(build["target_overrides"], name[len(TARGET_PREFIX):].split("."), value)
        elif name.startswith(NONIDEALITY_PREFIX):
            _set_nested(nonidealities, name[len(NONIDEALITY_PREFIX):].split("."), value)
        elif name in TWIN_AXES:
            twin[name] = value
        elif name == "target":
            build[name] = resolve_target_reference(value, spec.path, "axes.target")
        else:
            build[name] = value
    if effects_enabled is not None:
        nonidealities = deep_merge(nonidealities, {name: {"enabled": on} for name, on in effects_enabled.items()})
    distributions = dict(spec.distributions) if kind == GRID else {}
    return Point(index, kind, effect, parameters, build, twin, nonidealities,
                 spec.raw.chips if chips is None else chips, distributions)


def declared_effects(target_mapping: dict) -> list[str]:
    """The switchable effects a resolved target description declares, in its order."""
    section = target_mapping.get("nonidealities", {})
    return [name for name, entry in section.items() if isinstance(entry, dict) and "enabled" in entry]


def calibration_only_effects(target_mapping: dict) -> tuple[str, ...]:
    """The effects the description's kind lets act only with a calibration file, which a sweep cannot give."""
    return tuple(description_of_kind(str(target_mapping.get("kind")), "sweep target").calibration_only_effects)


def has_twin(target: Any) -> bool:
    """Whether the backend of a loaded target description declares a twin a sweep can run chips on."""
    backend = backend_of(target)
    return backend is not None and backend.make_twin is not None


def sweepable_effects(target_mapping: dict) -> list[str]:
    """The declared effects one-at-a-time sensitivity can measure (the calibration-only ones left out)."""
    excluded = set(calibration_only_effects(target_mapping))
    return [name for name in declared_effects(target_mapping) if name not in excluded]


def expand_points(spec: SweepSpec, base_target: dict | None = None) -> list[Point]:
    points = [_point(spec, index, parameters) for index, parameters in enumerate(grid(spec.axes))]
    if spec.raw.sensitivity is not None:
        if base_target is None:
            base_target = build_target(spec, _point(spec, 0, {}))
        effects = declared_effects(base_target)
        chosen = spec.raw.sensitivity.effects or sweepable_effects(base_target)
        chips = spec.raw.sensitivity.chips
        points.append(_point(spec, len(points), {}, SENSITIVITY, BASELINE, dict.fromkeys(effects, False), chips))
        for effect in chosen:
            enabled = {name: name == effect for name in effects}
            points.append(_point(spec, len(points), {}, SENSITIVITY, effect, enabled, chips))
    return points


# -- targets --------------------------------------------------------------------------------------------
def _load_mapping(mapping: dict, label: str) -> Any:
    """Validate a complete target description through ``load_target``; errors carry ``label``."""
    with tempfile.TemporaryDirectory(prefix="admc-sweep-target-") as directory:
        file = Path(directory) / "target.yaml"
        file.write_text(yaml.safe_dump(mapping, sort_keys=False), encoding="utf-8")
        try:
            return load_target(file)
        except AdmcError as error:
            raise AdmcError(str(error).replace(str(file), label)) from None


_TARGET_CACHE: dict[str, dict] = {}


def _reference_mapping(reference: str) -> dict:
    if reference not in _TARGET_CACHE:
        _TARGET_CACHE[reference] = load_target(reference).to_dict()
    return copy.deepcopy(_TARGET_CACHE[reference])


def build_target(spec: SweepSpec, point: Point) -> dict:
    """The resolved description the point's program is built for (target overrides in, twin ones not)."""
    if spec.is_bundle:
        from admc.bundle.store import Bundle

        return copy.deepcopy(Bundle(spec.source).manifest["target"])
    return deep_merge(_reference_mapping(point.build["target"]), point.build.get("target_overrides", {}))


def resolved_target(spec: SweepSpec, point: Point) -> dict:
    """The point's description with its twin non-idealities merged in (what its chips run with)."""
    return deep_merge(build_target(spec, point), {"nonidealities": point.nonidealities})


def _describe(spec: SweepSpec, point: Point) -> str:
    what = canonical_json(point.parameters) if point.kind == GRID else f"sensitivity {point.effect}"
    return f"{spec.path}: point {point.index} ({what})"


def check_points(spec: SweepSpec) -> None:
    """Every point's target (and schedule) is valid; raises AdmcError naming the spec, point and field."""
    from admc.core.schedule import time_grid
    from admc.passes.step_phases import build_schedule

    grid_points = [_point(spec, index, parameters) for index, parameters in enumerate(grid(spec.axes))]
    checked: set[str] = set()
    schedules: set[tuple] = set()
    for point in grid_points:
        try:
            base = build_target(spec, point)
        except AdmcError as error:
            raise AdmcError(f"{_describe(spec, point)}: {error}") from None
        candidates = [deep_merge(base, {"nonidealities": point.nonidealities})]
        for name, distribution in spec.distributions.items():
            for extreme in distribution_extremes(distribution):
                override: dict = {}
                _set_nested(override, name.split("."), extreme)
                candidates.append(deep_merge(candidates[0], override))
        for candidate in candidates:
            key = canonical_json(candidate)
            if key not in checked:
                target = _load_mapping(candidate, _describe(spec, point))
                checked.add(key)
                if not has_twin(target):
                    raise AdmcError(f"{_describe(spec, point)}: field 'build.target': target kind "
                                    f"{target.kind!r} has no digital twin to sweep")
        if not spec.is_bundle:
            options = (point.build["solver"], point.build["steps"], point.build["fp_iterations"])
            if options not in schedules:
                try:
                    build_schedule(options[0], time_grid(steps=options[1]), options[2])
                except AdmcError as error:
                    raise AdmcError(f"{_describe(spec, point)}: field 'build.solver': {error}") from None
                schedules.add(options)
    if spec.raw.sensitivity is not None and spec.raw.sensitivity.effects is not None:
        target_mapping = build_target(spec, _point(spec, 0, {}))
        effects = declared_effects(target_mapping)
        calibration_only = calibration_only_effects(target_mapping)
        for index, effect in enumerate(spec.raw.sensitivity.effects):
            if effect not in effects:
                raise AdmcError(f"{spec.path}: field 'sensitivity.effects[{index}]': {effect!r} is not an effect "
                                f"of the target; declared: {', '.join(effects)}")
            if effect in calibration_only:
                raise AdmcError(f"{spec.path}: field 'sensitivity.effects[{index}]': {effect!r} acts only with a "
                                "machine's calibration file, which a sweep does not take; it would measure +0")


# -- chips -------------------------------------------------------------------------------------------------
def chip_seed(spec_seed: int, point_key: str, chip: int) -> int:
    """A 62-bit seed from the spec's seed, the point and the chip (independent of workers and order)."""
    digest = hashlib.sha256(f"admc-sweep|{spec_seed}|{point_key}|{chip}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def chip_overrides(point: Point, seed: int) -> tuple[dict, dict]:
    """(nested non-ideality overrides of this chip, {axis name: drawn value}) for the point's distributions."""
    overrides = copy.deepcopy(point.nonidealities)
    drawn: dict[str, Any] = {}
    if not point.distributions:
        return overrides, drawn
    generator = np.random.default_rng(seed)
    for name in sorted(point.distributions):
        distribution = point.distributions[name]
        if distribution["distribution"] == "choice":
            value = copy.deepcopy(distribution["values"][int(generator.integers(len(distribution["values"])))])
        else:
            low, high = distribution_extremes(distribution)
            if distribution["distribution"] == "uniform":
                value = float(generator.uniform(distribution["low"], distribution["high"]))
            else:
                value = float(generator.normal(distribution["mean"], distribution["std"]))
            value = min(max(value, low), high)  # the range validated before the sweep
        _set_nested(overrides, name[len(NONIDEALITY_PREFIX):].split("."), value)
        drawn[name] = value
    return overrides, drawn
