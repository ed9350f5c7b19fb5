"""How many CPU threads each part of a twin iteration runs on.

Requires: torch. Guarantees: ``threads(count)`` runs its body with torch's intra-op thread count set to ``count``
and restores the previous count on exit (also on an exception); a count equal to the current one changes nothing.

Why: an iteration is one large product (the loop operator, worth every core) and a dozen element-wise passes over
a [batch, channels] state (σ, α z + drive, read noise, the clamp, the change). On a shared machine each
multi-threaded element-wise pass waits for a descheduled thread: at 36M weights they took 8–16 ms each against
under 1 ms on one thread, a third of the iteration. So the twin runs its element-wise work on one thread and
gives the products the caller's thread count. Element-wise results do not depend on the thread count, and the
products run on the same count as before, so the numbers do not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

ELEMENTWISE_THREADS = 1


@contextmanager
def threads(count: int) -> Iterator[None]:
    """Run the body with torch's intra-op thread count at ``count``; restore the previous count after."""
    previous = torch.get_num_threads()
    if count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
