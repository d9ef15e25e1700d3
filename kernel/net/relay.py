"""A relayed connection: the kernel carries its bytes as events and writes.

Flow control both ways keeps the kernel's buffers bounded per connection:

- inbound, by credit: bytes read from the peer go out as DATA events on the
  process's stream; the process reports in RelayWrite.consumed how much it
  has taken in. While the kernel is more than a window ahead of that, it
  stops reading the socket, so the peer's own TCP window fills instead;
- outbound, by late answers: RelayWrite queues its data on the socket at
  once (so writes keep their order) and is answered when the socket's write
  buffer is below its high-water mark. A process that does not wait for its
  answers is refused with RESOURCE_EXHAUSTED beyond a hard bound.

The connection closes when the peer closes it (CLOSE event), when the
process closes it (no event: it knows), when a timeout fires or when its
process detaches (CLOSE with the reason in `data`).
"""

import asyncio
import logging
import time

from nubis.errors import ResourceExhausted
from nubis.net.limits import Clock
from nubis.v1 import listen_pb2 as pb

log = logging.getLogger("nubis.net")

HIGH_WATER = 256 << 10
HARD_LIMIT = 8 * HIGH_WATER
OPEN = pb.CONNECTION_EVENT_KIND_OPEN
DATA = pb.CONNECTION_EVENT_KIND_DATA
HALF_CLOSE = pb.CONNECTION_EVENT_KIND_HALF_CLOSE
CLOSE = pb.CONNECTION_EVENT_KIND_CLOSE


class RelayedConnection(asyncio.Protocol):
    """One peer connection whose bytes the kernel relays to a process."""

    def __init__(self, conn_id: int, peer: tuple, attachment, on_gone):
        self.id = conn_id
        self.peer = peer
        self.attachment = attachment
        self.usage = attachment.usage
        self.on_gone = on_gone          # called once, when it is closed
        self.transport = None
        self.clock = Clock(attachment.listener.limits, time.monotonic())
        self.window = attachment.listener.limits.window
        self.sent = 0                   # bytes given as DATA events
        self.consumed = 0               # ... that the process has taken in
        self.reading = True
        self.drained = None             # a future while over high water
        self.delivered = False          # its OPEN reached the process
        self.gone = False

    # -- the peer's side (asyncio callbacks) --------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self.attachment.push(pb.ConnectionEvent(
            connection_id=self.id, kind=OPEN, peer_host=self.peer[0],
            peer_port=self.peer[1]))

    def data_received(self, data: bytes) -> None:
        self.clock.received(time.monotonic(), len(data))
        self.sent += len(data)
        self.usage.relay_bytes_in += len(data)
        self.attachment.push(pb.ConnectionEvent(connection_id=self.id, kind=DATA,
                                                data=data))
        if self.sent - self.consumed > self.window and self.reading:
            self.reading = False
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.attachment.push(pb.ConnectionEvent(connection_id=self.id,
                                                kind=HALF_CLOSE))
        return True    # the process may still write; it closes when done

    def connection_lost(self, exc) -> None:
        if not self.gone:
            reason = f"peer closed: {exc}" if exc else "peer closed"
            self._gone(reason, tell=True)

    def pause_writing(self) -> None:
        if self.drained is None:
            self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- the process's side (RelayWrite) ------------------------------------

    def write(self, req):
        """Apply one RelayWrite; returns None, or a future to answer after."""
        if req.consumed > self.consumed:
            self.consumed = min(req.consumed, self.sent)
            if not self.reading and self.sent - self.consumed <= self.window:
                self.reading = True
                self.transport.resume_reading()
        if req.data:
            if self.transport.get_write_buffer_size() > HARD_LIMIT:
                raise ResourceExhausted(
                    f"connection {self.id}: over {HARD_LIMIT} bytes wait to be "
                    "written; wait for each RelayWrite's answer")
            self.clock.sent(time.monotonic())
            self.usage.relay_bytes_out += len(req.data)
            self.transport.write(req.data)
        if req.close:
            self.close(None)
            return None
        if req.half_close and self.transport.can_write_eof():
            self.transport.write_eof()
        return self.drained

    def close(self, reason: str | None) -> None:
        """Close from the kernel's side; `reason` is told to the process."""
        if self.gone:
            return
        self.transport.close()
        self._gone(reason, tell=reason is not None)

    def _gone(self, reason, tell: bool) -> None:
        self.gone = True
        self.resume_writing()
        if tell:
            self.attachment.push(pb.ConnectionEvent(
                connection_id=self.id, kind=CLOSE,
                data=(reason or "").encode()))
        self.on_gone(self)
