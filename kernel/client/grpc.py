"""The client side of the gRPC transport, sync and asyncio.

A connection makes cloud calls by the method rows of the ABI (`nubis.abi`):
each row's path and message classes are all a call needs, so no generated
stub code is used. The bearer token rides in the metadata of every call;
with channel credentials (grpcs://, see nubis.client.keys) the channel is
TLS, and the token still applies.

Bulk content travels in the `data` field of the stream's messages: a put
sends the request, with the first chunk of content if its own `data` is
empty, then one message per further chunk, and declares the total `size`
so the kernel can tell a stream cut short from a whole one; a get gathers
the `data` of every response and returns the first response with its
`data` cleared beside the content. A failed call raises the NubisError
subclass of its status code.
"""

import grpc

from nubis import abi
from nubis.errors import Code, InvalidArgument, NubisError, Unknown, error_for

# Room above max_message_bytes for a message's own fields (key, metadata).
HEADROOM_BYTES = 16 << 10


class _Base:
    def __init__(self, target: str, token: str, max_message_bytes: int,
                 chunk_bytes: int):
        self.target = target.removeprefix("grpc://")
        self.chunk = chunk_bytes
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.options = [
            ("grpc.max_receive_message_length", max_message_bytes + HEADROOM_BYTES),
            ("grpc.max_send_message_length", max_message_bytes + HEADROOM_BYTES),
        ]
        self.channel = None
        self._callables: dict[str, object] = {}

    def _callable(self, method: abi.Method):
        """The channel's multi-callable for a method, made once."""
        stub = self._callables.get(method.path)
        if stub is not None:
            return stub
        if method.client_streaming and method.server_streaming:
            raise InvalidArgument(f"{method.key}: bidirectional calls are not "
                                  "supported")
        if method.client_streaming:
            make = self.channel.stream_unary
        elif method.server_streaming:
            make = self.channel.unary_stream
        else:
            make = self.channel.unary_unary
        stub = self._callables[method.path] = make(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        return stub

    def _error(self, method: abi.Method, e: grpc.RpcError) -> NubisError:
        """The NubisError of a failed call, with a message a person can act on."""
        code = e.code() if callable(getattr(e, "code", None)) else None
        details = (e.details() if callable(getattr(e, "details", None))
                   else None) or str(e)
        number = code.value[0] if code is not None else int(Code.UNKNOWN)
        if number == Code.UNAVAILABLE:
            details = f"cannot reach the kernel at {self.target}: {details}"
        elif number == Code.DEADLINE_EXCEEDED:
            details = f"{method.key}: no reply within the deadline ({details})"
        return error_for(number, details)


def _check(method: abi.Method, content, events: bool) -> None:
    if method.events != events:
        use = "events()" if method.events else "call()"
        raise InvalidArgument(f"{method.key}: use {use} for this call")
    if content is not None and not method.content_in:
        raise InvalidArgument(f"{method.key} takes no content")


def put_messages(method: abi.Method, request, content, chunk: int):
    """The request stream of a content_in call: request, then data chunks."""
    first = method.request()
    first.CopyFrom(request)
    if content is None or not len(content):
        yield first
        return
    view = memoryview(content)
    if not first.size:
        first.size = len(first.data) + view.nbytes
    start = 0
    if not first.data:
        first.data = bytes(view[:chunk])
        start = chunk
    yield first
    for at in range(start, view.nbytes, chunk):
        yield method.request(data=bytes(view[at:at + chunk]))


def _assembled(first, chunks: list) -> tuple:
    """The first response of a content_out stream, without data, and the content."""
    first.ClearField("data")
    return first, chunks[0] if len(chunks) == 1 else b"".join(chunks)


class GrpcConnection(_Base):
    """A blocking connection to a kernel's gRPC endpoint ("host:port")."""

    def __init__(self, target: str, token: str, *, max_message_bytes=8 << 20,
                 chunk_bytes=1 << 20, credentials=None):
        super().__init__(target, token, max_message_bytes, chunk_bytes)
        if credentials is None:
            self.channel = grpc.insecure_channel(self.target, options=self.options)
        else:
            self.channel = grpc.secure_channel(self.target, credentials,
                                               options=self.options)

    def call(self, method: abi.Method, request, content: bytes | None = None,
             timeout: float | None = None) -> tuple:
        """Make one cloud call: (response, content or None)."""
        _check(method, content, events=False)
        stub = self._callable(method)
        try:
            if method.client_streaming:
                messages = put_messages(method, request, content, self.chunk)
                return stub(messages, timeout=timeout, metadata=self.metadata), None
            if method.content_out:
                return self._gather(method, stub(request, timeout=timeout,
                                                 metadata=self.metadata))
            return stub(request, timeout=timeout, metadata=self.metadata), None
        except grpc.RpcError as e:
            raise self._error(method, e) from None

    def _gather(self, method: abi.Method, stream) -> tuple:
        first, chunks = None, []
        for response in stream:
            if first is None:
                first = response
            data = response.data
            if data:
                chunks.append(data)
        if first is None:
            raise Unknown(f"{method.key}: the reply stream was empty")
        return _assembled(first, chunks)

    def events(self, method: abi.Method, request, timeout: float | None = None):
        """Yield the responses of an events call until its stream ends."""
        _check(method, None, events=True)
        stream = self._callable(method)(request, timeout=timeout,
                                        metadata=self.metadata)
        try:
            yield from stream
        except grpc.RpcError as e:
            raise self._error(method, e) from None
        finally:
            stream.cancel()

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncGrpcConnection(_Base):
    """An asyncio connection; any number of calls may be in flight at once."""

    def __init__(self, target: str, token: str, *, max_message_bytes=8 << 20,
                 chunk_bytes=1 << 20, credentials=None):
        super().__init__(target, token, max_message_bytes, chunk_bytes)
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(self.target, options=self.options)
        else:
            self.channel = grpc.aio.secure_channel(
                self.target, credentials, options=self.options)

    async def call(self, method: abi.Method, request,
                   content: bytes | None = None,
                   timeout: float | None = None) -> tuple:
        """Make one cloud call: (response, content or None)."""
        _check(method, content, events=False)
        stub = self._callable(method)
        try:
            if method.client_streaming:
                messages = put_messages(method, request, content, self.chunk)
                response = await stub(messages, timeout=timeout,
                                      metadata=self.metadata)
                return response, None
            if method.content_out:
                return await self._gather(method, stub(request, timeout=timeout,
                                                       metadata=self.metadata))
            return await stub(request, timeout=timeout,
                              metadata=self.metadata), None
        except grpc.RpcError as e:
            raise self._error(method, e) from None

    async def _gather(self, method: abi.Method, stream) -> tuple:
        first, chunks = None, []
        async for response in stream:
            if first is None:
                first = response
            data = response.data
            if data:
                chunks.append(data)
        if first is None:
            raise Unknown(f"{method.key}: the reply stream was empty")
        return _assembled(first, chunks)

    async def events(self, method: abi.Method, request,
                     timeout: float | None = None):
        """Async-iterate the responses of an events call until its stream ends."""
        _check(method, None, events=True)
        stream = self._callable(method)(request, timeout=timeout,
                                        metadata=self.metadata)
        try:
            async for response in stream:
                yield response
        except grpc.RpcError as e:
            raise self._error(method, e) from None
        finally:
            stream.cancel()

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
