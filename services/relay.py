"""An asyncio Transport over a relayed connection (LISTEN, relay mode).

A protocol cannot tell it from a socket transport. What it does underneath:

- writes gather in a buffer; one RelayWrite per connection is in flight at
  a time, carrying everything written meanwhile (so writes keep their order
  on any transport), the half-close and close flags, and the credit: how
  many DATA bytes the protocol has taken in. The kernel answers a write
  late while the peer's socket is backed up, so the buffer here grows and
  the protocol is told pause_writing / resume_writing at its limits;
- pause_reading holds DATA events here undelivered and uncredited, so the
  kernel stops reading the peer one window later;
- connection_lost comes once: after close() or abort(), when the peer's
  side closes, or when the listener stream ends.
"""

import asyncio
import logging
from collections import deque

from nubis.errors import NotFound, NubisError

log = logging.getLogger("nubis.services.listen")

CHUNK = 1 << 20
HIGH_WATER = 64 << 10


class RelayTransport(asyncio.Transport):
    """One relayed connection, seen by its protocol as a transport."""

    def __init__(self, owner, conn_id: int, peer: tuple):
        super().__init__({"peername": peer})
        self._owner = owner
        self._api = owner.client.listen
        self._id = conn_id
        self._loop = asyncio.get_running_loop()
        self._protocol = None
        self._out: list = []
        self._size = 0                # buffered and in flight
        self._high, self._low = HIGH_WATER, HIGH_WATER // 4
        self._writing_paused = False
        self._in_flight = False
        self._eof = self._eof_sent = False
        self._closing = self._close_sent = False
        self._lost = False
        self._reading = True
        self._held: deque = deque()   # DATA (or None for EOF) while paused
        self._consumed = self._reported = 0

    # -- events from the kernel ---------------------------------------------

    def start(self, protocol) -> None:
        self._protocol = protocol
        protocol.connection_made(self)

    def feed(self, data: bytes) -> None:
        if self._lost:
            return
        if not self._reading or self._held:
            self._held.append(data)
            return
        self._consumed += len(data)
        self._protocol.data_received(data)
        if self._consumed - self._reported >= self._owner.window // 4:
            self._flush()

    def feed_eof(self) -> None:
        if self._lost:
            return
        if not self._reading or self._held:
            self._held.append(None)
            return
        if not self._protocol.eof_received():
            self.close()

    def lost(self, reason: str = "") -> None:
        """The connection is gone; tell the protocol once."""
        if self._lost:
            return
        self._lost = self._closing = True
        self._owner.forget(self._id)
        exc = None
        if reason and not reason.startswith("peer closed"):
            exc = ConnectionResetError(reason)
        self._protocol.connection_lost(exc)

    # -- the Transport API --------------------------------------------------

    def write(self, data) -> None:
        if self._closing or not data:
            return
        self._out.append(bytes(data))
        self._size += len(data)
        self._flush()
        if not self._writing_paused and self._size > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def writelines(self, chunks) -> None:
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        if not self._closing:
            self._eof = True
            self._flush()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._flush()
        self._loop.call_soon(self.lost, "")

    def abort(self) -> None:
        self._out.clear()
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if self._reading:
            return
        self._reading = True
        held, self._held = self._held, deque()
        for data in held:
            if data is None:
                self.feed_eof()
            else:
                self.feed(data)

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        self._high = HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_limits(self) -> tuple:
        return self._low, self._high

    def get_write_buffer_size(self) -> int:
        return self._size

    def get_protocol(self):
        return self._protocol

    def set_protocol(self, protocol) -> None:
        self._protocol = protocol

    # -- RelayWrite -----------------------------------------------------------

    def _flush(self) -> None:
        if self._in_flight or self._close_sent or self._owner.ended:
            return
        data = b"".join(self._out) if self._out else b""
        if len(data) > CHUNK:
            self._out = [data[CHUNK:]]
            data = data[:CHUNK]
        else:
            self._out = []
        last = not self._out
        eof = last and self._eof and not self._eof_sent
        close = last and self._closing and not self._lost_by_peer()
        credit = self._consumed != self._reported
        if not (data or eof or close or credit):
            return
        self._in_flight = True
        self._eof_sent |= eof
        self._close_sent |= close
        self._reported = self._consumed
        call = self._api.write(self._id, data, half_close=eof, close=close,
                               consumed=self._consumed)
        task = self._loop.create_task(call)
        task.add_done_callback(lambda t, n=len(data): self._written(t, n))

    def _lost_by_peer(self) -> bool:
        return self._lost and not self._closing

    def _written(self, task, size: int) -> None:
        self._in_flight = False
        self._size -= size
        if not task.cancelled():
            error = task.exception()
            if isinstance(error, NotFound):
                self._out.clear()           # closed under us; CLOSE follows
                self._close_sent = True
            elif isinstance(error, NubisError):
                log.info("connection %d: write failed: %s", self._id, error)
                self._out.clear()
                self._close_sent = True
                self.lost(error.message)
        if self._writing_paused and self._size <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()
        self._flush()
