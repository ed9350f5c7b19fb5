"""Wall and CPU seconds of the test suite, per test file: where the CI budget goes.

    python benchmarks/suite_times.py [--log PATH] [PYTEST ARGUMENTS ...]
    python benchmarks/suite_times.py --log /tmp/suite.tsv -n 2 --dist loadgroup          # the README's run
    python benchmarks/suite_times.py --log /tmp/model_kinds.tsv tests/test_model_kinds.py
    python benchmarks/suite_times.py --summarise /tmp/a.tsv /tmp/b.tsv                   # add up earlier logs

Runs pytest in a subprocess with this file loaded as a plugin: every test (setup + call + teardown) appends one
line ``wall-seconds <TAB> cpu-seconds <TAB> node id`` to the log as it finishes (under pytest-xdist the workers
write, the controller does not), so a run that is stopped early still leaves its figures. CPU seconds are the
test process's own (``time.process_time``, every thread); subprocesses (CLI runs, Ray workers) are not in them,
only in the wall time. On a shared machine compare CPU seconds: wall time scales with the load average.
Then prints per file: tests, wall and CPU seconds, slowest first, and the totals.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

LOG_VARIABLE = "ADMC_SUITE_TIMES_LOG"

# ---------------------------------------------------------------- the plugin (loaded by pytest with -p)

_started: dict[str, tuple[float, float]] = {}
_controller = False


def pytest_configure(config) -> None:
    global _controller
    _controller = bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_runtest_logstart(nodeid: str, location) -> None:
    _started[nodeid] = (time.perf_counter(), time.process_time())


def pytest_runtest_logfinish(nodeid: str, location) -> None:
    wall, cpu = _started.pop(nodeid, (time.perf_counter(), time.process_time()))
    if _controller or LOG_VARIABLE not in os.environ:
        return
    with open(os.environ[LOG_VARIABLE], "a", encoding="utf-8") as log:
        log.write(f"{time.perf_counter() - wall:.3f}\t{time.process_time() - cpu:.3f}\t{nodeid}\n")


# ---------------------------------------------------------------- the runner


def summarise(logs: list[Path]) -> str:
    wall: collections.Counter = collections.Counter()
    cpu: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for log in logs:
        for line in log.read_text(encoding="utf-8").splitlines():
            wall_seconds, cpu_seconds, node = line.split("\t", 2)
            test_file = node.split("::", 1)[0]
            wall[test_file] += float(wall_seconds)
            cpu[test_file] += float(cpu_seconds)
            count[test_file] += 1
    lines = [f"{'file':45s} {'tests':>5s} {'wall s':>9s} {'CPU s':>9s}"]
    for test_file in sorted(cpu, key=lambda name: -cpu[name]):
        lines.append(f"{test_file:45s} {count[test_file]:5d} {wall[test_file]:9.1f} {cpu[test_file]:9.1f}")
    lines.append(f"{'total':45s} {sum(count.values()):5d} {sum(wall.values()):9.1f} {sum(cpu.values()):9.1f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, default=Path("suite-times.tsv"), help="per-test log (appended)")
    parser.add_argument("--summarise", type=Path, nargs="+", help="only add up these logs")
    options, pytest_arguments = parser.parse_known_args()
    if options.summarise:
        print(summarise(options.summarise))
        return 0
    root = Path(__file__).resolve().parents[1]
    environment = {**os.environ, LOG_VARIABLE: str(options.log.resolve()),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                               os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "pytest", "-p", "suite_times", "-q", *pytest_arguments],
                               cwd=root, env=environment, check=False)
    print(f"pytest exited {completed.returncode} after {time.perf_counter() - started:.1f} s wall")
    if options.log.exists():
        print(summarise([options.log]))
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
