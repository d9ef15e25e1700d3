"""Property-based fuzzing of the frame decoder and of every call's arguments.

Random bytes and random well-formed requests go to the kernel over the
ZeroMQ wire; each must be answered with a status code other than INTERNAL
(an INTERNAL reply means a handler crashed), and a well-behaved client must
keep being served throughout.
"""

import struct

import pytest
import zmq
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nubis import abi
from nubis.errors import Code
from nubis.transport.frames import (
    HEADER_SIZE,
    REPLY,
    REPLY_OPEN,
    REQUEST,
    decode_header,
    encode_header,
)

from .conftest import TOKENS

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@given(st.binary(max_size=40))
def test_decoder_takes_any_bytes(frame):
    try:
        version, kind, code, rid = decode_header(frame)
    except ValueError as e:
        assert len(frame) != HEADER_SIZE and "header frame" in str(e)
    else:
        assert len(frame) == HEADER_SIZE
        assert encode_header(kind, code, rid)[1:] == frame[1:]


@given(st.integers(0, 255), st.integers(0, 65535), st.integers(0, 2**64 - 1))
def test_header_round_trip(kind, code, rid):
    assert decode_header(encode_header(kind, code, rid)) == (1, kind, code, rid)


@pytest.fixture(scope="module")
def good(kernel):
    """A well-behaved client that must be served throughout."""
    from nubis.client import Client

    with Client(kernel.urls["zmq+ipc"], TOKENS["acme"]) as c:
        yield c


@pytest.fixture(scope="module")
def raw(kernel):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = 10_000
    sock.plain_username = b"fuzz"
    sock.plain_password = TOKENS["other"].encode()
    sock.connect(f"tcp://127.0.0.1:{kernel.zmq_port}")
    yield sock
    sock.close()
    ctx.term()


def exchange(sock, frames, rid):
    """Send one message; return the status of the reply to `rid`, if any."""
    sock.send_multipart(frames)
    while True:
        reply = sock.recv_multipart()
        _, kind, code, got = struct.unpack("!BBHQ", reply[0])
        if got != rid and got != 0:
            continue
        if kind == REPLY_OPEN:
            return 0
        assert kind == REPLY
        return code, b"".join(reply[1:2])


_SCALARS = {
    F.TYPE_STRING: st.text(max_size=40),
    F.TYPE_BYTES: st.binary(max_size=64),
    F.TYPE_BOOL: st.booleans(),
    F.TYPE_UINT32: st.integers(0, 2**32 - 1),
    F.TYPE_INT32: st.integers(-2**31, 2**31 - 1),
    F.TYPE_UINT64: st.integers(0, 2**64 - 1),
    F.TYPE_DOUBLE: st.floats(allow_nan=True),
}


def message_strategy(cls, depth=0):
    """Messages of `cls` with random values in random subsets of fields."""
    fields = {}
    for field in cls.DESCRIPTOR.fields:
        if field.type == F.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                value = st.dictionaries(st.text(max_size=10), st.text(max_size=10),
                                        max_size=3)
            elif depth < 2:
                sub = message_strategy(
                    message_factory.GetMessageClass(field.message_type), depth + 1)
                value = st.lists(sub, max_size=3) if _repeated(field) else sub
            else:
                continue
        elif field.type == F.TYPE_ENUM:
            value = st.integers(0, 5)
        elif field.type in _SCALARS:
            value = _SCALARS[field.type]
            if _repeated(field):
                value = st.lists(value, max_size=4)
        else:
            continue
        fields[field.name] = st.none() | value
    return st.fixed_dictionaries(fields).map(
        lambda kw: cls(**{k: v for k, v in kw.items() if v is not None}))


def _repeated(field) -> bool:
    return field.is_repeated


CALLS = [m for m in abi.METHODS if m.service not in ("AdminService",)]


@pytest.mark.parametrize("method", CALLS, ids=lambda m: m.key)
def test_random_requests_never_crash_a_handler(raw, good, method):
    rid = iter(range(1, 10**9))

    @FUZZ
    @given(message_strategy(method.request))
    def check(request):
        if hasattr(request, "wait_ms"):
            request.wait_ms = min(request.wait_ms, 50)
        if hasattr(request, "timeout_ms"):
            request.timeout_ms = min(request.timeout_ms, 50)
        n = next(rid)
        code, text = exchange(raw, [encode_header(REQUEST, method.id, n),
                                    request.SerializeToString()], n)
        assert code != Code.INTERNAL, text

    check()
    assert good.account.info().tenant == "acme"


@FUZZ
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=5),
       st.integers(1, 2**64 - 1))
def test_random_frames_get_replies_and_the_kernel_goes_on(raw, good, frames,
                                                          rid):
    head = frames[0]
    if len(head) == HEADER_SIZE:
        # Keep the request id so the reply can be matched.
        head = head[:4] + rid.to_bytes(8, "big")
        frames = [head, *frames[1:]]
        version, kind = head[0], head[1]
        if version == 1 and kind in (3, 5, 6):   # DATA with no reply, CANCEL, PING
            return
    raw.send_multipart(frames)
    if len(head) == HEADER_SIZE and head[0] == 1 and head[1] == 4:
        rid_expect = rid
    else:
        rid_expect = rid if len(head) == HEADER_SIZE else 0
    reply = raw.recv_multipart()
    _, kind, code, got = struct.unpack("!BBHQ", reply[0])
    assert got in (rid_expect, 0, rid)
    assert code != Code.INTERNAL
    assert good.account.info().tenant == "acme"
