"""Daemons on a LISTEN port: a standard asyncio Protocol, attached in one line.

    import asyncio
    from nubis.services import listen

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    def main(args):                 # a cloud process's entry
        listen.run(Echo, 20001)

Each connection gets a fresh protocol from the factory, exactly as with
`loop.create_server`, in either carry mode:

- handoff (the default): the kernel passes the accepted socket over a unix
  socket this module listens on, and the socket is run by the event loop
  itself (`loop.connect_accepted_socket`), so bytes take no extra hop. The
  kernel no longer sees such a connection, so this module applies the
  listener's idle and slow-sender limits to it (the rules of
  nubis.net.limits, which the kernel states in the ATTACHED event) and
  reports each close back, which keeps the kernel's balancing right;
- relay: the kernel carries the bytes as events; `RelayTransport` turns
  the protocol's write, write_eof, close and pause_reading into RelayWrite
  calls and credit, with the usual pause_writing/resume_writing back.
"""

import asyncio
import logging
import os
import secrets
import socket
import struct
import tempfile

from nubis.client import AsyncClient, current
from nubis.errors import AlreadyExists, NotFound
from nubis.services.relay import RelayTransport
from nubis.v1 import listen_pb2 as pb

log = logging.getLogger("nubis.services.listen")

ACCEPT_TIMEOUT = 10.0
SWEEP_SECONDS = 0.25
_HEADER = struct.Struct(">QH")
_ID = struct.Struct(">Q")
MODES = ("handoff", "relay")


async def connect() -> AsyncClient:
    """An async client of this process's tenant: inside a cloud process the
    one the kernel bound, elsewhere $NUBIS_URL and $NUBIS_TOKEN."""
    try:
        bound = current()
    except RuntimeError:
        return await AsyncClient.connect()
    return await AsyncClient.connect(bound.url.url, bound.token)


def run(protocol_factory, port: int, **options) -> None:
    """Serve `port` until its stream ends: `serve` on a loop of its own."""
    run_main(serve(protocol_factory, port, **options))


def run_main(main) -> None:
    """Run a daemon's main coroutine, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


async def serve(protocol_factory, port: int, *, mode: str = "handoff",
                client: AsyncClient | None = None, listen: bool = True,
                ready=None) -> None:
    """Attach to `port` (listening on it first unless listen=False) and run
    a protocol from `protocol_factory` on each connection given, until the
    kernel ends the stream. `ready`, if given, is called once attached."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    own = client is None
    if own:
        client = await connect()
    try:
        if listen:
            try:
                await client.listen.listen(port)
            except AlreadyExists:
                pass
        carrier = _Handoff if mode == "handoff" else _Relay
        await carrier(client, protocol_factory, port, ready).run()
    finally:
        if own:
            await client.close()


class _Relay:
    """Relay mode: connections are events on the stream."""

    def __init__(self, client, factory, port: int, ready):
        self.client = client
        self.factory = factory
        self.port = port
        self.ready = ready
        self.conns: dict = {}
        self.window = 1 << 18
        self.ended = False            # no RelayWrite once the stream is gone

    async def run(self) -> None:
        conns = self.conns
        try:
            async for ev in self.client.listen.attach(self.port, "relay"):
                kind = ev.kind
                if kind == pb.CONNECTION_EVENT_KIND_DATA:
                    conn = conns.get(ev.connection_id)
                    if conn is not None:
                        conn.feed(ev.data)
                elif kind == pb.CONNECTION_EVENT_KIND_OPEN:
                    conn = RelayTransport(self, ev.connection_id,
                                          (ev.peer_host, ev.peer_port))
                    conns[ev.connection_id] = conn
                    conn.start(self.factory())
                elif kind == pb.CONNECTION_EVENT_KIND_HALF_CLOSE:
                    if ev.connection_id in conns:
                        conns[ev.connection_id].feed_eof()
                elif kind == pb.CONNECTION_EVENT_KIND_CLOSE:
                    if ev.connection_id in conns:
                        conns[ev.connection_id].lost(ev.data.decode())
                elif kind == pb.CONNECTION_EVENT_KIND_ATTACHED:
                    self.window = ev.window_bytes or self.window
                    if self.ready is not None:
                        self.ready()
        finally:
            self.ended = True
            for conn in list(conns.values()):
                conn.lost("the listener stream ended")

    def forget(self, conn_id: int) -> None:
        self.conns.pop(conn_id, None)


class _Handoff:
    """Handoff mode: sockets arrive on a unix socket; see nubis.net.handoff."""

    def __init__(self, client, factory, port: int, ready):
        self.client = client
        self.factory = factory
        self.port = port
        self.ready = ready
        self.chan = None
        self.lost = None
        self.live: dict = {}          # conn id -> _Tracked
        self.closed: list = []        # ids to report
        self.limits = None
        self.loop = None

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.lost = self.loop.create_future()
        path, server = _handoff_socket(self.port)
        events = self.client.listen.attach(self.port, "handoff", path)
        stream = None
        try:
            attached = await anext(events)
            self.limits = attached
            await self._open(server, attached.data)
            stream = self.loop.create_task(_drain(events))
            stream.add_done_callback(lambda _: self._lose())
            sweeper = self.loop.create_task(self._sweep())
            if self.ready is not None:
                self.ready()
            try:
                await self.lost
            finally:
                sweeper.cancel()
        finally:
            server.close()
            _unlink(path)
            if stream is not None:
                stream.cancel()
                await asyncio.wait([stream])
            await events.aclose()
            self._close_channel()
        if stream is not None and stream.done() and not stream.cancelled():
            stream.result()        # the kernel's reason, if it ended with one

    async def _open(self, server, nonce: bytes) -> None:
        loop = self.loop
        try:
            chan, _ = await asyncio.wait_for(loop.sock_accept(server),
                                             ACCEPT_TIMEOUT)
        except TimeoutError:
            raise NotFound("the kernel did not connect to the handoff "
                           "socket") from None
        chan.setblocking(False)
        await loop.sock_sendall(chan, nonce)
        if await loop.sock_recv(chan, 16) != b"R":
            chan.close()
            raise NotFound("the kernel did not accept the handoff channel")
        self.chan = chan
        loop.add_reader(chan.fileno(), self._readable)

    def _readable(self) -> None:
        while self.chan is not None:
            try:
                message, fds, _, _ = socket.recv_fds(self.chan, 1024, 4)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message:
                self._lose()
                return
            self._take(message, fds)

    def _take(self, message: bytes, fds: list) -> None:
        if message[:1] != b"C" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return
        conn_id, _ = _HEADER.unpack_from(message, 1)
        sock = socket.socket(fileno=fds[0])
        tracked = _Tracked(self, conn_id, self.factory())
        self.live[conn_id] = tracked
        self.loop.create_task(self._connect(tracked, sock))

    async def _connect(self, tracked, sock) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: tracked, sock)
        except OSError:
            sock.close()
            self.release(tracked.conn_id)

    def release(self, conn_id: int) -> None:
        """A connection closed: report it to the kernel, batched per turn."""
        if self.live.pop(conn_id, None) is None:
            return
        self.closed.append(conn_id)
        if len(self.closed) == 1:
            self.loop.call_soon(self._report)

    def _report(self) -> None:
        ids, self.closed = self.closed, []
        if self.chan is None or not ids:
            return
        try:
            self.chan.send(b"X" + b"".join(_ID.pack(i) for i in ids))
        except OSError:
            self._lose()

    async def _sweep(self) -> None:
        limits = self.limits
        rules = _Rules(limits.idle_timeout_ms / 1000,
                       limits.slow_timeout_ms / 1000, limits.min_rate)
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = self.loop.time()
            for tracked in list(self.live.values()):
                reason = rules.check(tracked, now)
                if reason is not None and tracked.transport is not None:
                    log.info("connection %d closed: %s", tracked.conn_id, reason)
                    tracked.transport.abort()

    def _lose(self) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def _close_channel(self) -> None:
        chan, self.chan = self.chan, None
        if chan is not None:
            self.loop.remove_reader(chan.fileno())
            chan.close()


async def _drain(events) -> None:
    """Keep the attach stream open; the kernel ends it (or says why)."""
    async for _ in events:
        pass


def _handoff_socket(port: int):
    """A SEQPACKET socket listening in this process's own folder."""
    folder = os.getcwd()
    name = f"nubis-handoff-{port}-{os.getpid()}-{secrets.token_hex(4)}.sock"
    path = os.path.join(folder, name)
    if len(path.encode()) > 100 or not os.access(folder, os.W_OK):
        path = os.path.join(tempfile.mkdtemp(prefix="nubis-"), name)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(1)
    server.setblocking(False)
    return path, server


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Tracked(asyncio.Protocol):
    """A handed-off connection's protocol, counted for the limits and the
    close report; every callback goes on to the tenant's protocol."""

    def __init__(self, owner: _Handoff, conn_id: int, inner):
        self.owner = owner
        self.conn_id = conn_id
        self.inner = inner
        self.transport = None
        self.received = 0           # bytes in; writes out (counts only)
        self.writes = 0
        self.seen = (0, 0)          # the counts at the last sweep
        self.last = owner.loop.time()
        self.pending_since = None
        self.pending_last = 0.0
        self.pending_bytes = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.inner.connection_made(_Counted(transport, self))

    def data_received(self, data) -> None:
        self.received += len(data)
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            self.owner.release(self.conn_id)


class _Counted(asyncio.Transport):
    """The real transport, with its writes counted for the slow rule."""

    __slots__ = ("_t", "_tracked")

    def __init__(self, transport, tracked: _Tracked):
        self._t = transport
        self._tracked = tracked

    def write(self, data) -> None:
        self._tracked.writes += 1
        self._t.write(data)

    def writelines(self, chunks) -> None:
        self._tracked.writes += 1
        self._t.writelines(chunks)

    def __getattr__(self, name):
        return getattr(self._t, name)

    def get_extra_info(self, name, default=None):
        return self._t.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._t.is_closing()

    def close(self) -> None:
        self._t.close()

    def abort(self) -> None:
        self._t.abort()

    def write_eof(self) -> None:
        self._t.write_eof()

    def can_write_eof(self) -> bool:
        return self._t.can_write_eof()

    def pause_reading(self) -> None:
        self._t.pause_reading()

    def resume_reading(self) -> None:
        self._t.resume_reading()

    def is_reading(self) -> bool:
        return self._t.is_reading()

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        self._t.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._t.get_write_buffer_size()

    def get_write_buffer_limits(self):
        return self._t.get_write_buffer_limits()

    def get_protocol(self):
        return self._tracked.inner

    def set_protocol(self, protocol) -> None:
        self._tracked.inner = protocol


class _Rules:
    """The kernel's idle and slow-sender rules (nubis.net.limits), fed
    from byte counts once a sweep rather than from every call."""

    def __init__(self, idle: float, slow: float, min_rate: int):
        self.idle = idle
        self.slow = slow
        self.min_rate = min_rate

    def check(self, t: _Tracked, now: float) -> str | None:
        received, writes = t.received, t.writes
        got = received - t.seen[0]
        if got:
            t.last = now
            if t.pending_since is None:
                t.pending_since, t.pending_bytes = now, 0
            t.pending_last = now
            t.pending_bytes += got
        if writes != t.seen[1]:
            t.last = now
            t.pending_since = None
        t.seen = (received, writes)
        if self.idle and now - t.last > self.idle:
            return f"idle for over {self.idle:g} s"
        if t.pending_since is None or not self.slow:
            return None
        span = t.pending_last - t.pending_since
        if span > self.slow and t.pending_bytes < self.min_rate * span:
            return f"slow sender: {t.pending_bytes} bytes in {span:.1f} s"
        return None

