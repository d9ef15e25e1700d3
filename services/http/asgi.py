"""One request and its response as an ASGI 3 `http` cycle, and the lifespan.

A `Cycle` is made by nubis.services.http.protocol when a request's head is
parsed; it runs the app as a task with `receive` and `send`, and tells its
connection when the response is whole (`done`). Responses are written with
the fewest writes: the head waits for the first body message, so a response
of one body message is one write with its Content-Length; one of several
without a Content-Length is sent chunked.
"""

import asyncio
import logging
from urllib.parse import unquote

import httptools

from nubis.services.http.limits import REASONS, canned, date_header, status_line

log = logging.getLogger("nubis.http.app")

ASGI = {"version": "3.0", "spec_version": "2.3"}
DISCONNECT = {"type": "http.disconnect"}
_NO_BODY = frozenset((204, 304))
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Cycle:
    """A request being answered by the app."""

    __slots__ = (
        "conn", "scope", "body", "body_bytes", "buffered", "complete_", "gone",
        "waiter", "ended_waiter", "started", "finished", "ended", "status",
        "sent", "chunked", "head", "length", "keep_alive", "expect", "t0",
        "task", "pending", "paused", "timed", "body_given", "version",
    )

    def __init__(self, conn, method: bytes, url: bytes, headers: list,
                 version: str, keep_alive: bool, expect: bool):
        self.conn = conn
        parsed = httptools.parse_url(url)
        raw_path = parsed.path
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        method = method.decode("ascii")
        self.scope = {
            "type": "http", "asgi": ASGI, "http_version": version,
            "server": conn.local, "client": conn.peer, "scheme": "http",
            "method": method, "root_path": "", "path": path,
            "raw_path": raw_path, "query_string": parsed.query or b"",
            "headers": headers,
        }
        self.version = version
        self.head = method == "HEAD"
        self.keep_alive = keep_alive
        self.expect = expect
        self.body = []
        self.body_bytes = self.buffered = 0
        self.complete_ = self.gone = self.body_given = False
        self.started = self.finished = self.ended = self.timed = False
        self.waiter = self.ended_waiter = self.paused = None
        self.status = 0
        self.sent = 0
        self.chunked = False
        self.length = None
        self.pending = None
        self.task = None
        self.t0 = conn.loop.time()

    # -- the connection's side ----------------------------------------------

    def run(self, app, state: dict) -> None:
        if state:
            self.scope["state"] = state.copy()
        self.task = self.conn.loop.create_task(self._run(app))

    def feed(self, data: bytes) -> None:
        self.body.append(data)
        self.body_bytes += len(data)
        self.buffered += len(data)
        self._wake()

    def complete(self) -> None:
        self.complete_ = True
        self._wake()

    def disconnected(self) -> None:
        self.gone = True
        self._wake()
        self._wake_ended()
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)
        if not self.ended and self.started:
            self._end()     # nobody left to answer; the app may go on

    def timed_out(self) -> None:
        """The app ran out of time: 504 if it has not answered, else cut."""
        if self.ended:
            return
        self.timed = True
        conn = self.conn
        if not self.started and not conn.closing:
            self.status = 504
            self.keep_alive = False
            conn.transport.write(canned(504, "the application did not answer "
                                        "within "
                                        f"{conn.limits.request_timeout:g} s"))
        else:
            conn.abort()
        self.task.cancel()
        self._end()

    def pause_writing(self) -> None:
        if self.paused is None or self.paused.done():
            self.paused = self.conn.loop.create_future()

    def resume_writing(self) -> None:
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)

    # -- the app's side -----------------------------------------------------

    async def _run(self, app) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self.timed:
                self._fail("the request was cancelled")
            return
        except BaseException as e:
            log.error("http: %s %s failed: %s", self.scope["method"],
                      self.scope["path"], e, exc_info=e)
            self._fail("the application raised an exception")
            if not isinstance(e, Exception):
                raise
            return
        if not self.finished:
            self._fail("the application returned before its response was whole")

    def _fail(self, why: str) -> None:
        if self.ended:
            return
        conn = self.conn
        if not self.started and not conn.closing:
            self.status = 500
            conn.transport.write(canned(500, why, close=not self.keep_alive))
        else:
            self.keep_alive = False
            conn.abort()
        self._end()

    async def receive(self) -> dict:
        if self.gone:
            return DISCONNECT
        if self.body_given:
            if not self.ended:
                self.ended_waiter = self.conn.loop.create_future()
                await self.ended_waiter
            return DISCONNECT
        if not self.body and not self.complete_:
            if self.expect:
                self.expect = False
                self.conn.transport.write(_CONTINUE)
            while not self.body and not self.complete_ and not self.gone:
                self.waiter = self.conn.loop.create_future()
                await self.waiter
            if self.gone:
                return DISCONNECT
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        self.buffered = 0
        self.conn.body_taken()
        more = not self.complete_
        self.body_given = not more
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body sent before "
                                   "http.response.start")
            if self.finished:
                raise RuntimeError("the response is already complete")
            await self._body(message.get("body", b""),
                             message.get("more_body", False))
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self._start(message["status"], message.get("headers", ()))
        else:
            raise ValueError(f"unexpected ASGI message type {kind!r}")

    def _start(self, status: int, headers) -> None:
        self.started = True
        self.status = status
        parts = [status_line(status), date_header()]
        for name, value in headers:
            low = name.lower()
            if low == b"content-length":
                self.length = int(value)
            elif low == b"connection" and value.lower() == b"close":
                self.keep_alive = False
            parts += (name, b": ", value, b"\r\n")
        if self.conn.server.draining:
            self.keep_alive = False
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        elif self.version == "1.0":
            parts.append(b"connection: keep-alive\r\n")
        self.pending = parts
        self.conn.answering()

    async def _body(self, body: bytes, more: bool) -> None:
        if self.gone or self.ended:
            return
        out = b""
        if self.pending is not None:
            parts, self.pending = self.pending, None
            if self.length is None and self.status not in _NO_BODY \
                    and self.status >= 200:
                if more:
                    self.chunked = True
                    parts.append(b"transfer-encoding: chunked\r\n")
                else:
                    parts.append(b"content-length: %d\r\n" % len(body))
            parts.append(b"\r\n")
            out = b"".join(parts)
        if self.head:
            body = b""
        elif self.chunked:
            if body:
                body = b"%x\r\n%b\r\n" % (len(body), body)
            if not more:
                body += b"0\r\n\r\n"
        if out or body:
            self.sent += len(body)
            self.conn.transport.write(out + body if out else body)
        if not more:
            self.finished = True
            self._end()
        elif self.paused is not None and not self.paused.done():
            await self.paused

    # -- endings ------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_ended(self) -> None:
        waiter = self.ended_waiter
        if waiter is not None:
            self.ended_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self._wake_ended()
        self.conn.done(self)

    def log(self, logger) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        peer = self.scope["client"]
        query = self.scope["query_string"]
        target = self.scope["raw_path"] + (b"?" + query if query else b"")
        logger.info('%s - "%s %s HTTP/%s" %d %d %.1fms',
                    peer[0] if peer else "-", self.scope["method"],
                    target.decode("latin-1"), self.version, self.status,
                    self.sent, (self.conn.loop.time() - self.t0) * 1000)


class Lifespan:
    """The ASGI lifespan protocol: startup before serving, shutdown after.

    An app that does not speak it (raises at once, as plain ASGI callables
    often do) is served anyway, as uvicorn's "auto" mode does."""

    def __init__(self, app):
        self.app = app
        self.state: dict = {}
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.task = None
        self.supported = True

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI, "state": self.state}
        self.task = asyncio.get_running_loop().create_task(self._main(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        reply = await self.outbox.get()
        if reply["type"] == "lifespan.startup.failed":
            raise RuntimeError("the application failed to start: "
                               f"{reply.get('message', '')}")

    async def _main(self, scope) -> None:
        try:
            await self.app(scope, self.inbox.get, self.outbox.put)
        except BaseException as e:
            self.supported = False
            log.debug("http: no lifespan support (%s)", e)
        finally:
            await self.outbox.put({"type": "lifespan.unsupported"})

    async def shutdown(self) -> None:
        if not self.supported or self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self.outbox.get(), 10)
        except TimeoutError:
            log.warning("http: the application's lifespan shutdown did not "
                        "finish within 10 s")


__all__ = ["Cycle", "Lifespan", "REASONS"]
