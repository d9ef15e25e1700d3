"""The worker channel: frames between the kernel and one worker process.

A frame is two big-endian u32 lengths, then a JSON header object, then a
payload of raw bytes (arguments or a result). The worker side is blocking
(a worker does one thing at a time); the kernel side reads with asyncio and
treats every frame as untrusted, since tenant code shares the worker's
process and may write anything to the channel.
"""

import json
import socket
import struct

_LENGTHS = struct.Struct(">II")
MAX_HEADER = 1 << 20


class ChannelError(Exception):
    """The peer sent something that is not a frame."""


def encode(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return _LENGTHS.pack(len(head), len(payload)) + head + payload


def _decode_header(raw: bytes) -> dict:
    try:
        header = json.loads(raw)
    except ValueError:
        raise ChannelError("frame header is not JSON") from None
    if not isinstance(header, dict):
        raise ChannelError("frame header is not an object")
    return header


async def read(reader, max_payload: int) -> tuple[dict, bytes] | None:
    """The next frame from an asyncio reader; None at end of stream."""
    try:
        lengths = await reader.readexactly(_LENGTHS.size)
    except EOFError:
        return None
    head_len, body_len = _LENGTHS.unpack(lengths)
    if head_len > MAX_HEADER or body_len > max_payload:
        raise ChannelError(f"frame of {head_len}+{body_len} bytes is too big")
    try:
        head = await reader.readexactly(head_len)
        body = await reader.readexactly(body_len)
    except EOFError:
        return None
    return _decode_header(head), body


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket) -> tuple[dict, bytes] | None:
    """The next frame from a blocking socket; None at end of stream."""
    lengths = _recv_exactly(sock, _LENGTHS.size)
    if lengths is None:
        return None
    head_len, body_len = _LENGTHS.unpack(lengths)
    head = _recv_exactly(sock, head_len)
    body = _recv_exactly(sock, body_len) if head is not None else None
    if body is None:
        return None
    return _decode_header(head), body


def send(sock: socket.socket, header: dict, payload: bytes = b"") -> None:
    sock.sendall(encode(header, payload))
