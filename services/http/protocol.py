"""HTTP/1.1 on an asyncio Protocol: httptools parses, an ASGI app answers.

Theory of operation. One `HttpProtocol` per connection feeds bytes to an
httptools parser, whose callbacks build a `Cycle` (nubis.services.http.asgi)
per request. Requests on a connection are answered in order: a pipelined
request waits in `pipeline` until the one before it has sent its whole
response. The rules:

- the head of a request (request line and headers) is at most
  `max_header_bytes` (else 431) and must arrive within `header_timeout` of
  its first byte (else 408); a body is at most `max_body_bytes` (else 413,
  also when Content-Length announces more); bytes httptools rejects get 400;
  each of these answers closes the connection, and the daemon goes on;
- a process runs at most `max_inflight` requests in its app at once; one
  more gets 503 at once (and Retry-After), never a queue;
- the app must finish its response within `request_timeout`: if it has not
  started one it gets 504; if it has, the connection is aborted, as the
  client could not tell a cut response from a whole one otherwise;
- a connection with no request for `keepalive_timeout` is closed;
- while draining (shutdown) idle connections close at once and busy ones
  close after their current response;
- the body of a request is buffered up to 64 KiB ahead of the app, then
  reading pauses until the app takes it (flow control).

`tracker` (nubis.services.http.keeper) sees each connection and whether a
request is waiting for its answer, so that a keeper process can answer 502
if this process dies.
"""

import asyncio
import logging

import httptools

from nubis.services.http.asgi import Cycle
from nubis.services.http.limits import Limits, canned

log = logging.getLogger("nubis.http")

HIGH_WATER = 64 << 10


class HttpServer:
    """What every connection of one daemon process shares."""

    def __init__(self, app, limits: Limits | None = None, tracker=None,
                 state: dict | None = None):
        self.app = app
        self.limits = limits or Limits()
        self.tracker = tracker
        self.state = state if state is not None else {}
        self.connections: set = set()
        self.inflight = 0
        self.draining = False
        self.served = 0
        self.access = logging.getLogger("nubis.http.access")
        self.idle = asyncio.Event()
        self.idle.set()

    def protocol(self) -> "HttpProtocol":
        """The protocol factory for loop.create_server or LISTEN."""
        return HttpProtocol(self)

    def started(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def finished(self) -> None:
        self.inflight -= 1
        self.served += 1
        if self.inflight == 0:
            self.idle.set()

    async def drain(self) -> None:
        """Stop taking requests, let in-flight ones finish (up to
        `drain_seconds`), then close every connection."""
        self.draining = True
        for conn in list(self.connections):
            conn.drain()
        try:
            await asyncio.wait_for(self.idle.wait(), self.limits.drain_seconds)
        except TimeoutError:
            log.warning("http: %d request(s) still running after %.0f s of "
                        "draining; their connections are closed",
                        self.inflight, self.limits.drain_seconds)
        for conn in list(self.connections):
            conn.abort()


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection."""

    __slots__ = (
        "server", "limits", "loop", "transport", "parser", "peer", "local",
        "cycle", "pipeline", "url", "headers", "head_bytes", "expect",
        "timer", "slot", "paused", "closing", "in_head", "length",
    )

    def __init__(self, server: HttpServer):
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = self.local = None
        self.cycle = None          # the request being answered
        self.pipeline = []         # requests parsed behind it
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.in_head = False
        self.expect = False
        self.length = None
        self.timer = None
        self.slot = -1
        self.paused = False
        self.closing = False

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.local = transport.get_extra_info("sockname")
        self.server.connections.add(self)
        if self.server.tracker is not None:
            self.slot = self.server.tracker.opened(transport)
        self._arm(self.limits.keepalive_timeout)

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.cycle is None:
            self._disarm()      # else the request timer still ends the app
        if self.server.tracker is not None and self.slot >= 0:
            self.server.tracker.closed(self.slot)
            self.slot = -1
        for cycle in (self.cycle, *self.pipeline):
            if cycle is not None:
                cycle.disconnected()
        self.pipeline = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass    # answered as plain HTTP; the connection closes after
        except httptools.HttpParserError as e:
            if self.head_bytes > self.limits.max_header_bytes:
                self.reject(431, "the request head is larger than "
                            f"{self.limits.max_header_bytes} bytes")
            else:
                self.reject(400, f"malformed request: {str(e) or 'bad bytes'}")
            return
        # Bytes of a head still unfinished after this chunk were all head.
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self.reject(431, "the request head is larger than "
                            f"{self.limits.max_header_bytes} bytes")

    def eof_received(self):
        return False

    def pause_writing(self) -> None:
        if self.cycle is not None:
            self.cycle.pause_writing()

    def resume_writing(self) -> None:
        if self.cycle is not None:
            self.cycle.resume_writing()

    # -- httptools callbacks ------------------------------------------------

    def on_message_begin(self) -> None:
        self.head_bytes = 0
        self.url = b""
        self.headers = []
        self.in_head = True
        self.expect = False
        self.length = None
        if self.cycle is None and not self.pipeline:
            self._arm(self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.limits.max_header_bytes:
            raise _HeadTooLarge()
        name = name.lower()
        if name == b"content-length" and value.isdigit():
            self.length = int(value)
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        parser = self.parser
        length = self.length
        if length is not None and length > self.limits.max_body_bytes:
            self.reject(413, f"the body ({length} bytes) is larger than "
                        f"{self.limits.max_body_bytes} bytes")
            return
        if self.server.draining:
            self.reject(503, "the server is shutting down", retry=True)
            return
        if self.server.inflight >= self.limits.max_inflight:
            self.reject(503, f"this process already runs "
                        f"{self.limits.max_inflight} requests", retry=True)
            return
        cycle = Cycle(self, parser.get_method(), self.url, self.headers,
                      parser.get_http_version(), parser.should_keep_alive(),
                      self.expect)
        if self.cycle is None:
            self._start(cycle)
        else:
            self.pipeline.append(cycle)

    def on_body(self, body: bytes) -> None:
        cycle = self.pipeline[-1] if self.pipeline else self.cycle
        if cycle is None or self.closing:
            return
        if cycle.body_bytes + len(body) > self.limits.max_body_bytes:
            if cycle.started:
                self.abort()
            else:
                self.reject(413, "the body is larger than "
                            f"{self.limits.max_body_bytes} bytes")
            return
        cycle.feed(body)
        if cycle.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        cycle = self.pipeline[-1] if self.pipeline else self.cycle
        if cycle is not None:
            cycle.complete()

    # -- the cycle's side ---------------------------------------------------

    def _start(self, cycle: Cycle) -> None:
        self._disarm()
        self.cycle = cycle
        self.server.started()
        if self.slot >= 0:
            self.server.tracker.waiting(self.slot)
        self.timer = self.loop.call_later(self.limits.request_timeout,
                                          cycle.timed_out)
        cycle.run(self.server.app, self.server.state)

    def body_taken(self) -> None:
        if self.paused and not self.closing:
            self.paused = False
            self.transport.resume_reading()

    def answering(self) -> None:
        """The app started its response: a crash now cuts it, no 502."""
        if self.slot >= 0:
            self.server.tracker.answering(self.slot)

    def done(self, cycle: Cycle) -> None:
        """A request's response is whole (or abandoned); next, or idle."""
        self._disarm()
        self.server.finished()
        if self.slot >= 0:
            self.server.tracker.idle(self.slot)
        if self.server.limits.access_log:
            cycle.log(self.server.access)
        self.cycle = None
        if self.closing:
            return
        if not cycle.keep_alive or self.server.draining:
            self.closing = True
            self.transport.close()
            return
        if self.pipeline:
            self._start(self.pipeline.pop(0))
            return
        self.body_taken()
        self._arm(self.limits.keepalive_timeout)

    # -- timers and closing -------------------------------------------------

    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.cycle is not None:
            return
        if self.in_head or self.pipeline:
            self.reject(408, "the request head did not arrive within "
                        f"{self.limits.header_timeout:g} s")
            return
        self.closing = True
        self.transport.close()

    def drain(self) -> None:
        if self.cycle is None and not self.pipeline:
            self.closing = True
            self.transport.close()

    def reject(self, code: int, message: str, *, retry: bool = False) -> None:
        """Answer an error without the app and close the connection."""
        if self.closing:
            return
        log.info("http: %s %s: %d %s", *_peer(self.peer), code, message)
        if self.cycle is None or not self.cycle.started:
            extra = b"retry-after: 1\r\n" if retry else b""
            self.transport.write(canned(code, message, extra=extra))
        self.closing = True
        self.parser = _Discard()
        self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop it; told apart by head_bytes."""


class _Discard:
    """Stands in for the parser once a connection is being closed."""

    def feed_data(self, data) -> None:
        pass


def _peer(peer) -> tuple:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return peer[0], peer[1]
    return "-", "-"
