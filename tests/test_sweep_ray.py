"""Sweeps on a local Ray instance (2 CPUs, a handful of small tasks): the table does not depend on the number
of workers, a killed driver resumes to the same table, a refused build and a diverging loop are rows with
their reasons, the instance listens on the loopback only and leaves no process behind."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Only checked, not imported: admc imports Ray itself (after pinning a local instance to the loopback).
if importlib.util.find_spec("ray") is None:
    pytest.skip("ray is not installed (the 'sweep' extra)", allow_module_level=True)
pytest.importorskip("pyarrow")
psutil = pytest.importorskip("psutil")

from admc.core.errors import AdmcError  # noqa: E402
from admc.sweep.execute import run_sweep  # noqa: E402
from admc.sweep.results import read_table  # noqa: E402
from admc.sweep.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RAY_NAMES = ("raylet", "gcs_server", "ray::")

# Four points of three chips: a refused build (one module cannot hold the program), a loop budget too short
# to settle (diverged), and a nominal point; one distribution drawn per chip.
SPEC = f"""
name: tiny
model: {ROOT / "examples" / "two_moons.onnx"}
seed: 7
chips: 3
samples: 8
build:
  steps: 4
twin:
  loop_iterations: 40
axes:
  target.module.count: [1, 4096]
  loop_iterations: [2, 40]
  nonidealities.offsets.std: {{distribution: uniform, low: 0.005, high: 0.02}}
"""


def ray_processes(root: psutil.Process) -> list[psutil.Process]:
    found = []
    for process in root.children(recursive=True):
        try:
            if any(name in " ".join(process.cmdline()) or name in process.name() for name in RAY_NAMES):
                found.append(process)
        except psutil.Error:
            continue
    return found


def wait_until_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    return alive


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "tiny.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def two_workers(spec_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory = tmp_path_factory.mktemp("two") / "results"
    seen: dict = {"addresses": set(), "ray_pids": set()}

    seen.update(listening=set(), commands=[], usage_stats=set())

    def on_row(row: dict) -> None:
        import ray

        seen["addresses"].add(ray.get_runtime_context().gcs_address.rsplit(":", 1)[0])
        seen["usage_stats"].add(os.environ.get("RAY_USAGE_STATS_ENABLED"))
        for process in ray_processes(psutil.Process()):
            seen["ray_pids"].add(process.pid)
            try:
                seen["commands"].append(" ".join(process.cmdline()))
                seen["listening"].update(connection.laddr.ip for connection in process.net_connections("inet")
                                         if connection.status == psutil.CONN_LISTEN)
            except psutil.Error:
                continue

    summary = run_sweep(load_spec(spec_path), directory, workers=2, progress=False, flush_rows=2, on_row=on_row)
    seen["leftover"] = wait_until_gone(sorted(seen["ray_pids"]))
    return {"directory": directory, "summary": summary, **seen}


def test_rows_and_failure_reasons(two_workers: dict) -> None:
    rows = read_table(two_workers["directory"] / "results.parquet").to_pylist()
    assert [(row["point"], row["chip"]) for row in rows] == [(point, chip) for point in range(4) for chip in range(3)]
    by_point = {point: [row for row in rows if row["point"] == point] for point in range(4)}
    for point in (0, 1):  # module.count = 1
        assert {row["status"] for row in by_point[point]} == {"build_failed"}
        assert all("needs 2 modules" in row["reason"] for row in by_point[point])
    assert {row["status"] for row in by_point[2]} == {"diverged"}  # 2 loop iterations
    assert all("did not settle" in row["reason"] for row in by_point[2])
    assert {row["status"] for row in by_point[3]} == {"ok"}
    assert all(row["passed"] for row in by_point[3]) and not any(row["passed"] for row in rows[:9])
    drawn = [row["chip_parameters"] for row in by_point[3]]
    assert len(set(drawn)) == 3  # each chip its own draw
    assert len({row["seed"] for row in rows}) == len(rows)
    assert two_workers["summary"].rows == 12


def test_local_instance_is_on_loopback_and_leaves_nothing(two_workers: dict) -> None:
    assert two_workers["addresses"] == {"127.0.0.1"}
    assert two_workers["listening"] and two_workers["listening"] <= {"127.0.0.1", "::ffff:127.0.0.1"}
    assert two_workers["usage_stats"] == {"0"}
    assert not any("dashboard/dashboard.py" in command for command in two_workers["commands"])
    assert two_workers["ray_pids"], "the sweep ran on Ray worker processes"
    assert two_workers["leftover"] == []
    assert ray_processes(psutil.Process()) == []


def test_one_worker_gives_the_identical_table(two_workers: dict, spec_path: Path, tmp_path: Path) -> None:
    run_sweep(load_spec(spec_path), tmp_path / "one", workers=1, progress=False, flush_rows=5)
    assert (tmp_path / "one" / "results.parquet").read_bytes() == \
        (two_workers["directory"] / "results.parquet").read_bytes()


def test_killed_driver_resumes_to_the_identical_table(two_workers: dict, spec_path: Path, tmp_path: Path) -> None:
    directory = tmp_path / "killed"
    script = ("import sys\nfrom admc.sweep.spec import load_spec\nfrom admc.sweep.execute import run_sweep\n"
              "run_sweep(load_spec(sys.argv[1]), sys.argv[2], workers=2, progress=False, flush_rows=1)\n")
    driver = subprocess.Popen([sys.executable, "-c", script, str(spec_path), str(directory)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    parts = directory / "parts"
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet")) if parts.is_dir() else []) < 1:
        time.sleep(0.05)
    children = [process.pid for process in psutil.Process(driver.pid).children(recursive=True)]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not (directory / "results.parquet").exists(), "the driver finished before it could be killed"
    assert wait_until_gone(children) == [], "processes of the killed driver's Ray instance survived it"
    finished = len(read_table(next(parts.glob("part-*.parquet"))))
    assert finished >= 1
    summary = run_sweep(load_spec(spec_path), directory, workers=2, progress=False)
    assert 0 < summary.rows_run < 12
    assert (directory / "results.parquet").read_bytes() == (two_workers["directory"] / "results.parquet").read_bytes()
    assert not parts.exists()
    # Resuming a finished sweep runs nothing and keeps the table.
    again = run_sweep(load_spec(spec_path), directory, workers=2, progress=False)
    assert again.rows_run == 0
    assert (directory / "results.parquet").read_bytes() == (two_workers["directory"] / "results.parquet").read_bytes()


def test_report_of_the_sweep(two_workers: dict) -> None:
    from admc.cli import main

    directory = two_workers["directory"]
    assert main(["sweep", "--report", str(directory)]) == 0
    report = (directory / "report" / "report.md").read_text()
    assert "the packed layout needs 2 modules" in report
    assert (directory / "report" / "yield.png").is_file()
    assert (directory / "report" / "pareto.png").is_file()


def test_results_directory_of_another_sweep_is_refused(two_workers: dict, spec_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(SPEC.replace("seed: 7", "seed: 8"))
    with pytest.raises(AdmcError, match="different sweep"):
        run_sweep(load_spec(other), two_workers["directory"], workers=1, progress=False)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(AdmcError, match="not a sweep's results directory"):
        run_sweep(load_spec(spec_path), stray, workers=1, progress=False)


def test_cli_bad_spec_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from admc.cli import main

    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.replace("steps: 4", "steps: -4"))
    assert main(["sweep", str(spec), "-o", str(tmp_path / "out")]) == 2
    assert "field 'build.steps'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert os.listdir(tmp_path) == ["bad.yaml"]
