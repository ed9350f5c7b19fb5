"""The Ray session of a sweep: a local instance started and stopped by admc, or an existing cluster joined.

Requires: ray (the ``sweep`` extra).
Guarantees: :func:`ray_session` with no ``address`` starts a local Ray instance with exactly ``workers``
CPUs, no dashboard, usage statistics off, its node address on the loopback interface (so it neither
advertises nor listens on an outside address when Ray is first imported here), and shuts it down on exit,
also on an exception or Ctrl-C: no Ray process outlives the sweep. With ``address`` it connects to that
cluster and only disconnects on exit. A session already open in this process (a caller's) is used as it is
and left open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from admc.errors import AdmcError

# A local instance's object store holds bundles and reference runs: small.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024


def _import_ray(local: bool):
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage reports (no network)
    if local:
        # Ray reads this once, at import: with it off a node takes the loopback address instead of the
        # address it would use to reach other machines (only meaningful for a single-machine instance).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise AdmcError("admc sweep needs Ray: pip install 'admc[sweep]'") from None
    return ray


@contextmanager
def ray_session(workers: int | None = None, address: str | None = None) -> Iterator[object]:
    """Yield the ``ray`` module with a connected session (see module docstring)."""
    if workers is not None and workers < 1:
        raise AdmcError(f"--workers: expected at least 1, got {workers}")
    ray = _import_ray(local=address is None)
    if ray.is_initialized():
        yield ray
        return
    if address is None:
        ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 logging_level="warning", object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                 namespace="admc-sweep")
    else:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="warning", namespace="admc-sweep")
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise AdmcError(f"--address {address}: cannot join the Ray cluster ({error})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
