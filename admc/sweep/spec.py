"""The sweep specification: its schema, and validation of everything it names before any work starts.

Requires: a YAML file (read with ``safe_load``) of the form documented in README "Sweeps" and
``examples/sweeps/``.
Guarantees: :func:`load_spec` returns a :class:`SweepSpec` whose paths are absolute, whose axes are
expanded to value lists (ranges) or kept as per-chip distributions, and whose every point has been checked
against the target's own schema (build options, target overrides, non-ideality values); any problem is an
``AdmcError`` whose message names the spec file and the field (``axes.steps[2]``, ``build.target``, ...).
Nothing is written to disk.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from admc.core.errors import AdmcError

# Axis names that are build options; each maps to the keyword of ``admc.compiler.driver.build``.
BUILD_AXES = ("target", "solver", "steps", "fp_iterations", "layout", "alpha")
# Axis names that are options of the twin run (no rebuild).
TWIN_AXES = ("mode", "loop_iterations", "repeats")
TARGET_PREFIX = "target."  # target.<section>.<field>: an override of the target description (rebuild)
NONIDEALITY_PREFIX = "nonidealities."  # nonidealities.<effect>.<parameter>: a twin parameter (no rebuild)
DISTRIBUTIONS = ("uniform", "normal", "choice")
# A normal distribution's values are checked against the target's schema at mean ± this many std.
NORMAL_CHECK_STDS = 5.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BuildOptions(_Strict):
    target: str = "aoc-48"
    solver: str = "implicit-euler"
    steps: int = Field(16, ge=1, le=100_000)
    fp_iterations: int | None = Field(None, ge=1, le=100_000)
    layout: Literal["packed", "ring", "auto"] = "auto"
    alpha: Any = None
    target_overrides: dict[str, Any] = Field(default_factory=dict)


class TwinOptions(_Strict):
    mode: Literal["discrete", "continuous"] = "discrete"
    loop_iterations: int | None = Field(None, ge=1, le=10_000_000)
    repeats: int | None = Field(None, ge=1, le=10_000)
    nonidealities: dict[str, Any] = Field(default_factory=dict)


class Criterion(_Strict):
    """The verify links of ``admc verify`` that judge a chip (same names, same defaults)."""

    twin_ratio: float = Field(0.5, gt=0)
    twin_nrmse: float | None = Field(None, gt=0)


class Sensitivity(_Strict):
    """One-at-a-time points: every effect off (baseline), then each effect alone at its preset value."""

    chips: int = Field(20, ge=1, le=1_000_000)
    effects: list[str] | None = None  # default: every effect the target declares


class RawSpec(_Strict):
    name: str = Field(min_length=1)
    model: str | None = None
    bundle: str | None = None
    seed: int = Field(0, ge=0, le=2**62)
    chips: int = Field(ge=1, le=1_000_000)
    samples: int = Field(64, ge=2, le=1_000_000)
    build: BuildOptions = Field(default_factory=BuildOptions)
    twin: TwinOptions = Field(default_factory=TwinOptions)
    axes: dict[str, Any] = Field(default_factory=dict)
    criterion: Criterion = Field(default_factory=Criterion)
    sensitivity: Sensitivity | None = None


class SweepSpec:
    """A validated sweep: the raw fields plus absolute paths and expanded axes."""

    def __init__(self, raw: RawSpec, path: Path, source: Path, axes: dict[str, list], distributions: dict):
        self.raw = raw
        self.path = path
        self.source = source  # the model or bundle, absolute
        self.axes = axes  # name -> list of values (a Cartesian product of points)
        self.distributions = distributions  # "nonidealities.<effect>.<parameter>" -> distribution mapping

    @property
    def is_bundle(self) -> bool:
        return self.raw.bundle is not None

    def canonical(self) -> dict:
        """Everything that determines the results (the ``name`` included), as plain JSON data."""
        data = self.raw.model_dump(mode="json")
        data["model"] = data["bundle"] = None
        data["source"] = {"kind": "bundle" if self.is_bundle else "model", "sha256": _source_digest(self.source)}
        data["axes"] = self.axes
        data["distributions"] = self.distributions
        return data


def _source_digest(path: Path) -> str:
    import hashlib

    if path.is_dir():  # a bundle: its manifest lists every payload's sha256
        return hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fail(path: Path, field: str, message: str) -> AdmcError:
    return AdmcError(f"{path}: field '{field}': {message}")


def _pydantic_error(path: Path, error: ValidationError) -> AdmcError:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "<top level>"
    return _fail(path, field, first["msg"])


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec (see module docstring)."""
    path = Path(path).absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AdmcError(f"{path}: sweep spec not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AdmcError(f"{path}: cannot read the sweep spec ({error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise AdmcError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise AdmcError(f"{path}: a sweep spec is a mapping (name, model or bundle, chips, axes, ...)")
    return validate_spec(data, path)


def validate_spec(data: dict, path: Path) -> SweepSpec:
    try:
        raw = RawSpec.model_validate(data)
    except ValidationError as error:
        raise _pydantic_error(path, error) from None
    source = _check_source(raw, path)
    axes, distributions = _expand_axes(raw, path)
    spec = SweepSpec(raw, path, source, axes, distributions)
    from admc.sweep.points import check_points

    check_points(spec)
    return spec


def _check_source(raw: RawSpec, path: Path) -> Path:
    if (raw.model is None) == (raw.bundle is None):
        raise _fail(path, "model", "give exactly one of 'model' (an .onnx or .pt2 file) and 'bundle'")
    field = "model" if raw.model is not None else "bundle"
    source = Path(os.path.normpath(path.parent / (raw.model or raw.bundle)))
    if field == "model":
        if source.suffix not in (".onnx", ".pt2"):
            raise _fail(path, field, f"{source.name}: expected an .onnx or .pt2 file")
        if not source.is_file():
            raise _fail(path, field, f"{source}: file not found")
        resolve_target_reference(raw.build.target, path, "build.target")
        if raw.build.alpha is not None and not _build_accepts("alpha"):
            raise _fail(path, "build.alpha", "this admc's build takes no 'alpha' option (α selection is not "
                        "available)")
    else:
        from admc.bundle.store import Bundle

        try:
            Bundle(source)
        except AdmcError as error:
            raise _fail(path, field, str(error)) from None
        given = raw.model_fields_set & {"build"}
        if given:
            raise _fail(path, "build", "a bundle is already built: build options apply to 'model' sweeps only")
    return source


def resolve_target_reference(target: str, path: Path, field: str) -> str:
    """A preset name as it is; a file path made absolute relative to the spec file."""
    from admc.targets.loader import list_presets

    if target in list_presets():
        return target
    candidate = Path(os.path.normpath(path.parent / target))
    if not candidate.is_file():
        raise _fail(path, field, f"{target!r} is neither a preset ({', '.join(list_presets())}) nor a file")
    return str(candidate)


def _build_accepts(keyword: str) -> bool:
    from admc.compiler.build_options import BuildOptions

    return keyword in {entry.name for entry in dataclasses.fields(BuildOptions)}


def _expand_axes(raw: RawSpec, path: Path) -> tuple[dict[str, list], dict[str, dict]]:
    axes: dict[str, list] = {}
    distributions: dict[str, dict] = {}
    for name, value in raw.axes.items():
        field = f"axes.{name}"
        _check_axis_name(raw, path, name, field)
        if isinstance(value, list):
            if not value:
                raise _fail(path, field, "an axis needs at least one value")
            values = value
        elif isinstance(value, dict) and "distribution" in value:
            if not name.startswith(NONIDEALITY_PREFIX):
                raise _fail(path, field, "distributions (drawn per chip) apply to 'nonidealities.*' axes only")
            distributions[name] = _check_distribution(value, path, field)
            continue
        elif isinstance(value, dict):
            values = _range(value, path, field)
        else:
            values = [value]
        for index, item in enumerate(values):
            if not _json_scalar(item):
                raise _fail(path, f"{field}[{index}]", f"expected a number, string, boolean or null, got {item!r}")
        if name == "target":  # checked here; kept as written, so seeds do not depend on where the files are
            for index, item in enumerate(values):
                if not isinstance(item, str):
                    raise _fail(path, f"{field}[{index}]", f"expected a preset name or a file, got {item!r}")
                resolve_target_reference(item, path, f"{field}[{index}]")
        axes[name] = values
    return axes, distributions


def _json_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int, str))


def _check_axis_name(raw: RawSpec, path: Path, name: str, field: str) -> None:
    build_axis = name in BUILD_AXES or name.startswith(TARGET_PREFIX)
    if name in BUILD_AXES or name in TWIN_AXES:
        pass
    elif name.startswith(TARGET_PREFIX) and len(name.split(".")) >= 3:
        pass
    elif name.startswith(NONIDEALITY_PREFIX) and len(name.split(".")) == 3:
        pass
    else:
        known = ", ".join([*BUILD_AXES, *TWIN_AXES, "target.<section>.<field>", "nonidealities.<effect>.<parameter>"])
        raise _fail(path, field, f"unknown axis {name!r}; known: {known}")
    if build_axis and raw.bundle is not None:
        raise _fail(path, field, "a build option cannot vary in a sweep of a built bundle (give 'model')")
    if name == "alpha" and not _build_accepts("alpha"):
        raise _fail(path, field, "this admc's build takes no 'alpha' option (α selection is not available)")


def _range(value: dict, path: Path, field: str) -> list:
    """``{start, stop, count}`` (evenly spaced, both ends included) or ``{start, stop, step}``."""
    keys = set(value)
    if keys not in ({"start", "stop", "count"}, {"start", "stop", "step"}):
        raise _fail(path, field, "a range is {start, stop, count} or {start, stop, step}; a distribution has "
                    f"'distribution: {' | '.join(DISTRIBUTIONS)}'; got keys {sorted(keys)}")
    for key in keys:
        if isinstance(value[key], bool) or not isinstance(value[key], (int, float)) or not math.isfinite(value[key]):
            raise _fail(path, f"{field}.{key}", f"expected a finite number, got {value[key]!r}")
    start, stop = value["start"], value["stop"]
    integers = all(isinstance(value[key], int) for key in keys)
    if "count" in keys:
        count = value["count"]
        if not isinstance(count, int) or count < 1 or count > 100_000:
            raise _fail(path, f"{field}.count", f"expected an integer in [1, 100000], got {count!r}")
        if count == 1:
            return [start]
        values = [start + (stop - start) * index / (count - 1) for index in range(count)]
    else:
        step = value["step"]
        if step == 0 or (stop - start) / step < 0:
            raise _fail(path, f"{field}.step", f"a step of {step!r} never goes from {start!r} to {stop!r}")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        if count > 100_000:
            raise _fail(path, f"{field}.step", f"{count} values; at most 100000 per axis")
        values = [start + index * step for index in range(count)]
    if integers and all(float(item).is_integer() for item in values):
        return [int(round(item)) for item in values]
    return [float(item) for item in values]


def _check_distribution(value: dict, path: Path, field: str) -> dict:
    kind = value["distribution"]
    parameters = {"uniform": ("low", "high"), "normal": ("mean", "std"), "choice": ("values",)}
    if kind not in parameters:
        raise _fail(path, f"{field}.distribution", f"expected one of {', '.join(DISTRIBUTIONS)}, got {kind!r}")
    expected = {"distribution", *parameters[kind]}
    if set(value) != expected:
        raise _fail(path, field, f"a {kind} distribution has exactly {sorted(expected)}, got {sorted(value)}")
    if kind == "choice":  # one of the listed values per chip (e.g. sets of dead channels)
        if not isinstance(value["values"], list) or not value["values"]:
            raise _fail(path, f"{field}.values", "expected a non-empty list of values to choose from")
        return {"distribution": kind, "values": value["values"]}
    for key in parameters[kind]:
        number = value[key]
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise _fail(path, f"{field}.{key}", f"expected a finite number, got {number!r}")
    if kind == "uniform" and value["low"] > value["high"]:
        raise _fail(path, f"{field}.low", f"{value['low']!r} exceeds high = {value['high']!r}")
    if kind == "normal" and value["std"] < 0:
        raise _fail(path, f"{field}.std", f"expected a non-negative std, got {value['std']!r}")
    return {key: (float(item) if key != "distribution" else item) for key, item in value.items()}


def distribution_extremes(distribution: dict) -> tuple:
    """The values checked against the target's schema before the sweep (draws outside are clipped to them);
    every value of a choice."""
    if distribution["distribution"] == "choice":
        return tuple(distribution["values"])
    if distribution["distribution"] == "uniform":
        return distribution["low"], distribution["high"]
    spread = NORMAL_CHECK_STDS * distribution["std"]
    return distribution["mean"] - spread, distribution["mean"] + spread


def grid(axes: dict[str, list]) -> list[dict]:
    """The Cartesian product of the axes, the first axis varying slowest; [{}] without axes."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(axes[name] for name in names))]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
