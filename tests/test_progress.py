"""``admc build``'s progress (issue 23, item 6): the pass manager tells an observer each pass in order (the
backend's lowering passes too), the CLI shows them on a terminal, and prints nothing when stderr is not a
terminal or under ``--quiet``; the bundle is the same either way."""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import pytest

from admc.cli import commands
from admc.cli.progress import BuildProgress
from admc.passes.manager import BackendPass, Lowering, PassManager, PassRecord, run_lowering

ROOT = Path(__file__).resolve().parents[1]
TWO_MOONS = ROOT / "examples" / "two_moons.onnx"
# A continuous-time build on the ideal target has no loop, hence no α selection: about a second.
QUICK_BUILD = ["--target", "ideal", "--solver", "continuous", "--steps", "4"]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def pass_started(self, name: str, index: int) -> None:
        self.events.append(("started", name))

    def pass_finished(self, record: PassRecord) -> None:
        self.events.append(("finished", record.name))


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_observer_sees_every_pass_in_order_including_the_lowering() -> None:
    recorder = Recorder()
    manager = PassManager(observer=recorder)
    assert manager.run("first", lambda value: value + 1, 1) == 2
    lowering = Lowering(3, (BackendPass("scale", lambda state: state * 2), BackendPass("emit", str)))
    assert run_lowering(lowering, manager) == "6"
    assert recorder.events == [("started", "first"), ("finished", "first"), ("started", "scale"),
                               ("finished", "scale"), ("started", "emit"), ("finished", "emit")]
    assert [record.name for record in manager.records] == ["first", "scale", "emit"]


def test_observer_is_told_of_a_failing_pass_start_only() -> None:
    recorder = Recorder()

    def broken() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError):
        PassManager(observer=recorder).run("broken", broken)
    assert recorder.events == [("started", "broken")]


def test_progress_line_on_a_terminal_names_the_passes_in_order() -> None:
    terminal = FakeTerminal()
    with BuildProgress(terminal) as progress:
        manager = PassManager(observer=progress)
        for name in ("canonicalise", "pack", "α selection"):
            manager.run(name, lambda: None)
    text = terminal.getvalue()
    positions = [text.index(f"pass {number}: {name}") for number, name in
                 ((1, "canonicalise"), (2, "pack"), (3, "α selection"))]
    assert positions == sorted(positions)
    assert "total" in text


@pytest.mark.parametrize("stream, quiet", [(io.StringIO(), False), (FakeTerminal(), True)],
                         ids=["not-a-terminal", "quiet"])
def test_progress_is_silent_off_a_terminal_and_when_quiet(stream: io.StringIO, quiet: bool) -> None:
    with BuildProgress(stream, quiet=quiet) as progress:
        PassManager(observer=progress).run("canonicalise", lambda: None)
    assert not progress.shown
    assert stream.getvalue() == ""


def _bundle_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for member in sorted(path.rglob("*")):
        if member.is_file():
            digest.update(str(member.relative_to(path)).encode() + member.read_bytes())
    return digest.hexdigest()


def test_cli_build_shows_passes_on_a_terminal_and_nothing_when_quiet(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    shown, quiet = FakeTerminal(), FakeTerminal()
    monkeypatch.setattr(sys, "stderr", shown)
    assert commands.main(["build", str(TWO_MOONS), "-o", str(tmp_path / "shown"), *QUICK_BUILD]) == 0
    monkeypatch.setattr(sys, "stderr", quiet)
    assert commands.main(["build", str(TWO_MOONS), "-o", str(tmp_path / "quiet"), *QUICK_BUILD, "--quiet"]) == 0
    text = shown.getvalue()
    assert text.index("pass 1: canonicalise") < text.index("pass 3: pack") < text.index("solver phases")
    assert quiet.getvalue() == ""
    assert _bundle_digest(tmp_path / "shown") == _bundle_digest(tmp_path / "quiet")
