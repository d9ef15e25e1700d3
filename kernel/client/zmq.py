"""The client side of the ZeroMQ wire (proto/WIRE.md), sync and asyncio.

A connection is one DEALER socket, authenticated in the ZeroMQ handshake
with the tenant's token as the PLAIN password, or, given `curve` keys (a
tcp:// endpoint of a kernel with a CURVE key), by the tenant's keypair.
Each call gets a fresh request id; replies are matched to calls by it, so
the asyncio connection keeps any number of calls in flight, and the sync
one discards replies to calls it gave up on. Content larger than one chunk
is streamed in DATA messages, zero-copy from the caller's buffer.
"""

import asyncio
import itertools
import logging
import time
from collections import deque

import zmq
from zmq.utils.monitor import parse_monitor_message

from nubis.errors import (
    DeadlineExceeded,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
    error_for,
)
from nubis.transport.frames import (
    CANCEL,
    DATA,
    END,
    OPEN,
    PING,
    PONG,
    REPLY,
    REPLY_OPEN,
    REQUEST,
    decode_header,
    encode_header,
)

log = logging.getLogger("nubis.client")

CONNECT_TIMEOUT = 5.0
_context = None


def _ctx() -> zmq.Context:
    global _context
    if _context is None or _context.closed:
        _context = zmq.Context()
    return _context


def _socket(endpoint: str, token: str, max_message_bytes: int, curve=None):
    if curve is None and not token:
        raise Unauthenticated("missing token: pass token= or set NUBIS_TOKEN")
    sock = _ctx().socket(zmq.DEALER)
    sock.linger = 0
    sock.sndhwm = 0          # content is sent zero-copy; never drop or block
    if curve is not None:
        server, public, secret = curve
        sock.curve_serverkey = server
        sock.curve_publickey = public
        sock.curve_secretkey = secret
    else:
        sock.plain_username = b"nubis"
        sock.plain_password = token.encode()
    sock.maxmsgsize = max_message_bytes + 4096
    sock.heartbeat_ivl = 10_000
    sock.heartbeat_timeout = 30_000
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                      | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                      | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    sock.connect(endpoint)
    return sock, monitor


def _refusal(monitor, endpoint: str) -> Unauthenticated | None:
    """Why the kernel refused the handshake, if its latest attempt failed."""
    event = None
    while monitor.poll(0):
        event = parse_monitor_message(monitor.recv_multipart())["event"]
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return Unauthenticated(f"the kernel at {endpoint} refused the "
                               "credentials (token or CURVE key)")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return Unauthenticated(
            f"the handshake with {endpoint} failed: the endpoint uses another "
            "security mechanism (a kernel with a CURVE key serves tcp:// with "
            "CURVE only; pass curve_server_key=), or the CURVE keys are wrong")
    return None


def request_messages(method, request, content, rid: int, chunk: int) -> list:
    """The messages of one request, per WIRE.md section 4."""
    body = request.SerializeToString()
    if content is None or not method.content_in:
        if content is not None:
            raise InvalidArgument(f"{method.key} takes no content")
        return [[encode_header(REQUEST, method.id, rid), body]]
    if len(content) <= chunk:
        return [[encode_header(REQUEST, method.id, rid), body, content]]
    view = memoryview(content)
    data = encode_header(DATA, 0, rid)
    msgs = [[encode_header(OPEN, method.id, rid), body]]
    msgs += [[data, view[at:at + chunk]] for at in range(0, len(view), chunk)]
    msgs.append([encode_header(END, 0, rid)])
    return msgs


class Reply:
    """Assembles the reply to one call from the messages that carry it."""

    __slots__ = ("method", "response", "chunks", "events", "done", "error")

    def __init__(self, method):
        self.method = method
        self.response = None
        self.chunks = []
        self.events = deque()
        self.done = False
        self.error = None

    def feed(self, kind: int, code: int, frames: list) -> None:
        method = self.method
        if kind == REPLY:
            self.done = True
            if code:
                self.error = error_for(code, _text(frames))
                return
            self.response = method.response.FromString(frames[1])
            if method.content_out:
                self.chunks = frames[2:]
        elif kind == REPLY_OPEN:
            if method.content_out:
                self.response = method.response.FromString(frames[1])
        elif kind == DATA:
            if method.events:
                self.events.append(method.response.FromString(frames[1]))
            else:
                self.chunks.extend(frames[1:])
        elif kind == END:
            self.done = True
            if code:
                self.error = error_for(code, _text(frames))

    def result(self):
        if self.error is not None:
            raise self.error
        if not self.method.content_out:
            return self.response, None
        chunks = self.chunks
        content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self.response, bytes(content)


def _text(frames: list) -> str:
    return bytes(frames[1]).decode(errors="replace") if len(frames) > 1 else ""


class ZmqConnection:
    """A blocking connection: one call at a time, from one thread."""

    def __init__(self, endpoint: str, token: str, *, max_message_bytes=8 << 20,
                 chunk_bytes=1 << 20, connect_timeout=CONNECT_TIMEOUT,
                 curve=None):
        self.endpoint = endpoint
        self.chunk = chunk_bytes
        self.sock, self.monitor = _socket(endpoint, token, max_message_bytes,
                                          curve)
        self._ids = itertools.count(1)
        try:
            self.ping(connect_timeout)
        except Exception:
            self.close()
            raise

    def ping(self, timeout: float = CONNECT_TIMEOUT) -> float:
        """Round-trip a PING; returns the seconds it took."""
        rid = next(self._ids)
        started = time.perf_counter()
        self.sock.send_multipart([encode_header(PING, 0, rid), b""])
        deadline = time.monotonic() + timeout
        while True:
            frames = self._recv(deadline, rid, "ping")
            _, kind, _, got = decode_header(frames[0])
            if got == rid and kind == PONG:
                return time.perf_counter() - started

    def call(self, method, request, content=None, timeout=None):
        rid = next(self._ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        if content is None and not method.content_in:
            self.sock.send_multipart([encode_header(REQUEST, method.id, rid),
                                      request.SerializeToString()])
        else:
            for frames in request_messages(method, request, content, rid,
                                           self.chunk):
                self.sock.send_multipart(frames, copy=len(frames[-1]) < 65536)

        frames = self._recv(deadline, rid, method.key)
        _, kind, code, got = decode_header(frames[0])
        if got == rid and kind == REPLY:
            if code:
                raise error_for(code, _text(frames))
            response = method.response.FromString(frames[1])
            if not method.content_out:
                return response, None
            return response, frames[2] if len(frames) == 3 else b"".join(frames[2:])

        # Streamed or content replies, and replies to calls given up on.
        reply = Reply(method)
        while True:
            if got == rid:
                reply.feed(kind, code, frames)
                if reply.done:
                    return reply.result()
            frames = self._recv(deadline, rid, method.key)
            _, kind, code, got = decode_header(frames[0])

    def events(self, method, request, timeout=None):
        """Yield the responses of an events call until its stream ends."""
        rid = next(self._ids)
        self.sock.send_multipart([encode_header(REQUEST, method.id, rid),
                                  request.SerializeToString()])
        deadline = None if timeout is None else time.monotonic() + timeout
        reply = Reply(method)
        try:
            while True:
                while reply.events:
                    yield reply.events.popleft()
                if reply.done:
                    reply.result()
                    return
                frames = self._recv(deadline, rid, method.key)
                _, kind, code, got = decode_header(frames[0])
                if got == rid:
                    reply.feed(kind, code, frames)
        finally:
            if not reply.done:
                self.sock.send(encode_header(CANCEL, 0, rid))

    def _recv(self, deadline, rid, what: str) -> list:
        sock = self.sock
        while True:
            if deadline is None:
                wait = 1000
            else:
                wait = min(1000, max(0, int((deadline - time.monotonic()) * 1000)))
            if sock.poll(wait):
                return sock.recv_multipart()
            refusal = _refusal(self.monitor, self.endpoint)
            if refusal is not None:
                raise refusal
            if deadline is not None and time.monotonic() >= deadline:
                sock.send(encode_header(CANCEL, 0, rid))
                if what == "ping":
                    raise Unavailable(f"no kernel answered at {self.endpoint}")
                raise DeadlineExceeded(f"{what}: no reply within the deadline")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.disable_monitor()
            self.monitor.close(0)
            self.sock.close(0)
            self.sock = None


class AsyncZmqConnection:
    """An asyncio connection: any number of calls in flight on one socket."""

    def __init__(self, endpoint: str, token: str, *, max_message_bytes=8 << 20,
                 chunk_bytes=1 << 20, curve=None):
        self.endpoint = endpoint
        self.token = token
        self.curve = curve
        self.chunk = chunk_bytes
        self.max_message = max_message_bytes
        self.sock = None
        self.loop = None
        self._ids = itertools.count(1)
        self._calls: dict = {}       # rid -> (Reply, future or queue)

    async def open(self, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock, self.monitor = _socket(self.endpoint, self.token,
                                          self.max_message, self.curve)
        self.loop.add_reader(self.sock.FD, self._ready)
        try:
            await self.ping(connect_timeout)
        except Exception:
            await self.close()
            raise

    async def ping(self, timeout: float = CONNECT_TIMEOUT) -> float:
        rid = next(self._ids)
        started = time.perf_counter()
        fut = self.loop.create_future()
        self._calls[rid] = (None, fut)
        self._send([encode_header(PING, 0, rid), b""])
        try:
            await self._wait(fut, rid, timeout, "ping")
        except DeadlineExceeded:
            raise Unavailable(f"no kernel answered at {self.endpoint}") from None
        return time.perf_counter() - started

    async def call(self, method, request, content=None, timeout=None):
        rid = next(self._ids)
        msgs = request_messages(method, request, content, rid, self.chunk)
        fut = self.loop.create_future()
        self._calls[rid] = (Reply(method), fut)
        for frames in msgs:
            self._send(frames)
        return await self._wait(fut, rid, timeout, method.key)

    async def events(self, method, request, timeout=None):
        rid = next(self._ids)
        queue = asyncio.Queue()
        reply = Reply(method)
        self._calls[rid] = (reply, queue)
        self._send([encode_header(REQUEST, method.id, rid),
                    request.SerializeToString()])
        try:
            while True:
                async with asyncio.timeout(timeout):
                    await queue.get()
                while reply.events:
                    yield reply.events.popleft()
                if reply.done:
                    reply.result()
                    return
        finally:
            self._calls.pop(rid, None)
            if not reply.done and self.sock is not None:
                self._send([encode_header(CANCEL, 0, rid)])

    async def _wait(self, fut, rid, timeout, what):
        timer = None
        if timeout is not None:
            timer = self.loop.call_later(timeout, self._expire, fut, rid, what)
        try:
            return await fut
        finally:
            if timer is not None:
                timer.cancel()
            if self._calls.pop(rid, None) is not None and self.sock is not None:
                self._send([encode_header(CANCEL, 0, rid)])

    def _expire(self, fut, rid, what) -> None:
        if fut.done():
            return
        refusal = _refusal(self.monitor, self.endpoint)
        if refusal is not None:
            fut.set_exception(refusal)
        else:
            fut.set_exception(DeadlineExceeded(f"{what}: no reply within the "
                                               "deadline"))

    def _send(self, frames: list) -> None:
        self.sock.send_multipart(frames, zmq.NOBLOCK,
                                 copy=len(frames[-1]) < 65536)
        if self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self.loop.call_soon(self._ready)

    def _ready(self) -> None:
        sock = self.sock
        if sock is None:
            return
        calls = self._calls
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames = sock.recv_multipart(zmq.NOBLOCK)
            _, kind, code, rid = decode_header(frames[0])
            entry = calls.get(rid)
            if entry is None:
                continue     # the reply to a call that gave up
            reply, waiter = entry
            if reply is None:
                if kind == PONG:
                    del calls[rid]
                    if not waiter.done():
                        waiter.set_result(None)
                continue
            reply.feed(kind, code, frames)
            if isinstance(waiter, asyncio.Queue):
                waiter.put_nowait(None)
            elif reply.done:
                # Answered: forget the call, so its waiter sends no CANCEL.
                del calls[rid]
                if waiter.done():
                    continue
                try:
                    waiter.set_result(reply.result())
                except Exception as e:  # noqa: BLE001 - the call's own error
                    waiter.set_exception(e)

    async def close(self) -> None:
        if self.sock is None:
            return
        self.loop.remove_reader(self.sock.FD)
        for _, waiter in self._calls.values():
            if isinstance(waiter, asyncio.Future) and not waiter.done():
                waiter.set_exception(Unavailable("connection closed"))
        self._calls.clear()
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)
        self.sock = None
