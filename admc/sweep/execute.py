"""Run a sweep on Ray: builds (cached), then every chip as a task, rows streamed to the results table.

Requires: a validated :class:`~admc.sweep.spec.SweepSpec` and a results directory that is new, empty, or
holds an earlier run of the same spec (same canonical spec; its finished rows are kept).
Guarantees:
- One build per distinct build input (hash) runs as a Ray task, or is read from ``RESULTS_DIR/builds``;
  each chip of each point is a task whose seed comes from the spec and the point only (``chip_seed``).
- Finished rows are flushed as part files every ``flush_rows`` rows or ``flush_seconds`` (and on Ctrl-C);
  a resumed run skips finished (point, chip) pairs; the consolidated table equals an uninterrupted run's,
  for any number of workers.
- A refused build gives ``build_failed`` rows for its chips; a diverging chip a ``diverged`` row. A task
  Ray loses (a worker or node dies) gives no row and is counted in ``lost``: running again retries it.
- Bad input (spec mismatch with the directory, unknown format) raises ``AdmcError`` before Ray starts.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from admc.core.atomic import write_file_atomically
from admc.core.errors import AdmcError
from admc.frontends.model_file import model_content, model_format
from admc.sweep import build_cache
from admc.sweep.chip import ERROR, failed_metrics, run_chip
from admc.sweep.cluster import cluster_cpus, ray_session
from admc.sweep.loaded_bundles import SharedBundle, loaded_bundle
from admc.sweep.points import Point, build_target, chip_overrides, chip_seed, expand_points
from admc.sweep.results import FORMATS, PartWriter, consolidate, final_path, finished
from admc.sweep.spec import SweepSpec, canonical_json

SPEC_RECORD = "sweep.json"
RUNS_LOG = "runs.jsonl"
BUILDS = "builds"


@dataclass
class SweepSummary:
    results: Path
    rows: int
    rows_run: int
    passed: int
    wall_s: float
    lost: int = 0  # chips Ray could not finish (a worker or node lost): no row; running again retries them


def chip_task(bundle: SharedBundle, reference: dict, overrides: dict, seed: int, twin_options: dict,
              criterion: dict) -> dict:
    """A Ray task: one chip. Its worker fetches, writes and loads the bundle once and keeps it for its next
    chips of the same bundle (``loaded_bundles``); the chip's twin is its own (its seed's errors and noise)."""
    try:
        loaded = loaded_bundle(bundle)
    except AdmcError as error:  # what ``run_chip`` reports for a bundle it cannot load
        return failed_metrics(ERROR, f"{type(error).__name__}: {' '.join(str(error).split())}")
    return run_chip(loaded, reference, overrides, seed, twin_options, criterion)


def _prepare_directory(spec: SweepSpec, directory: Path, file_format: str) -> None:
    if file_format not in FORMATS:
        raise AdmcError(f"--format: expected one of {', '.join(FORMATS)}, got {file_format!r}")
    record = {"spec": spec.canonical(), "format": file_format}
    record_path = directory / SPEC_RECORD
    if record_path.is_file():
        try:
            existing = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise AdmcError(f"{record_path}: unreadable ({error})") from None
        if existing != json.loads(json.dumps(record)):
            raise AdmcError(f"{directory}: holds the results of a different sweep (or format); resume needs the "
                            "same spec and --format, or give a new directory")
        return
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise AdmcError(f"{directory}: exists and is not a sweep's results directory; give a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    write_file_atomically(record_path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def _source(spec: SweepSpec) -> tuple[bytes | None, dict | None, str, str]:
    """(model bytes, bundle files, name, sha256 of the source)."""
    if spec.is_bundle:
        files = {str(path.relative_to(spec.source)): path.read_bytes()
                 for path in sorted(spec.source.rglob("*")) if path.is_file()}
        return None, files, spec.source.name, hashlib.sha256(files["manifest.json"]).hexdigest()
    content = model_content(spec.source, model_format(spec.source))
    return content, None, spec.source.name, hashlib.sha256(content).hexdigest()


def _row(point: Point, chip: int, seed: int, drawn: dict, key: str, metrics: dict, summary: dict | None) -> dict:
    summary = summary or {}
    return {"point": point.index, "chip": chip, "kind": point.kind, "effect": point.effect,
            "parameters": canonical_json(point.parameters), "chip_parameters": canonical_json(drawn),
            "build": key, "seed": seed, **metrics, "modules_used": int(summary.get("modules_used", 0)),
            "state_channels": int(summary.get("state_channels", 0)), "steps": int(summary.get("steps", 0))}


def _warn(message: str) -> None:
    print(f"admc sweep: {message}", file=sys.stderr, flush=True)


class _Rows:
    """Where finished rows go: counted, shown on the progress bar, flushed as part files every ``flush_rows`` rows
    or ``flush_seconds`` (and on :meth:`close`), and handed to ``on_row``."""

    def __init__(self, directory: Path, total: int, initial: int, progress: bool, flush_rows: int,
                 flush_seconds: float, on_row: Callable[[dict], None] | None):
        self.writer = PartWriter(directory)
        self.buffer: list[dict] = []
        self.last_flush = time.monotonic()
        self.flush_rows, self.flush_seconds, self.on_row = flush_rows, flush_seconds, on_row
        self.run = self.passed = self.failed = 0
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="chip", file=sys.stderr, dynamic_ncols=True)

    def emit(self, row: dict) -> None:
        self.buffer.append(row)
        self.run += 1
        self.passed += bool(row["passed"])
        self.failed += not row["passed"]
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(passed=self.passed, failed=self.failed, refresh=False)
        if len(self.buffer) >= self.flush_rows or time.monotonic() - self.last_flush >= self.flush_seconds:
            self.writer.write(self.buffer)
            self.buffer.clear()
            self.last_flush = time.monotonic()
        if self.on_row is not None:
            self.on_row(row)

    def close(self) -> None:
        self.writer.write(self.buffer)
        if self.bar is not None:
            self.bar.close()


def run_sweep(spec: SweepSpec, directory: str | Path, *, workers: int | None = None, address: str | None = None,
              file_format: str = "parquet", progress: bool = True, flush_rows: int = 64,
              flush_seconds: float = 10.0, on_row: Callable[[dict], None] | None = None) -> SweepSummary:
    """Run (or resume) ``spec`` into ``directory``; see module docstring. ``on_row`` sees each finished row."""
    directory = Path(directory)
    _prepare_directory(spec, directory, file_format)
    started = time.perf_counter()
    points = expand_points(spec)
    done = finished(directory, file_format)
    total = sum(point.chips for point in points)
    todo = {point.index: [chip for chip in range(point.chips) if (point.index, chip) not in done]
            for point in points}
    todo = {index: chips for index, chips in todo.items() if chips}
    rows_run = passed = lost = 0
    if todo:
        source = _source(spec)
        keys, targets = _builds(spec, points, todo, source)
        rows = _Rows(directory, total, total - sum(len(chips) for chips in todo.values()), progress, flush_rows,
                     flush_seconds, on_row)
        try:
            with ray_session(workers, address) as ray:
                lost = _run_on_ray(ray, spec, source, keys, targets, todo, rows, directory / BUILDS)
        finally:
            rows.close()
        rows_run, passed = rows.run, rows.passed
    results = consolidate(directory, file_format) if (todo or not final_path(directory, file_format).is_file()) \
        else final_path(directory, file_format)
    wall = time.perf_counter() - started
    with open(directory / RUNS_LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps({"wall_s": round(wall, 3), "rows_run": rows_run, "workers": workers,
                              "address": address}) + "\n")
    return SweepSummary(results, total, rows_run, passed, wall, lost)


def _builds(spec: SweepSpec, points: list[Point], todo: dict, source: tuple) -> tuple[dict, dict]:
    """({build key: the unfinished points it serves}, {build key: the point's resolved target or None})."""
    _, _, name, digest = source
    keys: dict[str, list[Point]] = {}
    targets: dict[str, dict | None] = {}
    for point in points:
        if point.index not in todo:
            continue
        target = None if spec.is_bundle else build_target(spec, point)
        key = build_cache.build_key(digest, name, target, point.build, spec.raw.samples, spec.raw.seed)
        keys.setdefault(key, []).append(point)
        targets[key] = target
    return keys, targets


def _run_on_ray(ray, spec: SweepSpec, source: tuple, keys: dict, targets: dict, todo: dict, rows: _Rows,
                builds_directory: Path) -> int:
    """Build (or read from the cache) every build key's bundle, then run its points' unfinished chips; return how
    many chips Ray lost. Builds and chips run as tasks; at most two chips per CPU are in flight."""
    source_bytes, bundle_files, name, _ = source
    remote_build = ray.remote(num_cpus=1)(build_cache.build_point)
    remote_chip = ray.remote(num_cpus=1)(chip_task)
    source_ref = ray.put(source_bytes) if source_bytes is not None else None
    bundle_ref = ray.put(bundle_files) if bundle_files is not None else None
    pending_builds: dict = {}
    ready_builds: list[tuple[str, dict]] = []
    for key in keys:
        cached = build_cache.load(builds_directory, key)
        if cached is not None:
            ready_builds.append((key, cached))
        else:
            task = remote_build.remote(source_ref, name, targets[key], keys[key][0].build, spec.raw.samples,
                                       spec.raw.seed, bundle_ref)
            pending_builds[task] = key
    queue: deque = deque()
    in_flight: dict = {}
    limit, lost = 2 * cluster_cpus(ray), 0
    while pending_builds or ready_builds or queue or in_flight:
        for key, outcome in ready_builds:
            if outcome["status"] == build_cache.OK and "files" not in outcome:  # a given bundle: not sent back
                outcome = {**outcome, "files": bundle_files}
            build_cache.store(builds_directory, key, outcome)
            queue.extend(_chips(spec, keys[key], todo, key, outcome, ray, bundle_ref))
        ready_builds.clear()
        while queue and len(in_flight) < limit:
            item = queue.popleft()
            if item[0] == "row":
                rows.emit(item[1])
                continue
            _, point, chip, seed, drawn, key, arguments, summary = item
            in_flight[remote_chip.remote(*arguments)] = (point, chip, seed, drawn, key, summary)
        waiting = list(pending_builds) + list(in_flight)
        if not waiting:
            continue
        ready, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
        for reference in ready:
            if reference in pending_builds:
                lost += _finish_build(ray, reference, pending_builds.pop(reference), keys, todo, ready_builds)
            else:
                lost += _finish_chip(ray, reference, in_flight.pop(reference), rows)
    return lost


def _finish_build(ray, reference, key: str, keys: dict, todo: dict, ready_builds: list) -> int:
    """Queue a finished build's outcome; a build Ray lost loses all its chips (returned)."""
    try:
        ready_builds.append((key, ray.get(reference)))
    except ray.exceptions.RayError as error:  # a lost worker, not the build's answer
        _warn(f"build {key[:12]} lost ({type(error).__name__}); its chips are not run")
        return sum(len(todo[point.index]) for point in keys[key])
    return 0


def _finish_chip(ray, reference, task: tuple, rows: _Rows) -> int:
    """Emit a finished chip's row; a chip Ray lost gives no row (so a resume retries it) and counts 1."""
    point, chip, seed, drawn, key, summary = task
    try:
        metrics = ray.get(reference)
    except ray.exceptions.RayError as error:
        # Not the chip's result (a worker died, a node left): no row, so a resume retries it.
        _warn(f"point {point.index} chip {chip} lost ({type(error).__name__})")
        return 1
    rows.emit(_row(point, chip, seed, drawn, key, metrics, summary))
    return 0


def _chips(spec: SweepSpec, points: list[Point], todo: dict, key: str, outcome: dict, ray,
           bundle_ref=None) -> list[tuple]:
    """Queue items for every unfinished chip of ``points``: finished rows for a refused build, else tasks. The
    bundle goes to the object store once (``bundle_ref``: the spec's own bundle, already there)."""
    items: list[tuple] = []
    if outcome["status"] != build_cache.OK:
        for point in points:
            for chip in todo[point.index]:
                seed = chip_seed(spec.raw.seed, point.key, chip)
                _, drawn = chip_overrides(point, seed)
                metrics = failed_metrics(outcome["status"], outcome["reason"])
                items.append(("row", _row(point, chip, seed, drawn, key, metrics, None)))
        return items
    shared = bundle_ref if bundle_ref is not None else ray.put(outcome["files"])
    bundle = SharedBundle.of(key, outcome["files"], shared)
    reference = ray.put({name: outcome[name] for name in (*build_cache.ARRAYS, "summary")})
    criterion = spec.raw.criterion.model_dump(mode="json")
    for point in points:
        for chip in todo[point.index]:
            seed = chip_seed(spec.raw.seed, point.key, chip)
            overrides, drawn = chip_overrides(point, seed)
            arguments = (bundle, reference, overrides, seed, point.twin, criterion)
            items.append(("chip", point, chip, seed, drawn, key, arguments, outcome["summary"]))
    return items
