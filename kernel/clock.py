"""The kernel's clock: wall time that the journal can pin.

The queue and blob stores read time only through the callables they are
given. The kernel gives every store `KernelClock.now`, which is unix time
(so lease ends, delays and retention recorded before a crash still mean the
same instants after a restart) unless the clock is pinned. The journal pins
it to one reading around each store call it records, and to the recorded
reading when it replays that call, so a replayed call sees exactly the time
the live one saw.
"""

import time


class KernelClock:
    """Unix seconds, or a pinned value while one is set."""

    __slots__ = ("pinned", "now", "source")

    def __init__(self, source=time.time):
        self.pinned: float | None = None
        self.source = source    # what "now" reads when not pinned
        # One bound method for the life of the clock: the stores hold it,
        # and the snapshot pickler recognises it by identity.
        self.now = self._now

    def _now(self) -> float:
        pinned = self.pinned
        return self.source() if pinned is None else pinned
