"""Stop a local Ray instance's processes when the driver that started them is gone, however it ended.

Ray stops its raylet and GCS with the driver, but after a SIGKILL of the driver its agent processes live on
(re-parented to init) until their GCS client times out, a minute or more. admc starts this reaper beside the
local instance: it reads the instance's processes (pid and start time) as one JSON line on stdin, then
waits for end-of-file, which comes when the driver closes the pipe after ``ray.shutdown`` or when the
driver dies. It then ends every listed process that is still alive and is still the same process (same
start time, so a reused pid is never touched): SIGTERM, and SIGKILL after a grace period.

Run as ``python -m admc.sweep.reaper``; only :func:`admc.sweep.cluster.ray_session` starts it.
"""

from __future__ import annotations

import json
import sys

GRACE_S = 3.0


def main() -> int:
    import psutil

    line = sys.stdin.readline()
    if not line:
        return 0
    listed = json.loads(line)
    sys.stdin.read()  # blocks until the driver closes the pipe or dies
    processes = []
    for pid, started in listed:
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - started) < 1e-3:
                processes.append(process)
        except psutil.Error:
            continue
    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=GRACE_S)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
