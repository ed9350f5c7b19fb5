"""One build per sweep point, cached by the hash of its inputs, plus the point's reference run.

Requires: the model's bytes and file name, the point's resolved target description (a complete mapping),
its build options, and the sample count and seed of the point's input noise.
Guarantees:
- :func:`build_key` is the sha256 of everything the build and reference depend on (admc version, source
  bytes, target description, options, samples, seed): equal inputs share one build, in a run and across
  resumed runs.
- :func:`build_point` runs anywhere (a Ray worker on another machine: no path of the driver's is used) and
  returns either the bundle's files (unless it was given them) with the reference data, or a failure status
  with its reason: a refused build is ``build_failed``, an ideal program or reference that does not converge
  ``diverged``; it never raises on bad input.
- :func:`store` / :func:`load` keep outcomes under ``RESULTS_DIR/builds/<key>/`` (written to a temporary
  directory and renamed: a killed run leaves complete entries only). :func:`materialise_bundle` writes the
  files once per machine for the twin to read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml

from admc import __version__
from admc.core.atomic import staged_directory
from admc.core.errors import AdmcError, ConvergenceError
from admc.sweep.spec import canonical_json

OK, BUILD_FAILED, DIVERGED, ERROR = "ok", "build_failed", "diverged", "error"
BUILD_OPTIONS = ("solver", "steps", "fp_iterations", "layout", "alpha")


def build_key(source_sha256: str, source_name: str, target: dict | None, options: dict, samples: int,
              seed: int) -> str:
    data = {"admc": __version__, "source": source_sha256, "name": source_name, "target": target,
            "options": {name: options[name] for name in BUILD_OPTIONS if name in options},
            "samples": samples, "seed": seed}
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def _bundle_files(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def point_reference(bundle, samples: int, seed: int) -> dict:
    """The data every chip of a point compares against: the same as ``admc verify`` computes."""
    from admc.verify.chain import verify_ideal_chain
    from admc.verify.metrics import gaussian_baseline, wasserstein2

    chain = verify_ideal_chain(bundle, samples, seed)
    reference = chain.trajectories["reference"]
    gaussian = gaussian_baseline(reference[-1], reference.shape[1], seed + 1)
    report = bundle.manifest.get("report", {})
    timing = bundle.manifest["target"].get("timing", {})
    return {
        "noise": chain.noise,
        "reference": reference,
        "ideal": chain.trajectories["ideal"],
        "summary": {
            "ideal_passed": bool(chain.passed),
            "ideal_failures": [link.name for link in chain.links if not link.passed],
            "w2_gaussian": float(wasserstein2(gaussian, reference[-1])),
            "modules_used": int(report.get("modules_used", 0)),
            "state_channels": int(report.get("state_channels", 0)),
            "steps": len(chain.trajectories["reference"]) - 1,
            "loop_iteration_s": float(timing.get("loop_iteration_s", 0.0)),
            "latency_s": report.get("latency_s"),  # a build's own estimate, where the target gives one
            "energy_j": report.get("energy_j"),
        },
    }


def build_point(source_bytes: bytes | None, source_name: str, target: dict | None, options: dict, samples: int,
                seed: int, bundle_files: dict[str, bytes] | None = None) -> dict:
    """Build (or take ``bundle_files``) and compute the point's reference; see module docstring."""
    import torch

    from admc.bundle.store import Bundle
    from admc.compiler.driver import BuildOptions, build

    torch.set_num_threads(1)  # one task per CPU; also keeps reductions identical wherever it runs
    with tempfile.TemporaryDirectory(prefix="admc-sweep-build-") as directory:
        work = Path(directory)
        try:
            if bundle_files is None:
                model = work / "source" / source_name
                model.parent.mkdir()
                model.write_bytes(source_bytes)
                target_file = work / "target.yaml"
                target_file.write_text(yaml.safe_dump(target, sort_keys=False), encoding="utf-8")
                accepted = {entry.name for entry in dataclasses.fields(BuildOptions)}
                keywords = {name: options[name] for name in BUILD_OPTIONS if name in options and name in accepted}
                build(model, work / "bundle", target=target_file, **keywords)
                files = _bundle_files(work / "bundle")
            else:
                files = bundle_files
                for name, content in files.items():
                    (work / "bundle" / name).parent.mkdir(parents=True, exist_ok=True)
                    (work / "bundle" / name).write_bytes(content)
        except AdmcError as error:
            return {"status": BUILD_FAILED, "reason": _one_line(error)}
        try:
            reference = point_reference(Bundle(work / "bundle"), samples, seed)
        except ConvergenceError as error:  # the ideal program (or the reference solver) does not converge
            return {"status": DIVERGED, "reason": _one_line(error)}
        except AdmcError as error:
            return {"status": ERROR, "reason": _one_line(error)}
    # Given files are the caller's already: not sent back (36M weights: 1.1 GB through the object store).
    return {"status": OK, "reason": "", **({"files": files} if bundle_files is None else {}), **reference}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


# -- the on-disk cache ------------------------------------------------------------------------------------
ARRAYS = ("noise", "reference", "ideal")


def store(directory: Path, key: str, outcome: dict) -> None:
    final = directory / key
    if final.exists():
        return
    with staged_directory(final, keep_existing=True) as staging:
        if outcome["status"] == OK:
            for name, content in outcome["files"].items():
                (staging / "bundle" / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / "bundle" / name).write_bytes(content)
            buffer = io.BytesIO()
            np.savez(buffer, **{name: outcome[name] for name in ARRAYS})
            (staging / "reference.npz").write_bytes(buffer.getvalue())
        record = {"status": outcome["status"], "reason": outcome["reason"], "summary": outcome.get("summary")}
        (staging / "point.json").write_text(json.dumps(record, sort_keys=True, indent=1) + "\n")


def load(directory: Path, key: str) -> dict | None:
    """A stored outcome (the same shape :func:`build_point` returns), or None."""
    entry = directory / key
    if not (entry / "point.json").is_file():
        return None
    record = json.loads((entry / "point.json").read_text())
    if record["status"] != OK:
        return record
    with np.load(entry / "reference.npz", allow_pickle=False) as arrays:
        record.update({name: arrays[name] for name in ARRAYS})
    record["files"] = _bundle_files(entry / "bundle")
    return record


def materialised_directory(key: str, manifest: bytes) -> Path:
    """Where :func:`materialise_bundle` writes the bundle of build ``key`` whose ``manifest.json`` is ``manifest``."""
    root = Path(tempfile.gettempdir()) / f"admc-sweep-bundles-{os.getuid()}"
    return root / f"{key[:32]}-{hashlib.sha256(manifest).hexdigest()[:16]}"


def materialise_bundle(key: str, files: dict[str, bytes]) -> Path:
    """The bundle's directory on this machine, written once. Its name holds the manifest's hash (the manifest
    lists every payload's sha256), so a directory only ever holds these files: concurrent workers install it
    by an atomic rename, the first one wins, and nothing is ever moved away under a reader."""
    final = materialised_directory(key, files["manifest.json"])
    if (final / "manifest.json").is_file():
        return final
    with staged_directory(final, keep_existing=True) as staging:
        for name, content in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(content)
    return final
