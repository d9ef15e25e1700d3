"""The journal's file format: framed, checksummed records of plain values.

A segment file starts with MAGIC, then holds records back to back. A record
is a little-endian u32 payload length, a u32 CRC-32 of the payload, and the
payload: a pickle (protocol 5) of a tuple of plain values (bytes, str, int,
float, bool, None, and lists, tuples and dicts of them). Records are read
back with an unpickler that refuses every class, so a damaged or hostile
file can make a record fail to load, never run code.

`scan` walks a segment and stops at the first record that is torn (shorter
than its header says), fails its checksum or does not load; everything from
there on is the bad tail, which the caller reports and cuts off.
"""

import io
import pickle
import struct
import zlib

MAGIC = b"NUBISJ1\n"
HEADER = struct.Struct("<II")
# A record holds at most one blob, itself at most max_stream_bytes (2 GiB).
MAX_PAYLOAD = (1 << 32) - 1


class RecordError(Exception):
    """A record that cannot be read back; the message says why."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"journal records hold no objects; "
                                     f"refused {module}.{name}")


def encode(record: tuple) -> bytes:
    """One framed record."""
    payload = pickle.dumps(record, protocol=5)
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload) -> tuple:
    """The record in a payload whose checksum passed; raises RecordError."""
    try:
        record = _PlainUnpickler(io.BytesIO(payload)).load()
    except Exception as e:
        raise RecordError(f"payload does not load: {e}") from None
    if type(record) is not tuple:
        raise RecordError(f"payload is a {type(record).__name__}, not a tuple")
    return record


def scan(data, start: int = 0):
    """Yield (offset, record) from `start`; then return (end, why).

    `end` is the offset just past the last good record and `why` is "" when
    the data ends there cleanly, else what is wrong at `end`.
    """
    view = memoryview(data)
    size = len(view)
    at = start
    while at < size:
        if size - at < HEADER.size:
            return at, f"torn header ({size - at} bytes)"
        length, crc = HEADER.unpack_from(view, at)
        body = at + HEADER.size
        if body + length > size:
            return at, (f"torn record (header says {length} bytes, "
                        f"{size - body} there)")
        payload = view[body:body + length]
        if zlib.crc32(payload) != crc:
            return at, "checksum mismatch"
        try:
            record = decode(payload)
        except RecordError as e:
            return at, str(e)
        yield at, record
        at = body + length
    return at, ""
