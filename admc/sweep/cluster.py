"""The Ray session of a sweep: a local instance started and stopped by admc, or an existing cluster joined.

Requires: ray (the ``sweep`` extra).
Guarantees: :func:`ray_session` with no ``address`` starts a local Ray instance with exactly ``workers``
CPUs, no dashboard, usage statistics off, its node address on the loopback interface (so it neither
advertises nor listens on an outside address when Ray is first imported here), and shuts it down on exit,
also on an exception or Ctrl-C; a reaper process (``admc.sweep.reaper``) ends what is left of the instance
when the driver is killed outright: no Ray process outlives the sweep. With ``address`` it connects to that
cluster and only disconnects on exit. A session already open in this process (a caller's) is used as it is
and left open.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from admc.core.errors import AdmcError

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
    reaper = None
    if address is None:
        ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 logging_level="warning", object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                 namespace="admc-sweep")
        reaper = _start_reaper()
    else:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="warning", namespace="admc-sweep")
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise AdmcError(f"--address {address}: cannot join the Ray cluster ({error})") from None
    try:
        yield ray
    finally:
        ray.shutdown()
        if reaper is not None:
            reaper.stdin.close()  # end-of-file: the reaper stops whatever of the instance is left
            reaper.wait(timeout=30)


def _start_reaper() -> subprocess.Popen:
    """``admc.sweep.reaper`` watching the processes of the instance just started (see its docstring)."""
    import psutil

    processes = []
    for process in psutil.Process().children(recursive=True):
        try:
            processes.append((process.pid, process.create_time()))
        except psutil.Error:
            continue
    # Its own session: a Ctrl-C at the terminal reaches the driver (which shuts Ray down), not the reaper.
    reaper = subprocess.Popen([sys.executable, "-m", "admc.sweep.reaper"], stdin=subprocess.PIPE,
                              start_new_session=True, text=True)
    reaper.stdin.write(json.dumps(processes) + "\n")
    reaper.stdin.flush()
    return reaper


def cluster_cpus(ray) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
