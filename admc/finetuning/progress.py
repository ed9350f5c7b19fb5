"""``admc finetune``'s progress line: which fit is running, its step, the last loss and the best held-out loss.

Requires: a text stream (stderr by default). Guarantees: on a terminal one status line, rewritten after each step
and cleared at the end; nothing when the stream is not a terminal or ``quiet`` is set (the style of
``admc.cli.progress``). It only reads the figures it is given, so the tuned model is the same with or without it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class FinetuneProgress:
    """A status line ``admc finetune: program step 12/200, loss 1.23, held-out best 1.20 (4.1 s)``."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self._line = tqdm(desc="admc finetune", bar_format="{desc}", file=stream if stream is not None else sys.stderr,
                          disable=True if quiet else None, leave=False)
        self._began = time.perf_counter()

    def __enter__(self) -> FinetuneProgress:
        return self

    def __exit__(self, *exception: object) -> None:
        self._line.close()

    def update(self, fit: str, step: int, steps: int, loss: float, best: float) -> None:
        if not self._line.disable:
            self._line.set_description_str(f"admc finetune: {fit} step {step}/{steps}, loss {loss:.4f}, held-out "
                                           f"best {best:.4f} ({time.perf_counter() - self._began:.1f} s)")
