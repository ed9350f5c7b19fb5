"""Issue 13, command line: output paths checked before any work, numeric options refused with their ranges,
noise arrays, target files that are FIFOs / devices / not UTF-8 / nested too deep, and the one error path
(one line, escaped, shortened; exit 70 for internal errors; quiet on a closed pipe)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hardening_helpers import cli, listing, refused, save_noise
from models import gemm_model

from admc.compiler.driver import build
from admc.core.errors import LONGEST_MESSAGE, one_line

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("sources")
    model = gemm_model(directory / "model.onnx", "transB", hidden=8, seed=4)
    bundle = build(model, directory / "bundle", target="ideal", solver="heun", steps=3)
    return {"model": model, "bundle": bundle, "noise": save_noise(directory / "noise.npy")}


def build_refused(capsys, sources, tmp_path, *arguments, fragments=()) -> str:
    before = listing(tmp_path)
    message = refused(capsys, "build", sources["model"], "--target", "ideal", *arguments, fragments=fragments)
    assert listing(tmp_path) == before
    return message


# ---------------------------------------------------------------- output paths, before any work


def test_output_existing_directory_refused(capsys, sources, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "mine", fragments=("not an admc bundle",))


def test_output_missing_parent_refused(capsys, sources, tmp_path):
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "missing" / "bundle", fragments=("does not exist",))


def test_output_under_a_file_refused(capsys, sources, tmp_path):
    (tmp_path / "FILE").write_text("x")
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "FILE" / "b", fragments=("not a directory",))


def test_output_existing_file_refused(capsys, sources, tmp_path):
    (tmp_path / "FILE").write_text("x")
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "FILE", fragments=("not a directory",))


def test_dump_ir_existing_file_refused(capsys, sources, tmp_path):
    (tmp_path / "ir").write_text("x")
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "b", "--dump-ir", tmp_path / "ir",
                  fragments=("--dump-ir",))


@pytest.mark.parametrize("case", ["missing parent", "directory"])
def test_verify_json_path_refused_before_work(capsys, sources, tmp_path, case):
    path = tmp_path / "missing" / "r.json" if case == "missing parent" else tmp_path
    message = refused(capsys, "verify", sources["bundle"], "--json", path, "--samples", "8")
    assert "--json" in message


def test_verify_report_existing_file_refused(capsys, sources, tmp_path):
    (tmp_path / "FILE").write_text("x")
    refused(capsys, "verify", sources["bundle"], "--report", tmp_path / "FILE", fragments=("--report",))
    assert (tmp_path / "FILE").read_text() == "x"


def test_verify_report_directory_of_other_files_refused(capsys, sources, tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "thesis.tex").write_text("keep")
    refused(capsys, "verify", sources["bundle"], "--report", tmp_path / "results", fragments=("not an admc report",))
    assert (tmp_path / "results" / "thesis.tex").read_text() == "keep"


def test_simulate_output_directory_refused(capsys, sources, tmp_path):
    refused(capsys, "simulate", sources["bundle"], "--noise", sources["noise"], "-o", tmp_path, "--ideal",
            fragments=("is a directory",))


def test_simulate_crash_leaves_no_partial_file(capsys, sources, tmp_path, monkeypatch):
    import admc.core.atomic

    def fail(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(admc.core.atomic.os, "replace", fail)
    status, _, err = cli(capsys, "simulate", sources["bundle"], "--noise", sources["noise"], "-o",
                         tmp_path / "out.npy", "--ideal")
    assert status == 2 and "No space left on device" in err and "\n" not in err.strip(), err
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- numbers


NUMBER_CASES = {
    "steps_1e9": (["build", "MODEL", "-o", "OUT", "--steps", str(10 ** 9)], "--steps"),
    "steps_2_63": (["build", "MODEL", "-o", "OUT", "--steps", str(2 ** 63)], "--steps"),
    "steps_zero": (["build", "MODEL", "-o", "OUT", "--steps", "0"], "--steps"),
    "fp_iterations_1e9": (["build", "MODEL", "-o", "OUT", "--fp-iterations", str(10 ** 9)], "--fp-iterations"),
    "loop_iterations_1e9": (["simulate", "BUNDLE", "--noise", "NOISE", "-o", "OUT", "--ideal", "--loop-iterations",
                             str(10 ** 9)], "--loop-iterations"),
    "samples_zero": (["verify", "BUNDLE", "--samples", "0"], "--samples"),
    "seed_negative": (["verify", "BUNDLE", "--seed", "-1"], "--seed"),
    "seed_2_64": (["simulate", "BUNDLE", "--noise", "NOISE", "-o", "OUT", "--seed", str(2 ** 64)], "--seed"),
    "tolerance_nan": (["verify", "BUNDLE", "--tolerance", "nan"], "--tolerance"),
    "tolerance_negative": (["verify", "BUNDLE", "--tolerance", "-1"], "--tolerance"),
    "twin_ratio_nan": (["verify", "BUNDLE", "--twin-ratio", "nan"], "--twin-ratio"),
    "twin_ratio_inf": (["verify", "BUNDLE", "--twin-ratio", "inf"], "--twin-ratio"),
    "repeats_zero": (["verify", "BUNDLE", "--repeats", "0"], "--repeats"),
    "max_memory_garbage": (["--max-memory", "lots", "inspect", "BUNDLE"], "--max-memory"),
}


@pytest.mark.parametrize("case", NUMBER_CASES)
def test_numeric_option_out_of_range_refused_with_its_range(capsys, sources, tmp_path, case):
    arguments, option = NUMBER_CASES[case]
    names = {"MODEL": sources["model"], "BUNDLE": sources["bundle"], "NOISE": sources["noise"],
             "OUT": tmp_path / "out"}
    before = listing(tmp_path)
    message = refused(capsys, *[names.get(argument, argument) for argument in arguments])
    assert option in message
    assert "]" in message or "size" in message  # the accepted range is stated
    assert listing(tmp_path) == before


def test_memory_estimate_refuses_a_huge_verify(capsys, sources):
    refused(capsys, "--max-memory", "64M", "verify", sources["bundle"], "--samples", "10000000",
            fragments=("memory limit",))


# ---------------------------------------------------------------- noise arrays


def noise_refused(capsys, sources, tmp_path, path: Path, *fragments: str) -> str:
    output = tmp_path / "out.npy"
    message = refused(capsys, "simulate", sources["bundle"], "--noise", path, "-o", output, "--ideal",
                      fragments=(str(path), *fragments))
    assert not output.exists()
    return message


def test_noise_npz_refused(capsys, sources, tmp_path):
    path = tmp_path / "noise.npz"
    np.savez(path, noise=np.zeros((2, 2)))
    noise_refused(capsys, sources, tmp_path, path, ".npz")


def test_noise_empty_file_refused(capsys, sources, tmp_path):
    path = tmp_path / "noise.npy"
    path.write_bytes(b"")
    noise_refused(capsys, sources, tmp_path, path)


def test_noise_huge_header_refused(capsys, sources, tmp_path):
    """A header claiming 10^12 rows (14.6 TiB) is refused from the header, before any allocation."""
    path = tmp_path / "noise.npy"
    with path.open("wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": "<f8", "fortran_order": False,
                                                    "shape": (10 ** 12, 2)})
        file.write(np.zeros(4).tobytes())
    noise_refused(capsys, sources, tmp_path, path, "header claims")


def test_noise_zero_rows_refused(capsys, sources, tmp_path):
    path = tmp_path / "noise.npy"
    np.save(path, np.zeros((0, 2)))
    noise_refused(capsys, sources, tmp_path, path, "(0, 2)")


def test_noise_complex_refused(capsys, sources, tmp_path):
    path = tmp_path / "noise.npy"
    np.save(path, np.ones((3, 2), dtype=np.complex128))
    noise_refused(capsys, sources, tmp_path, path, "complex")


def test_noise_fifo_refused(capsys, sources, tmp_path):
    path = tmp_path / "noise.npy"
    os.mkfifo(path)
    noise_refused(capsys, sources, tmp_path, path, "FIFO")


# ---------------------------------------------------------------- target files


def test_target_not_utf8_refused(capsys, sources, tmp_path):
    path = tmp_path / "target.yaml"
    path.write_bytes(b"kind: ideal\nname: \xff\xfe\n")
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "b", "--target", path, fragments=("UTF-8",))


def test_target_nested_10000_deep_refused(capsys, sources, tmp_path):
    path = tmp_path / "target.yaml"
    path.write_text("kind: ideal\nextra: " + "[" * 10_000 + "]" * 10_000 + "\n")
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "b", "--target", path, fragments=("nested",))


def test_target_sigma_gain_min_zero_refused(capsys, sources, tmp_path):
    path = tmp_path / "target.yaml"
    path.write_text("inherits: aoc-48\nsigma:\n  gain_min: 0\n")
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "b", "--target", path,
                  fragments=("sigma.gain_min",))


def test_target_fifo_refused(capsys, sources, tmp_path):
    path = tmp_path / "target.yaml"
    os.mkfifo(path)
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "b", "--target", path, fragments=("FIFO",))


def test_target_dev_zero_refused(capsys, sources, tmp_path):
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "b", "--target", "/dev/zero",
                  fragments=("device",))


def test_target_inherits_fifo_refused(capsys, sources, tmp_path):
    os.mkfifo(tmp_path / "parent.yaml")
    path = tmp_path / "target.yaml"
    path.write_text("inherits: parent.yaml\nname: child\n")
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "b", "--target", path, fragments=("FIFO",))


def test_target_inherits_dev_zero_refused(capsys, sources, tmp_path):
    path = tmp_path / "target.yaml"
    path.write_text("inherits: /dev/zero\nname: child\n")
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "b", "--target", path, fragments=("device",))


def test_calibration_fifo_refused(capsys, sources, tmp_path):
    """The target's backend reads the calibration (aoc-48's, before the model); a FIFO is refused unread."""
    os.mkfifo(tmp_path / "calibration.yaml")
    refused(capsys, "build", sources["model"], "-o", tmp_path / "b", "--calibration", tmp_path / "calibration.yaml",
            fragments=("FIFO",))
    assert not (tmp_path / "b").exists()


def test_calibration_for_a_target_that_takes_none_refused(capsys, sources, tmp_path):
    refused(capsys, "verify", sources["bundle"], "--calibration", tmp_path / "calibration.yaml",
            fragments=("target 'ideal' takes no calibration file",))


# ---------------------------------------------------------------- messages


def test_argparse_error_is_one_line_exit_2(capsys):
    message = refused(capsys, "build")
    assert "usage" not in message.lower() or message.count("usage") <= 1
    refused(capsys, "no-such-command")


def test_control_characters_in_names_escaped():
    line = one_line("node 'a\nb\x1b[31mc\td' op Gemm")
    assert "\n" not in line and "\x1b" not in line and "\t" not in line
    assert "a\\nb\\x1b[31mc\\td" in line


def test_20000_character_name_shortened():
    line = one_line(f"model.onnx: node '{'n' * 20_000}' op Relu: not supported")
    assert len(line) <= LONGEST_MESSAGE
    assert "…" in line and line.endswith("op Relu: not supported")


def test_refusal_with_a_long_control_character_node_name_is_one_short_line(capsys, tmp_path):
    from models import onnx_model
    from onnx import helper

    name = "evil\n" + "x" * 20_000
    nodes = [helper.make_node("Concat", ["x", "t"], ["xt"], axis=1, name="concat"),
             helper.make_node("Gemm", ["xt", "W"], ["h"], transB=1, name="gemm"),
             helper.make_node("Relu", ["h"], ["velocity"], name=name)]
    path = onnx_model(nodes, {"W": np.full((2, 3), 0.1)}, tmp_path / "evil.onnx")
    # ReLU on the state is refused by a tanh target (aoc-48), naming the node.
    message = refused(capsys, "build", path, "-o", tmp_path / "b", "--target", "aoc-48")
    assert len(message) <= LONGEST_MESSAGE + len("admc: error: ") and "evil\\n" in message


def test_refusal_names_bundle_not_temporary_copy(capsys, tmp_path, sources):
    """A damaged source copy inside a bundle is named by its bundle path, not admc's temporary file."""
    from hardening_helpers import copy_bundle, replace_payload

    bundle = copy_bundle(sources["bundle"], tmp_path / "bundle")
    replace_payload(bundle, "source/model.onnx", b"not an onnx model")
    message = refused(capsys, "verify", bundle, "--samples", "8")
    assert str(bundle / "source" / "model.onnx") in message and "admc-source-" not in message


def test_checker_message_keeps_node_name(capsys, tmp_path):
    from models import onnx_model
    from onnx import helper

    nodes = [helper.make_node("Concat", ["x", "t"], ["xt"], axis=1, name="concat"),
             helper.make_node("Gemm", ["xt", "W"], ["velocity"], transB=1, name="the_gemm_node")]
    path = onnx_model(nodes, {"W": np.full((2, 3), 0.1)}, tmp_path / "model.onnx")
    import onnx

    model = onnx.load(str(path))
    model.graph.node[1].input.append("no_such_value")
    onnx.save(model, str(path))
    message = refused(capsys, "build", path, "-o", tmp_path / "b", "--target", "ideal")
    assert "the_gemm_node" in message or "no_such_value" in message


def test_internal_error_exits_70_with_saved_traceback(capsys, sources, monkeypatch):
    import admc.api.bundle_handle

    def broken(bundle):
        raise ZeroDivisionError("a bug")

    # ``admc inspect`` goes through the public API's Bundle, which describes it.
    monkeypatch.setattr(admc.api.bundle_handle, "describe", broken)
    status, out, err = cli(capsys, "inspect", sources["bundle"])
    assert status == 70
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line and "internal error" in line
    saved = Path(line.rsplit("traceback saved to ", 1)[1])
    assert "ZeroDivisionError: a bug" in saved.read_text()
    saved.unlink()


def run_admc(*arguments: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "admc.cli", *arguments], capture_output=True, text=True,
                          timeout=300, **options)


def test_inspect_into_a_closed_pipe_is_quiet(sources):
    command = f"'{sys.executable}' -m admc.cli inspect '{sources['bundle']}' | head -c 10"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_solver_banner_not_on_stdout(sources, tmp_path):
    """An AOC build runs the placement MILP (HiGHS): stdout holds only admc's own "wrote" line."""
    result = run_admc("build", str(sources["model"]), "-o", str(tmp_path / "b"), "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [f"wrote {tmp_path / 'b'}"]


def test_pt2_refusal_has_no_torch_log_lines(tmp_path):
    """A damaged .pt2 is refused with admc's one line only: no torch log records or tracebacks before it."""
    import zipfile

    from models import StandardMlp, export_pt2, seeded

    good = export_pt2(seeded(StandardMlp((4,)), 0), tmp_path / "good.pt2")
    damaged = tmp_path / "damaged.pt2"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename.endswith(".json") and "models/" in item.filename:
                content = content[: len(content) // 2]
            target.writestr(item, content)
    result = run_admc("build", str(damaged), "-o", str(tmp_path / "b"), "--target", "ideal")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("admc: error: "), result.stderr


def test_steps_times_fp_iterations_beyond_the_phase_limit_refused(capsys, sources, tmp_path):
    build_refused(capsys, sources, tmp_path, "-o", tmp_path / "b", "--steps", "100000", "--solver",
                  "implicit-euler", "--fp-iterations", "10000", fragments=("phases",))


def test_many_fixed_point_iterations_build_and_read_back(capsys, sources, tmp_path):
    status, _, err = cli(capsys, "build", sources["model"], "-o", tmp_path / "b", "--target", "ideal", "--steps",
                         "2", "--solver", "implicit-euler", "--fp-iterations", "40")
    assert status == 0, err
    status, _, err = cli(capsys, "inspect", tmp_path / "b")
    assert status == 0, err
