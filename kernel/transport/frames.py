"""The ZeroMQ wire's frame header, encoded and decoded (see proto/WIRE.md).

Every message of the wire starts with a 12-byte header frame: version (u8),
kind (u8), code (u16: the call id of a request, the status of a reply or an
end) and request id (u64), all big-endian. This module is the pure-Python
twin of the compiled `ext/frames.pyx`; both raise ValueError on a header
that is not exactly 12 bytes.
"""

import struct

VERSION = 1
HEADER = struct.Struct("!BBHQ")
HEADER_SIZE = HEADER.size

# Client to kernel.
REQUEST = 1      # a whole request: header, request message, content frames
OPEN = 2         # a request whose content follows in DATA messages
DATA = 3         # a chunk of content (or, for events calls, one event)
END = 4          # the end of a stream; from the kernel it carries a status
CANCEL = 5       # abandon a request: stop its stream or long poll
PING = 6         # liveness; answered with PONG and the same payload
# Kernel to client.
REPLY = 16       # a whole reply: header, response message, content frames
REPLY_OPEN = 17  # a reply whose content or events follow in DATA messages
PONG = 18

KINDS = frozenset((REQUEST, OPEN, DATA, END, CANCEL, PING,
                   REPLY, REPLY_OPEN, PONG))

_pack = HEADER.pack
_unpack = HEADER.unpack


def encode_header(kind: int, code: int, request_id: int) -> bytes:
    return _pack(VERSION, kind, code, request_id)


def decode_header(frame: bytes) -> tuple[int, int, int, int]:
    """(version, kind, code, request id) of a header frame."""
    if len(frame) != HEADER_SIZE:
        raise ValueError(f"header frame is {len(frame)} bytes, not {HEADER_SIZE}")
    return _unpack(frame)


# The compiled twin takes over where it is built, unless NUBIS_PURE=1; the
# pure functions stay reachable under these names for tests and benchmarks.
from nubis import _hot  # noqa: E402 - the twin is picked once all is defined

pure_encode_header, pure_decode_header = encode_header, decode_header
_ext = _hot.compiled("frames")
if _ext is not None:
    encode_header = _ext.encode_header
    decode_header = _ext.decode_header
