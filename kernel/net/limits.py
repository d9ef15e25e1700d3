"""A listener's limits, and the clock that applies them to one connection.

Two rules keep a peer from pinning a connection slot for ever, and they are
protocol-blind on purpose (the kernel does not parse what it carries):

- idle: no bytes either way for `idle` seconds closes the connection;
- slow sender (slowloris): a *request in progress* is the bytes a peer sends
  after the listener's last write. While the peer keeps it coming for
  longer than the `slow` grace at under `min_rate` bytes a second on
  average, the connection is closed. A peer that sent its request at once
  and waits for a slow answer is not sending, so only `idle` applies to it;
  a large upload is fast, so the rule spares it too.

The clock is sans-I/O: callers report bytes with a time and ask `expired`.
The kernel runs it for relayed connections; the daemon library runs the same
rules for handed-off ones, whose bytes never pass through the kernel.
"""

from dataclasses import dataclass

from nubis.errors import InvalidArgument

MS = 1000.0


@dataclass(frozen=True, slots=True)
class Limits:
    """One listener's limits, in seconds and bytes."""

    backlog: int
    backlog_timeout: float
    idle: float
    slow: float
    min_rate: int
    window: int


def limits_of(config, req) -> Limits:
    """The limits a ListenRequest asks for, bounded by the kernel's."""
    backlog = _bounded("backlog", req.backlog, config.listen_backlog, 1)
    backlog_ms = _bounded("backlog_timeout_ms", req.backlog_timeout_ms,
                          config.listen_backlog_seconds * MS, MS)
    idle_ms = _bounded("idle_timeout_ms", req.idle_timeout_ms,
                       config.listen_idle_seconds * MS, MS)
    slow_ms = _bounded("slow_timeout_ms", req.slow_timeout_ms,
                       config.listen_slow_seconds * MS, MS)
    return Limits(backlog=int(backlog), backlog_timeout=backlog_ms / MS,
                  idle=idle_ms / MS, slow=slow_ms / MS,
                  min_rate=req.min_rate or config.listen_min_rate,
                  window=config.listen_window_bytes)


def _bounded(field: str, asked: int, cap: float, unit: float) -> float:
    """`asked`, or the kernel's value when 0; over the kernel's is refused."""
    if not asked:
        return cap
    if asked > cap:
        shown = f"{cap:.0f}" if unit == 1 else f"{cap:.0f} ({cap / unit:g} s)"
        raise InvalidArgument(f"{field} {asked} is over this kernel's limit "
                              f"of {shown}")
    return asked


class Clock:
    """The idle and slow-sender rules for one connection."""

    __slots__ = ("limits", "last", "pending_since", "pending_last",
                 "pending_bytes")

    def __init__(self, limits: Limits, now: float):
        self.limits = limits
        self.last = now               # last byte either way
        self.pending_since = None     # first byte of the request in progress
        self.pending_last = now
        self.pending_bytes = 0

    def received(self, now: float, size: int) -> None:
        self.last = now
        if self.pending_since is None:
            self.pending_since = now
            self.pending_bytes = 0
        self.pending_last = now
        self.pending_bytes += size

    def sent(self, now: float) -> None:
        self.last = now
        self.pending_since = None

    def expired(self, now: float) -> str | None:
        """Why the connection must close now, or None."""
        limits = self.limits
        if now - self.last > limits.idle:
            return f"idle for over {limits.idle:g} s"
        if self.pending_since is None:
            return None
        span = self.pending_last - self.pending_since
        if span > limits.slow and self.pending_bytes < limits.min_rate * span:
            return (f"slow sender: {self.pending_bytes} bytes in {span:.1f} s, "
                    f"under {limits.min_rate} bytes/s")
        return None
