"""``admc build``'s progress line: the pass that is running and the time it and the build have taken.

Requires: a text stream (stderr by default). Guarantees: on a terminal, one status line that a small ticker
thread refreshes (so a pass of minutes still shows its clock moving), rewritten as each pass starts and
cleared when the build ends; nothing at all when the stream is not a terminal or ``quiet`` is set. It is a
:class:`admc.passes.manager.PassObserver`: it only reads the pass names and times, so the bundle is the same
with or without it.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from tqdm import tqdm

from admc.passes.manager import PassRecord

TICK_SECONDS = 0.25


class BuildProgress:
    """A status line ``admc build: pass N: <name> 1.2 s (total 3.4 s)``; use as a context manager."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self._stream = stream if stream is not None else sys.stderr
        # disable=None: tqdm shows the line only when the stream is a terminal.
        self._line = tqdm(desc="admc build", bar_format="{desc}", file=self._stream,
                          disable=True if quiet else None, leave=False)
        self._began = self._pass_began = time.perf_counter()
        self._current = "reading the model and the target"
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def shown(self) -> bool:
        """Whether anything is written (a terminal, not quiet)."""
        return not self._line.disable

    def __enter__(self) -> BuildProgress:
        if self.shown:
            self._show()
            self._ticker = threading.Thread(target=self._tick, name="admc-build-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exception: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self._line.close()

    def pass_started(self, name: str, index: int) -> None:
        self._current, self._pass_began = f"pass {index + 1}: {name}", time.perf_counter()
        self._show()

    def pass_finished(self, record: PassRecord) -> None:
        self._current, self._pass_began = f"after {record.name}", time.perf_counter()
        self._show()

    def _show(self) -> None:
        if not self.shown:
            return
        now = time.perf_counter()
        self._line.set_description_str(f"admc build: {self._current} {now - self._pass_began:.1f} s "
                                       f"(total {now - self._began:.1f} s)")

    def _tick(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self._show()
