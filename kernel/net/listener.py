"""A listener (one port of one tenant) and the processes attached to it.

Theory of operation. The listener's socket is read by the kernel loop,
which accepts every connection itself (plain sockets, not asyncio servers,
so a socket can be passed on before anything reads from it). Each accepted
connection goes to one attached process, chosen by least connections (ties
in turn), or waits in the backlog, bounded in number and in time, for a
process to attach; a full backlog or a wait that runs out refuses it with a
reset. A process's count is the connections it holds now: relayed ones until
either side closes them, handed-off ones until the process reports them
closed or its channel ends.

An attachment is one process on one listener. It owns an event stream (the
AttachListener reply): events are queued on it, and the stream's generator
yields them; ending the stream, whichever side ends it, detaches the process
and closes its relayed connections.
"""

import asyncio
import logging
import secrets
import socket
import struct
import time
from collections import deque

from nubis.errors import NubisError
from nubis.net.handoff import HandoffChannel
from nubis.v1 import listen_pb2 as pb

log = logging.getLogger("nubis.net")

ACCEPT_BATCH = 64
_LINGER_RESET = struct.pack("ii", 1, 0)
OPEN = pb.CONNECTION_EVENT_KIND_OPEN


def refuse(conn: socket.socket) -> None:
    """Close an accepted connection with a reset, as a refusal looks."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass
    conn.close()


class Listener:
    """A tenant's port: its socket, backlog, processes and counters."""

    def __init__(self, net, tenant, host: str, port: int, limits, sock):
        self.net = net
        self.tenant = tenant
        self.host = host
        self.port = port
        self.limits = limits
        self.sock = sock
        self.attached: list = []
        self.waiting: deque = deque()    # (conn id, socket, peer, deadline)
        self.accepted = 0
        self.refused = 0
        self.timed_out = 0
        self._turn = 0
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                log.warning("listener %s:%d cannot accept: %s; raise the "
                            "kernel's open file limit if this repeats",
                            self.host, self.port, e)
                return
            self.net.admit(self, conn, peer[:2])

    def pick(self):
        """The attached process with the fewest connections, ties in turn."""
        attached = self.attached
        n = len(attached)
        if not n:
            return None
        self._turn = (self._turn + 1) % n
        best = attached[self._turn]
        for i in range(1, n):
            other = attached[(self._turn + i) % n]
            if other.connections < best.connections:
                best = other
        return best

    def dispatch(self, conn_id: int, conn, peer: tuple) -> None:
        attachment = self.pick()
        if attachment is not None:
            attachment.give(conn_id, conn, peer)
            return
        if len(self.waiting) >= self.limits.backlog:
            self.net.refused(self, conn_id, conn)
            return
        deadline = time.monotonic() + self.limits.backlog_timeout
        self.waiting.append((conn_id, conn, peer, deadline))

    def attach(self, attachment) -> None:
        self.attached.append(attachment)
        while self.waiting:
            conn_id, conn, peer, _ = self.waiting.popleft()
            self.pick().give(conn_id, conn, peer)

    def detach(self, attachment) -> None:
        if attachment in self.attached:
            self.attached.remove(attachment)

    def sweep(self, now: float) -> None:
        """Refuse connections that waited too long."""
        while self.waiting and self.waiting[0][3] <= now:
            conn_id, conn, _, _ = self.waiting.popleft()
            self.net.refused(self, conn_id, conn)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        while self.waiting:
            conn_id, conn, _, _ = self.waiting.popleft()
            self.net.refused(self, conn_id, conn)
        for attachment in list(self.attached):
            attachment.end()
            attachment.detach()    # now: its connections count no more

    def info(self) -> pb.ListenerInfo:
        limits = self.limits
        return pb.ListenerInfo(
            port=self.port, host=self.host,
            attached=[a.info() for a in self.attached],
            connections=sum(a.connections for a in self.attached),
            backlog=len(self.waiting), accepted=self.accepted,
            refused=self.refused, timed_out=self.timed_out,
            idle_timeout_ms=int(limits.idle * 1000),
            slow_timeout_ms=int(limits.slow * 1000), min_rate=limits.min_rate)


class Attachment:
    """One process attached to a listener, and its event stream."""

    def __init__(self, listener, mode: int, pid: str, handoff_path: str,
                 worker=None):
        self.listener = listener
        self.net = listener.net
        self.usage = listener.tenant.usage
        self.mode = mode
        self.pid = pid
        self.worker = worker                 # a cloud process's worker
        self.proc = worker.proc if worker is not None else None
        self.connections = 0
        self.given = 0
        self.relayed: dict = {}              # conn id -> RelayedConnection
        self.handed: set = set()             # conn ids handed off, not closed
        self.channel = None
        if mode == pb.CARRY_MODE_HANDOFF:
            self.channel = HandoffChannel(handoff_path, self.release, self.end,
                                          self.undelivered)
        self.events: deque = deque()
        self.waiter = None
        self.ended = False
        self.error = None                    # why the kernel ended the stream
        self.detached = False

    def give(self, conn_id: int, conn, peer: tuple) -> None:
        self.connections += 1
        self.given += 1
        if self.channel is not None:
            self.handed.add(conn_id)
            self.channel.give(conn_id, peer, conn)
        else:
            self.net.relay(self, conn_id, conn, peer)

    def release(self, conn_id: int) -> None:
        """A handed-off connection the process reports closed."""
        if conn_id in self.handed:
            self.handed.discard(conn_id)
            self.connections -= 1
            self.net.released(self.listener)

    def push(self, event) -> None:
        if self.ended:
            return
        self.events.append(event)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end(self) -> None:
        """End the stream from the kernel's side (unlisten, process gone)."""
        if not self.ended:
            self.ended = True
            self.push_wake()

    def push_wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def stream(self):
        """The AttachListener reply: ATTACHED, then the connections' events."""
        try:
            yield await self._attach()
            while True:
                events = self.events
                while events:
                    event = events.popleft()
                    yield event
                    if event.kind == OPEN:
                        self._delivered(event.connection_id)
                if self.ended:
                    if self.error is not None:
                        raise self.error
                    return
                self.waiter = asyncio.get_running_loop().create_future()
                await self.waiter
                self.waiter = None
        finally:
            self.detach()

    async def _attach(self) -> pb.ConnectionEvent:
        limits = self.listener.limits
        event = pb.ConnectionEvent(
            kind=pb.CONNECTION_EVENT_KIND_ATTACHED,
            idle_timeout_ms=int(limits.idle * 1000),
            slow_timeout_ms=int(limits.slow * 1000), min_rate=limits.min_rate,
            window_bytes=limits.window, pid=self.pid)
        if self.channel is None:
            self.listener.attach(self)
            return event
        nonce = secrets.token_bytes(16)
        event.data = nonce
        asyncio.get_running_loop().create_task(self._open_channel(nonce))
        return event

    async def _open_channel(self, nonce: bytes) -> None:
        try:
            await self.channel.open(nonce)
        except NubisError as e:
            log.info("listener %d: process %s: %s", self.listener.port,
                     self.pid, e.message)
            self.error = e
            self.end()
            return
        if not self.ended:
            self.listener.attach(self)
            log.debug("listener %d: process %s attached (handoff)",
                      self.listener.port, self.pid)

    def _delivered(self, conn_id: int) -> None:
        conn = self.relayed.get(conn_id)
        if conn is not None:
            conn.delivered = True

    def detach(self) -> None:
        """Leave the listener: close what it holds (once; idempotent)."""
        if self.detached:
            return
        self.detached = True
        self.ended = True
        self.listener.detach(self)
        for conn in list(self.relayed.values()):
            if conn.delivered:
                conn.close("listener process detached")
            else:
                self._move(conn)
        if self.channel is not None:
            self.channel.on_lost = _nothing
            self.channel.close()
        for _ in range(len(self.handed)):
            self.net.released(self.listener)
        self.connections -= len(self.handed)
        self.handed.clear()

    def _move(self, conn) -> None:
        """Give a relayed connection whose OPEN never reached this process
        to another one, with the events it has not seen."""
        target = self.listener.pick()
        if target is None:
            conn.close("no listener process")
            return
        del self.relayed[conn.id]
        self.connections -= 1
        target.relayed[conn.id] = conn
        target.connections += 1
        target.given += 1
        conn.attachment = target
        if conn.transport is None:
            return             # its OPEN is pushed when its socket is set up
        target.push(pb.ConnectionEvent(
            connection_id=conn.id, kind=OPEN, peer_host=conn.peer[0],
            peer_port=conn.peer[1]))
        for event in self.events:
            if event.connection_id == conn.id and event.kind != OPEN:
                target.push(event)

    def undelivered(self, conn_id: int, conn, peer: tuple) -> None:
        """A socket the handoff channel could not pass: to another process."""
        self.listener.detach(self)
        if conn_id in self.handed:
            self.handed.discard(conn_id)
            self.connections -= 1
        self.listener.dispatch(conn_id, conn, peer)

    def info(self) -> pb.AttachedProcess:
        return pb.AttachedProcess(pid=self.pid, mode=self.mode,
                                  connections=self.connections, given=self.given)


def _nothing() -> None:
    pass
