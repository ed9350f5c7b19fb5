"""``admc verify --workers K`` / ``--address ADDR``: verify's samples sharded over Ray tasks, one report.

Requires: ray (the ``sweep`` extra); a bundle directory.
Guarantees: :func:`verify_on_ray` takes the arguments of ``admc.api.Bundle.verify`` and returns the report it
would (``admc.verify.shards``: the same figures, the twin's read noise aside). The samples are cut into
contiguous slices (``shards``; default one per CPU of the Ray session), each a task running
``shards.slice_runs`` on the bundle it fetches from the object store once per worker (``loaded_bundles``:
written once per machine, loaded once per worker process); torch runs on one thread in each. The driver
reads a measured machine itself (a calibration file need not exist on the workers) and assembles the
report. The Ray session is ``cluster.ray_session``'s: a local instance of ``workers`` CPUs, or the cluster
at ``address``; nothing of it outlives the call.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from admc.core.errors import AdmcError
from admc.sweep.loaded_bundles import SharedBundle


def shard_task(bundle: SharedBundle, samples: int, seed: int, start: int, stop: int, twin_options):
    """A Ray task: the runs of samples ``start … stop`` (``admc.verify.shards.slice_runs``)."""
    import torch

    from admc.sweep.loaded_bundles import loaded_bundle
    from admc.verify.shards import slice_runs

    torch.set_num_threads(1)
    return slice_runs(loaded_bundle(bundle), samples, seed, start, stop, twin_options)


def _files(bundle) -> dict[str, bytes]:
    """The manifest and the payloads it lists (hash-checked when the bundle was loaded; not read again)."""
    payloads = {name: bundle.read_bytes(name) for name in bundle.manifest["payloads"]}
    return {"manifest.json": (bundle.path / "manifest.json").read_bytes(), **payloads}


def verify_on_ray(path: str | os.PathLike, samples: int = 256, seed: int = 0, tolerance: float | None = None,
                  twin: bool = True, calibration: str | os.PathLike | None = None,
                  loop_iterations: int | None = None, twin_mode: str = "discrete", repeats: int | None = None,
                  twin_ratio: float = 0.5, twin_nrmse: float | None = None,
                  progress: Callable[[str], None] | None = None, *, workers: int | None = None,
                  address: str | None = None, shards: int | None = None):
    """``admc.api.Bundle.verify`` with its samples sharded over Ray (module docstring)."""
    import hashlib

    from admc.bundle.program import check_loaded_files
    from admc.bundle.store import Bundle
    from admc.passes.loop_budget import bundle_loop_budget
    from admc.runtime.simulate import SimulateOptions, read_machine
    from admc.sweep.cluster import cluster_cpus, ray_session
    from admc.targets.backends import backend_of_manifest
    from admc.verify import conditions as verify_conditions
    from admc.verify.shards import assemble, slices

    if workers is not None and address:
        raise AdmcError("verify: --workers sizes a local Ray instance; with --address the cluster's CPUs are used")
    say = progress or (lambda message: None)
    bundle = Bundle(path)
    check_loaded_files(bundle)
    verify_conditions.check_declared(bundle)  # refuse before any work, as verify does
    options = None
    backend = backend_of_manifest(bundle.manifest, str(bundle.path))
    if twin and backend is not None and backend.run_twin is not None:
        budget = bundle_loop_budget(bundle.manifest) if loop_iterations is None else loop_iterations
        options = SimulateOptions(loop_iterations=budget, calibration=read_machine(bundle, calibration),
                                  mode=twin_mode, repeats=repeats)
    files = _files(bundle)
    key = "verify-" + hashlib.sha256(files["manifest.json"]).hexdigest()
    with ray_session(workers, address) as ray:
        shared = SharedBundle.of(key, files, ray.put(files))
        del files
        remote = ray.remote(num_cpus=1)(shard_task)
        bounds = slices(samples, shards or cluster_cpus(ray))
        say(f"{len(bounds)} shards on Ray")
        pending = [remote.remote(shared, samples, seed, start, stop, options) for start, stop in bounds]
        parts = []
        for index, reference in enumerate(pending):
            try:
                parts.append(ray.get(reference))
            except ray.exceptions.RayTaskError as error:  # the shard's own error, as verify would raise it
                cause = getattr(error, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise
            say(f"shard {index + 1} of {len(bounds)} done")
    return assemble(bundle, samples, seed, parts, tolerance, twin_ratio, twin_nrmse)
