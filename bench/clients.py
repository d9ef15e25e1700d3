"""Connections to every system the suite measures, blocking and asyncio.

The kernel is reached through the public client library only. The floor
clients are as bare as their servers: a DEALER that sends the two frames of
a Nubis call (header and body) and reads the echo, and a grpcio channel
whose unary method takes and returns bytes.
"""

import asyncio
import itertools
import struct

import zmq

# The 12-byte header frame of proto/WIRE.md: version, kind, code, request id.
HEADER = struct.Struct("!BBHQ")
MAX_MESSAGE = 16 << 20
GRPC_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE)]
PENDING_BYTES = 256 << 20
COPY_BELOW = 65536    # as the Nubis client: larger bodies go zero-copy


def _dealer(endpoint: str):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.sndhwm = 0
    sock.maxmsgsize = MAX_MESSAGE
    sock.connect(endpoint)
    return sock


class ZmqEcho:
    """A blocking client of the pyzmq echo: one call at a time."""

    def __init__(self, endpoint: str):
        self.sock = _dealer(endpoint)
        self._ids = itertools.count(1)
        self._pack = HEADER.pack

    def echo(self, body: bytes) -> list:
        self.sock.send_multipart([self._pack(1, 1, 0, next(self._ids)), body],
                                 copy=len(body) < COPY_BELOW)
        return self.sock.recv_multipart()

    def close(self) -> None:
        self.sock.close(0)


class AsyncZmqEcho:
    """An asyncio client of the pyzmq echo: calls matched by request id."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.sock = None
        self.loop = None
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future] = {}

    async def open(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = _dealer(self.endpoint)
        self.loop.add_reader(self.sock.FD, self._ready)
        await asyncio.wait_for(self.echo(b""), 5)

    async def echo(self, body: bytes):
        rid = next(self._ids)
        fut = self._calls[rid] = self.loop.create_future()
        self.sock.send_multipart([HEADER.pack(1, 1, 0, rid), body], zmq.NOBLOCK,
                                 copy=len(body) < COPY_BELOW)
        # The FD is edge-triggered: a reply that came in during the send
        # would not wake the reader.
        if self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self.loop.call_soon(self._ready)
        return await fut

    def _ready(self) -> None:
        while self.sock is not None:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            rid = HEADER.unpack(frames[0])[3]
            fut = self._calls.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(frames)

    async def close(self) -> None:
        if self.sock is not None:
            self.loop.remove_reader(self.sock.FD)
            self.sock.close(0)
            self.sock = None


def connect(system: str, target: dict):
    """A blocking connection to `system` at `target` (see the runner)."""
    if system == "nubis":
        from nubis.client import Client

        return Client(target["url"], target["token"])
    if system == "pyzmq":
        return ZmqEcho(target["endpoint"])
    if system == "grpcio":
        import grpc

        return grpc.insecure_channel(target["address"], options=GRPC_OPTIONS)
    if system == "redis":
        import redis

        return redis.Redis(host=target["host"], port=target["port"])
    raise ValueError(f"system {system!r} has no blocking client")


async def connect_async(system: str, target: dict):
    """An asyncio connection to `system` at `target`."""
    if system == "nubis":
        from nubis.client import AsyncClient

        return await AsyncClient.connect(target["url"], target["token"])
    if system == "pyzmq":
        conn = AsyncZmqEcho(target["endpoint"])
        await conn.open()
        return conn
    if system == "grpcio":
        import grpc

        channel = grpc.aio.insecure_channel(target["address"],
                                            options=GRPC_OPTIONS)
        await asyncio.wait_for(channel.channel_ready(), 5)
        return channel
    if system == "nats":
        import nats

        # Room to publish a refill of large messages before it is flushed.
        nc = await nats.connect(target["url"], allow_reconnect=False,
                                pending_size=PENDING_BYTES)
        return nc, target["subject"]
    raise ValueError(f"system {system!r} has no asyncio client")


def close(conn) -> None:
    conn.close()


async def close_async(conn) -> None:
    if isinstance(conn, tuple):
        await conn[0].close()
    else:
        await conn.close()
