"""The gRPC transport: the call table served over grpc.aio (the ABI: proto/).

Theory of operation. The server is built from `kernel.calls` alone: one
generic handler per service, one method handler per call, chosen by the
call's shape in the ABI. No generated servicer code is used, so a call in
the table is served here by construction. Handlers are coroutines on the
kernel's loop; none blocks it.

- Requests arrive as raw bytes (no deserializer) and replies leave as bytes
  (no serializer): the transport parses and serializes itself, which gives
  exact byte counts for accounting and a clear INVALID_ARGUMENT for a
  request that does not parse.
- With TLS files (nubis.security.TlsFiles) the port is served over TLS,
  mutual TLS when a client CA is given; bearer tokens apply either way.
- Every call checks its bearer token first, before reading any content.
  Nothing is cached: the kernel looks each token up by its digest.
- A content_in call (PutBlob) reads the request, then the `data` of every
  message, bounded by the stream limit and the tenant's blob quota; a size
  declared in the request is checked against what arrived, so a stream cut
  short (grpc ends a stream quietly at a message over its size limit) is
  not stored as if whole.
- A content_out call (GetBlob) sends the response with the first chunk of
  content, then messages holding only `data`. Those are encoded by hand
  from slices of the content's memoryview: one copy per chunk, no message.
- Each call reports to `kernel.finish` exactly once, when it ends, however
  it ends. A NubisError becomes its status code; anything else is logged
  and answered INTERNAL, and the server goes on serving.
- Health (grpc.health.v1) and reflection need no token. Health says SERVING
  for "" and each nubis service while the server runs, NOT_SERVING once it
  stops.
"""

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from functools import partial

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nubis import abi
from nubis.errors import (
    Internal,
    InvalidArgument,
    NubisError,
    ResourceExhausted,
    Unauthenticated,
)

log = logging.getLogger("nubis.grpc")

# Room above max_message_bytes for a message's own fields (key, metadata).
HEADROOM_BYTES = 16 << 10
STOP_GRACE_SECONDS = 2.0
# Calls in progress at once; gRPC answers RESOURCE_EXHAUSTED beyond, so a
# flood of parked calls (long polls, streams) cannot exhaust the kernel.
MAX_CONCURRENT_RPCS = 10_000
STATUS = {code.value[0]: code for code in grpc.StatusCode}


class _Ledger:
    """One call's accounting, reported to the kernel when the call ends."""

    __slots__ = ("tenant", "started", "error", "bytes_in", "bytes_out")

    def __init__(self, bytes_in: int):
        self.tenant = None
        self.started = time.perf_counter_ns()
        self.error = None
        self.bytes_in = bytes_in
        self.bytes_out = 0


class GrpcServer:
    """The kernel's call table on a grpc.aio server at `address`."""

    def __init__(self, kernel, address: str, tls=None):
        self.kernel = kernel
        self.address = address
        self.tls = tls      # nubis.security.TlsFiles, or None for plaintext
        self.chunk = kernel.config.chunk_bytes
        self.max_stream = kernel.config.max_stream_bytes
        self.max_message = kernel.config.max_message_bytes + HEADROOM_BYTES
        self.server = None
        self.health = None
        self.bound = ""

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        server = grpc.aio.server(
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS, options=[
            ("grpc.max_receive_message_length", self.max_message),
            ("grpc.max_send_message_length", self.max_message),
            # Two kernels must not share a port by accident.
            ("grpc.so_reuseport", 0),
        ])
        server.add_generic_rpc_handlers(self._services())
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*abi.SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME),
            server)
        self.bound = self._bind(server)
        await server.start()
        self.server = server

        for service in ("", *abi.SERVICE_NAMES):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc listening on %s (%s)", self.bound,
                 "plaintext" if self.tls is None else
                 "mutual TLS" if self.tls.client_ca else "TLS")

    def _bind(self, server) -> str:
        try:
            if self.tls is None:
                port = server.add_insecure_port(self.address)
            else:
                port = server.add_secure_port(self.address, self._credentials())
        except RuntimeError as e:
            raise OSError(f"cannot bind gRPC address {self.address}: {e}") from None
        if not port:
            raise OSError(f"cannot bind gRPC address {self.address}")
        return f"{self.address.rpartition(':')[0]}:{port}"

    def _credentials(self) -> grpc.ServerCredentials:
        """TLS; with a client CA, clients must present a certificate it signed."""
        tls = self.tls
        return grpc.ssl_server_credentials(
            [(tls.key, tls.cert)], root_certificates=tls.client_ca,
            require_client_auth=tls.client_ca is not None)

    async def stop(self) -> None:
        if self.server is None:
            return
        await self.health.enter_graceful_shutdown()
        await self.server.stop(STOP_GRACE_SECONDS)
        self.server = None

    # -- the handler table -------------------------------------------------

    def _services(self) -> tuple:
        """One generic handler per service of the call table."""
        services: dict[str, dict] = {}
        for call in self.kernel.calls.values():
            service = call.method.path.split("/")[1]
            handler = self._method_handler(call)
            services.setdefault(service, {})[call.method.name] = handler
        return tuple(grpc.method_handlers_generic_handler(name, handlers)
                     for name, handlers in sorted(services.items()))

    def _method_handler(self, call) -> grpc.RpcMethodHandler:
        m = call.method
        if not m.client_streaming and not m.server_streaming:
            return grpc.unary_unary_rpc_method_handler(partial(self._unary, call))
        if m.client_streaming and not m.server_streaming and m.content_in:
            return grpc.stream_unary_rpc_method_handler(partial(self._put, call))
        if not m.client_streaming and m.content_out:
            return grpc.unary_stream_rpc_method_handler(
                partial(self._content_out, call))
        if not m.client_streaming and m.events:
            return grpc.unary_stream_rpc_method_handler(partial(self._events, call))
        raise RuntimeError(f"{m.path}: the gRPC transport cannot serve a call "
                           "of this shape")

    # -- one call ----------------------------------------------------------

    @contextlib.contextmanager
    def _accounted(self, call, bytes_in: int = 0):
        """Run a call's work; its error lands in the ledger, then finish."""
        ledger = _Ledger(bytes_in)
        try:
            yield ledger
        except NubisError as e:
            ledger.error = e
        except Exception:
            log.exception("grpc: %s failed", call.key)
            ledger.error = Internal(f"{call.key} failed; see the kernel log")
        finally:
            self.kernel.finish(call, ledger.tenant, ledger.started, ledger.error,
                               ledger.bytes_in, ledger.bytes_out)

    def _tenant(self, context):
        try:
            return self.kernel.authenticate(_bearer(context.invocation_metadata()))
        except Unauthenticated as e:
            log.info("grpc: refused a call from %s: %s", context.peer(), e.message)
            raise

    async def _unary(self, call, raw: bytes, context) -> bytes:
        with self._accounted(call, len(raw)) as ledger:
            ledger.tenant = self._tenant(context)
            request = _parse(call, raw)
            body = request.data if call.method.content_in else None
            response = await _settled(
                self.kernel.invoke(call, ledger.tenant, request, body))

            out = response.SerializeToString()
            ledger.bytes_out = len(out)
            return out
        await _abort(context, ledger.error)

    async def _put(self, call, requests, context) -> bytes:
        with self._accounted(call) as ledger:
            ledger.tenant = self._tenant(context)
            request, body = await self._receive_content(call, requests, ledger)
            response = await _settled(
                self.kernel.invoke(call, ledger.tenant, request, body))

            out = response.SerializeToString()
            ledger.bytes_out = len(out)
            return out
        await _abort(context, ledger.error)

    async def _receive_content(self, call, requests, ledger):
        """The first request message and the content of the whole stream."""
        limit = min(self.max_stream, ledger.tenant.quotas.max_blob_bytes)
        request, chunks, size = None, [], 0
        async for raw in requests:
            ledger.bytes_in += len(raw)
            message = _parse(call, raw)
            if request is None:
                request = message
                _check_size(call, request.size, limit)
            data = message.data
            size += len(data)
            _check_size(call, size, limit)
            if data:
                chunks.append(data)

        # A message over grpc's size limit ends the stream as if the client
        # had closed it, and grpc cancels the call a moment later. The
        # declared size, checked by the handler, catches the cut; for a
        # stream that declared none, a turn of the loop lets the cancel land
        # before anything is stored.
        await asyncio.sleep(0)
        if request is None:
            raise InvalidArgument(f"{call.key}: the stream ended before its "
                                  "request message")
        return request, chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _content_out(self, call, raw: bytes, context):
        with self._accounted(call, len(raw)) as ledger:
            ledger.tenant = self._tenant(context)
            request = _parse(call, raw)
            response, content = await _settled(
                self.kernel.invoke(call, ledger.tenant, request, None))

            view, tag = memoryview(content), _data_tag(call.method.response)
            out = response.SerializeToString()
            if view.nbytes:
                out += _field(tag, view[:self.chunk])
            ledger.bytes_out = len(out)
            yield out
            for at in range(self.chunk, view.nbytes, self.chunk):
                out = _field(tag, view[at:at + self.chunk])
                ledger.bytes_out += len(out)
                yield out
        if ledger.error is not None:
            await _abort(context, ledger.error)

    async def _events(self, call, raw: bytes, context):
        with self._accounted(call, len(raw)) as ledger:
            ledger.tenant = self._tenant(context)
            request = _parse(call, raw)
            events = self.kernel.invoke(call, ledger.tenant, request, None)

            try:
                async for event in events:
                    out = event.SerializeToString()
                    ledger.bytes_out += len(out)
                    yield out
            finally:
                # The handler's iterator may hold a listener or a lease.
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
        if ledger.error is not None:
            await _abort(context, ledger.error)


def _bearer(metadata) -> str:
    """The token of an `authorization: Bearer <token>` metadata entry."""
    values = [v for k, v in metadata or () if k == "authorization"]
    if not values:
        raise Unauthenticated("missing authorization metadata; send "
                              "'authorization: Bearer <token>'")
    if len(values) > 1:
        raise Unauthenticated("more than one authorization metadata entry")
    scheme, _, token = str(values[0]).partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("malformed authorization metadata; expected "
                              "'Bearer <token>'")
    return token


def _parse(call, raw: bytes):
    cls = call.method.request
    try:
        return cls.FromString(raw)
    except DecodeError as e:
        raise InvalidArgument(f"{call.key}: request is not a valid "
                              f"{cls.__name__}: {e}") from None


def _check_size(call, size: int, limit: int) -> None:
    if size > limit:
        raise ResourceExhausted(f"{call.key}: content of {size} bytes is over "
                                f"the limit of {limit}")


async def _settled(result):
    """A handler's reply, awaited if the handler had to wait for it."""
    if inspect.isawaitable(result):
        return await result
    return result


async def _abort(context, error: NubisError) -> None:
    status = STATUS.get(int(error.code), grpc.StatusCode.UNKNOWN)
    await context.abort(status, error.message)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@functools.cache
def _data_tag(message_class) -> bytes:
    """The wire tag of a message's `data` field (length-delimited)."""
    number = message_class.DESCRIPTOR.fields_by_name["data"].number
    return _varint(number << 3 | 2)


def _field(tag: bytes, chunk: memoryview) -> bytes:
    """A message holding only `data`: the chunk is copied once, here."""
    return b"".join((tag, _varint(chunk.nbytes), chunk))
