"""`admc verify` on an AOC bundle: the whole chain with the twin, its report files, and its exit status."""

from __future__ import annotations

import json

import pytest
from models import AdmForm, export_onnx, seeded

from admc.cli import main


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    directory = tmp_path_factory.mktemp("verify")
    model = export_onnx(seeded(AdmForm(), 5), directory / "model.onnx")
    output = directory / "bundle"
    assert main(["build", str(model), "-o", str(output), "--steps", "4"]) == 0
    return output


def run_verify(bundle, tmp_path, *extra):
    report = tmp_path / "report"
    status = main(["verify", str(bundle), "--samples", "64", "--loop-iterations", "60", "--repeats", "2",
                   "--report", str(report), *extra])
    return status, report


def test_verify_writes_json_markdown_and_plots(bundle, tmp_path, capsys):
    status, report = run_verify(bundle, tmp_path)
    assert status == 0
    assert sorted(path.name for path in report.iterdir()) == [
        "nrmse.png", "report.md", "residuals.png", "samples.png", "verify.json"]
    for name in ("nrmse.png", "residuals.png", "samples.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((report / "verify.json").read_text())
    criteria = [link["criterion"] for link in data["links"]]
    assert criteria[:4] == ["relative_error", "per_step_nrmse", "unsettled_fraction", "w2_ratio_to_gaussian"]
    assert set(data["distributions"]) == {"ideal program", "gaussian fit (baseline)", "twin"}
    markdown = (report / "report.md").read_text()
    assert "PASS" in markdown and "![samples](samples.png)" in markdown
    assert "passed" in capsys.readouterr().out


def test_the_twin_link_is_the_w2_ratio_it_reports(bundle, tmp_path, capsys):
    """The twin link's measured value is W2(twin, reference) / W2(Gaussian fit, reference) from the same JSON."""
    status, report = run_verify(bundle, tmp_path)
    data = json.loads((report / "verify.json").read_text())
    link = next(entry for entry in data["links"] if entry["criterion"] == "w2_ratio_to_gaussian")
    twin = data["distributions"]["twin"]["wasserstein2"]
    baseline = data["distributions"]["gaussian fit (baseline)"]["wasserstein2"]
    assert link["measured"] == pytest.approx(twin / baseline, rel=1e-12)
    assert link["passed"] == (twin / baseline <= link["tolerance"])
    # The Gaussian baseline really is far from the samples an ideal program gives (a property, not a copy).
    assert data["distributions"]["ideal program"]["wasserstein2"] < 0.5 * baseline


def test_a_too_strict_twin_threshold_fails_with_exit_status_1(bundle, tmp_path, capsys):
    status, report = run_verify(bundle, tmp_path, "--twin-ratio", "1e-6")
    assert status == 1
    assert "FAILED" in capsys.readouterr().out
    assert json.loads((report / "verify.json").read_text())["passed"] is False


def test_no_twin_checks_only_the_exact_chain(bundle, tmp_path, capsys):
    output = tmp_path / "verify.json"
    assert main(["verify", str(bundle), "--samples", "32", "--no-twin", "--json", str(output)]) == 0
    data = json.loads(output.read_text())
    assert [link["criterion"] for link in data["links"]] == ["relative_error", "per_step_nrmse", "unsettled_fraction"]
    assert "twin" not in data["distributions"]
