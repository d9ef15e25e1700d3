"""The ZeroMQ transport: the kernel's low-latency path (spec: proto/WIRE.md).

Theory of operation. One ROUTER socket serves a list of endpoints with one
security mechanism, since a ZeroMQ socket has exactly one: PLAIN (the
password is the tenant's token) or, given the kernel's keypair, CURVE (the
tenant is known by its public key). A kernel with a CURVE key runs two
servers: PLAIN on ipc://, CURVE on tcp://. Each server has its own context,
hence its own ZAP handler, served on the same loop and accepting only the
server's mechanism, so a connection is bound to its tenant by libzmq before
any message arrives, and each message carries its tenant as the "User-Id"
property; nothing a peer sends can change it. The socket's file descriptor
is edge-triggered: the reader drains the socket until it is empty, and any
send made outside the reader checks for input the send may have consumed
the edge of.

Requests that finish at once are answered inside the reader; those that park
(long polls, large puts, event streams) become tasks kept by (peer, request
id) so that CANCEL can stop them. A streamed request (OPEN, DATA..., END)
collects its content under the same key, bounded in size and in number.
"""

import asyncio
import logging
import os
import time
from functools import partial

import zmq
from google.protobuf.message import Message as _Message

from nubis.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NubisError,
    ResourceExhausted,
    Unauthenticated,
)
from nubis.transport.dispatch import parse_request, reply_frames
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
    VERSION,
    decode_header,
    encode_header,
)

log = logging.getLogger("nubis.zmq")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"nubis"
DRAIN_BATCH = 256           # messages per reader turn before yielding the loop
MAX_OPEN_STREAMS = 16       # streamed requests in progress per peer
STREAM_IDLE_SECONDS = 60.0  # a streamed request idle this long is dropped
HEARTBEAT_MS = 10_000
ZERO_COPY_BYTES = 1 << 16   # content this large is shared, not copied


class _InStream:
    """A streamed request collecting its content."""

    __slots__ = ("call", "tenant", "request", "chunks", "size", "started",
                 "touched", "error")

    def __init__(self, call, tenant, request, started):
        self.call = call
        self.tenant = tenant
        self.request = request
        self.chunks = []
        self.size = 0
        self.started = started
        self.touched = time.monotonic()
        self.error = None


class ZmqServer:
    """A ROUTER socket serving the call table on `endpoints`.

    With `curve`, a (public, secret) pair of Z85 keys, the socket is a CURVE
    server and tenants authenticate by their public keys; without, PLAIN.
    """

    def __init__(self, kernel, endpoints: list[str],
                 curve: tuple[bytes, bytes] | None = None):
        self.kernel = kernel
        self.curve = curve
        self.mechanism = b"CURVE" if curve else b"PLAIN"
        self.calls = kernel.calls
        self.endpoints = list(endpoints)
        self.chunk = kernel.config.chunk_bytes
        self.max_message = kernel.config.max_message_bytes
        self.max_stream = kernel.config.max_stream_bytes
        self.ctx = zmq.Context()
        self.sock = None
        self.zap = None
        self.loop = None
        self.pending: dict = {}     # (peer, rid) -> task
        self.streams: dict = {}     # (peer, rid) -> _InStream
        self.open_per_peer: dict = {}
        self._sweeper = None
        self.bound: list[str] = []

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.zap = self.ctx.socket(zmq.ROUTER)
        self.zap.linger = 0
        self.zap.bind(ZAP_ENDPOINT)

        sock = self.sock = self.ctx.socket(zmq.ROUTER)
        sock.linger = 0
        if self.curve:
            sock.curve_publickey, sock.curve_secretkey = self.curve
            sock.curve_server = True
        else:
            sock.plain_server = True
        sock.zap_domain = ZAP_DOMAIN
        sock.router_mandatory = True
        sock.sndhwm = 0    # replies are never dropped; see WIRE.md, limits
        sock.maxmsgsize = self.max_message + 4096
        sock.heartbeat_ivl = HEARTBEAT_MS
        sock.heartbeat_timeout = 3 * HEARTBEAT_MS
        for endpoint in self.endpoints:
            self.bound.append(self._bind(endpoint))

        self.loop.add_reader(self.zap.FD, self._zap_ready)
        self.loop.add_reader(sock.FD, self._ready)
        self._sweeper = self.loop.create_task(self._sweep())
        self._zap_ready()
        self._ready()

    def _bind(self, endpoint: str) -> str:
        if endpoint.startswith("ipc://"):
            path = endpoint[len("ipc://"):]
            folder = os.path.dirname(path)
            if folder:
                os.makedirs(folder, mode=0o700, exist_ok=True)
            if os.path.exists(path):
                os.unlink(path)    # a stale socket of a kernel that died
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as e:
            raise OSError(f"cannot bind ZeroMQ endpoint {endpoint}: {e}") from None
        bound = self.sock.last_endpoint.decode()
        log.info("zeromq listening on %s (%s)", bound, self.mechanism.decode())
        return bound

    async def stop(self) -> None:
        if self.sock is None:
            return
        self.loop.remove_reader(self.sock.FD)
        self.loop.remove_reader(self.zap.FD)
        if self._sweeper:
            self._sweeper.cancel()
        for task in list(self.pending.values()):
            task.cancel()
        self.pending.clear()
        self.streams.clear()
        for endpoint in self.bound:
            if endpoint.startswith("ipc://"):
                try:
                    os.unlink(endpoint[len("ipc://"):])
                except OSError:
                    pass
        self.sock.close(0)
        self.zap.close(0)
        self.ctx.term()
        self.sock = None

    # -- authentication (ZAP, RFC 27) -------------------------------------

    def _zap_ready(self) -> None:
        while True:
            try:
                msg = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._zap_reply(msg)

    def _zap_reply(self, msg: list) -> None:
        # [peer, b"", version, request id, domain, address, identity,
        #  mechanism, credentials...]
        peer, _, version, request_id = msg[:4]
        mechanism = msg[7] if len(msg) > 7 else b""
        try:
            tenant = self._zap_tenant(mechanism, msg[8:])
            status, text, user = b"200", b"OK", tenant.name.encode()
        except NubisError as e:
            log.info("zeromq: refused a %s handshake from %s: %s",
                     mechanism.decode(errors="replace") or "NULL",
                     msg[5].decode(errors="replace"), e.message)
            status, text, user = b"400", e.message.encode(), b""
        self.zap.send_multipart([peer, b"", b"1.0", request_id, status, text,
                                 user, b""])

    def _zap_tenant(self, mechanism: bytes, credentials: list):
        """The tenant a handshake's credentials name; raises Unauthenticated."""
        if mechanism != self.mechanism:
            raise Unauthenticated(f"use the {self.mechanism.decode()} mechanism "
                                  "on this endpoint")
        if mechanism == b"CURVE":
            if len(credentials) != 1 or len(credentials[0]) != 32:
                raise Unauthenticated("malformed CURVE credentials")
            return self.kernel.authenticate_curve(credentials[0])
        if len(credentials) != 2:
            raise Unauthenticated("malformed PLAIN credentials")
        try:
            token = credentials[1].decode()
        except UnicodeDecodeError:
            raise Unauthenticated("invalid token") from None
        return self.kernel.authenticate(token)

    # -- the reader --------------------------------------------------------

    def _ready(self) -> None:
        sock = self.sock
        if sock is None:
            return
        recv, events = sock.recv, sock.getsockopt
        for _ in range(DRAIN_BATCH):
            # Checking EVENTS is cheaper than letting recv raise zmq.Again.
            if not events(zmq.EVENTS) & zmq.POLLIN:
                return
            # The routing-id frame is received as a Frame for its User-Id
            # property; header and request as bytes; content zero-copy.
            first = recv(zmq.NOBLOCK, copy=False)
            frames = [first.bytes]
            while events(zmq.RCVMORE):
                frames.append(recv(zmq.NOBLOCK, copy=len(frames) < 3))
            try:
                self._on_message(frames, first.get("User-Id"))
            except Exception:
                log.exception("zeromq: unexpected error on a message")
        self.loop.call_soon(self._ready)

    def _kick(self) -> None:
        """After a send outside the reader: read what its edge announced."""
        if self.sock is not None and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self.loop.call_soon(self._ready)

    def _on_message(self, frames: list, user: str) -> None:
        peer = frames[0]
        if len(frames) < 2:
            return self._fail(peer, 0, InvalidArgument("message has no header frame"))
        try:
            version, kind, code, rid = decode_header(frames[1])
        except ValueError as e:
            return self._fail(peer, 0, InvalidArgument(f"malformed header: {e}"))
        if version != VERSION:
            return self._fail(peer, rid, FailedPrecondition(
                f"wire version {version} is not supported; this kernel "
                f"speaks version {VERSION}"))

        if kind == REQUEST or kind == OPEN:
            self._request(peer, rid, code, frames, user, kind == OPEN)
        elif kind == DATA:
            self._stream_data(peer, rid, frames)
        elif kind == END:
            self._stream_end(peer, rid)
        elif kind == CANCEL:
            self._cancel(peer, rid)
        elif kind == PING:
            self._send([peer, encode_header(PONG, 0, rid), *frames[2:]])
        else:
            self._fail(peer, rid, InvalidArgument(f"unknown frame kind {kind}"))

    # -- requests ----------------------------------------------------------

    def _request(self, peer, rid, call_id, frames, user, streamed) -> None:
        started = time.perf_counter_ns()
        tenant = self.kernel.tenants.by_name.get(user)
        if tenant is None:
            return self._fail(peer, rid, Unauthenticated(
                "the tenant of this connection no longer exists"))
        try:
            call, request, size = parse_request(self.calls, call_id, frames,
                                                streamed)
        except NubisError as e:
            # Accounted to its call, unless the call id is unknown.
            return self._fail(peer, rid, e, self.calls.get(call_id), tenant,
                              started)
        if streamed:
            return self._stream_open(peer, rid, call, tenant, request, frames,
                                     started)
        body = None
        if call.method.content_in:
            body = _join([request.data, *map(memoryview, frames[3:])])
        self._invoke(peer, rid, call, tenant, request, body, started, size)

    def _invoke(self, peer, rid, call, tenant, request, body, started, size):
        try:
            result = self.kernel.invoke(call, tenant, request, body)
        except NubisError as e:
            return self._fail(peer, rid, e, call, tenant, started, size)
        except Exception:
            log.exception("zeromq: %s failed", call.key)
            return self._fail(peer, rid, Internal(f"{call.key} failed; see the "
                                                  "kernel log"), call, tenant,
                              started, size)
        if isinstance(result, _Message) or type(result) is tuple:
            self._reply(peer, rid, call, tenant, result, started, size)
        elif call.method.events:
            self._park(peer, rid, self._pump(peer, rid, call, tenant, result,
                                             started, size))
        else:
            self._park(peer, rid, self._await(peer, rid, call, tenant, result,
                                              started, size))

    def _park(self, peer, rid, coro) -> None:
        task = self.loop.create_task(coro)
        key = (peer, rid)
        self.pending[key] = task
        task.add_done_callback(partial(self._unpark, key))

    def _unpark(self, key, task) -> None:
        if self.pending.get(key) is task:
            del self.pending[key]

    async def _await(self, peer, rid, call, tenant, awaitable, started, size):
        try:
            result = await awaitable
        except asyncio.CancelledError:
            self.kernel.finish(call, tenant, started, None, size, 0)
            raise
        except NubisError as e:
            return self._fail(peer, rid, e, call, tenant, started, size, True)
        except Exception:
            log.exception("zeromq: %s failed", call.key)
            return self._fail(peer, rid, Internal(f"{call.key} failed; see the "
                                                  "kernel log"), call, tenant,
                              started, size, True)
        self._reply(peer, rid, call, tenant, result, started, size)
        self._kick()

    def _reply(self, peer, rid, call, tenant, result, started, size) -> None:
        """Account a call's reply, then send it.

        The service time ends when the reply is ready for the transport:
        the send itself (libzmq and its I/O thread) is transport time.
        """
        if type(result) is tuple:
            response, content = result
            out = response.SerializeToString()
            self.kernel.finish(call, tenant, started, None, size,
                               len(out) + len(content))
            self._send_content(peer, rid, out, content)
        else:
            frames = reply_frames(peer, rid, result)
            self.kernel.finish(call, tenant, started, None, size, len(frames[2]))
            self._send(frames)

    async def _pump(self, peer, rid, call, tenant, events, started, size):
        """Send an events call's responses as DATA messages, then END."""
        self._send([peer, encode_header(REPLY_OPEN, 0, rid)])
        sent, error = 0, None
        try:
            async for event in events:
                out = event.SerializeToString()
                if not self._send([peer, encode_header(DATA, 0, rid), out]):
                    break    # the peer is gone
                self._kick()
                sent += len(out)
        except NubisError as e:
            error = e
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("zeromq: %s stream failed", call.key)
            error = Internal(f"{call.key} failed; see the kernel log")
        finally:
            # A peer gone mid-stream: the handler's iterator may hold a
            # listener or a lease, so close it now rather than at collection.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
            code = error.code if error else 0
            self._send([peer, encode_header(END, code, rid),
                        error.message.encode() if error else b""])
            self._kick()
            self.kernel.finish(call, tenant, started, error, size, sent)

    def _send_content(self, peer, rid, out: bytes, content) -> None:
        """Send a reply with content: inline if small, else streamed."""
        if len(content) <= self.chunk:
            self._send([peer, encode_header(REPLY, 0, rid), out, content],
                       len(content) < ZERO_COPY_BYTES)
            return
        self._send([peer, encode_header(REPLY_OPEN, 0, rid), out])
        view = memoryview(content)
        data = encode_header(DATA, 0, rid)
        for at in range(0, len(view), self.chunk):
            self._send([peer, data, view[at:at + self.chunk]], False)
        self._send([peer, encode_header(END, 0, rid), b""])

    # -- streamed requests -------------------------------------------------

    def _stream_open(self, peer, rid, call, tenant, request, frames, started):
        key = (peer, rid)
        if key in self.streams:
            return self._fail(peer, rid, FailedPrecondition(
                f"request id {rid} already has an open stream"))
        if self.open_per_peer.get(peer, 0) >= MAX_OPEN_STREAMS:
            return self._fail(peer, rid, ResourceExhausted(
                f"more than {MAX_OPEN_STREAMS} streamed requests open on one "
                "connection"), call, tenant, started)
        stream = self.streams[key] = _InStream(call, tenant, request, started)
        self.open_per_peer[peer] = self.open_per_peer.get(peer, 0) + 1
        self._stream_add(stream, [request.data, *map(memoryview, frames[3:])])

    def _stream_add(self, stream, chunks) -> None:
        stream.touched = time.monotonic()
        if stream.error is not None:
            return
        for chunk in chunks:
            stream.size += len(chunk)
            if chunk:
                stream.chunks.append(bytes(chunk))
        limit = min(self.max_stream, stream.tenant.quotas.max_blob_bytes)
        if stream.size > limit:
            stream.chunks.clear()
            stream.error = ResourceExhausted(
                f"{stream.call.key}: content is over {stream.size} bytes, above "
                f"the limit of {limit}")

    def _stream_data(self, peer, rid, frames) -> None:
        stream = self.streams.get((peer, rid))
        if stream is None:
            return self._fail(peer, rid, FailedPrecondition(
                f"request id {rid} has no open stream"))
        self._stream_add(stream, list(map(memoryview, frames[2:])))

    def _stream_end(self, peer, rid) -> None:
        stream = self._stream_close((peer, rid))
        if stream is None:
            return self._fail(peer, rid, FailedPrecondition(
                f"request id {rid} has no open stream"))
        if stream.error is not None:
            return self._fail(peer, rid, stream.error, stream.call, stream.tenant,
                              stream.started, stream.size)
        body = _join(stream.chunks)
        self._invoke(peer, rid, stream.call, stream.tenant, stream.request, body,
                     stream.started, stream.size)

    def _stream_close(self, key):
        stream = self.streams.pop(key, None)
        if stream is not None:
            peer = key[0]
            left = self.open_per_peer.get(peer, 1) - 1
            if left:
                self.open_per_peer[peer] = left
            else:
                self.open_per_peer.pop(peer, None)
        return stream

    def _cancel(self, peer, rid) -> None:
        key = (peer, rid)
        self._stream_close(key)
        task = self.pending.pop(key, None)
        if task is not None:
            task.cancel()

    async def _sweep(self) -> None:
        """Drop streamed requests whose clients went quiet."""
        while True:
            await asyncio.sleep(STREAM_IDLE_SECONDS / 4)
            cutoff = time.monotonic() - STREAM_IDLE_SECONDS
            for key in [k for k, s in self.streams.items() if s.touched < cutoff]:
                log.info("zeromq: dropped idle streamed request %d", key[1])
                self._stream_close(key)

    # -- sending -----------------------------------------------------------

    def _send(self, frames: list, copy: bool = True) -> bool:
        """Send one message; False if its peer has gone away.

        Large content frames go with copy=False, shared with the store
        rather than copied; small ones are cheaper to copy.
        """
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK, copy=copy)
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:
                log.warning("zeromq: cannot send a reply: %s", e)
            return False
        except AttributeError:
            return False    # the server has stopped
        return True

    def _fail(self, peer, rid, error: NubisError, call=None, tenant=None,
              started=0, size=0, outside_reader=False) -> None:
        if call is not None:
            self.kernel.finish(call, tenant, started, error, size, 0)
        self._send([peer, encode_header(REPLY, int(error.code), rid),
                    error.message.encode()])
        if outside_reader:
            self._kick()


def _join(chunks):
    """One bytes object from content chunks, copying only when there are many."""
    chunks = [c for c in chunks if len(c)]
    if not chunks:
        return b""
    if len(chunks) == 1:
        return bytes(chunks[0])
    return b"".join(chunks)
