"""Bad input on the ZeroMQ wire gets an error reply; the kernel goes on."""

import struct

import pytest
import zmq

from nubis.errors import Code, InvalidArgument
from nubis.transport.frames import REPLY, REQUEST, encode_header

from .conftest import TOKENS

pytestmark = pytest.mark.parametrize("transport", ["zmq+ipc", "zmq+tcp"])


@pytest.fixture
def raw(kernel, transport):
    """A bare DEALER socket, authenticated as acme."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = 5000
    sock.plain_username = b"x"
    sock.plain_password = TOKENS["acme"].encode()
    endpoint = kernel.urls[transport].removeprefix("zmq+")
    sock.connect(endpoint)
    yield sock
    sock.close()
    ctx.term()


def reply(sock):
    frames = sock.recv_multipart()
    version, kind, code, rid = struct.unpack("!BBHQ", frames[0])
    assert (version, kind) == (1, REPLY)
    return code, rid, frames[1:]


def test_garbage_gets_an_error_reply_and_the_kernel_goes_on(raw, client):
    raw.send_multipart([b"garbage"])
    code, rid, [text] = reply(raw)
    assert code == Code.INVALID_ARGUMENT and rid == 0
    assert b"malformed header" in text
    assert client.account.info().tenant == "acme"


@pytest.mark.parametrize("frames, code, words", [
    ([struct.pack("!BBHQ", 9, REQUEST, 101, 5), b""],
     Code.FAILED_PRECONDITION, b"version 9"),
    ([struct.pack("!BBHQ", 1, 77, 101, 5), b""],
     Code.INVALID_ARGUMENT, b"frame kind 77"),
    ([encode_header(REQUEST, 999, 5), b""],
     Code.UNIMPLEMENTED, b"call id 999"),
    ([encode_header(REQUEST, 101, 5)],
     Code.INVALID_ARGUMENT, b"missing the request"),
    ([encode_header(REQUEST, 101, 5), b"\xff\xff\xff"],
     Code.INVALID_ARGUMENT, b"CreateQueueRequest"),
    ([encode_header(REQUEST, 101, 5), b"", b"content"],
     Code.INVALID_ARGUMENT, b"takes no content"),
    ([encode_header(4, 0, 5)],
     Code.FAILED_PRECONDITION, b"no open stream"),
])
def test_malformed_requests(raw, client, frames, code, words):
    raw.send_multipart(frames)
    got, rid, [text] = reply(raw)
    assert got == code and rid == 5
    assert words in text
    assert client.account.info().tenant == "acme"


def test_unknown_call_through_the_client(client):
    from nubis import abi

    with pytest.raises(InvalidArgument, match="port 0 "):
        client._call("Listen", abi.BY_NAME["Listen"].request())


def test_oversize_message_is_dropped_and_the_kernel_goes_on(raw, client):
    # Over max_message_bytes (4 MiB in the test kernel): libzmq drops the
    # connection before the message reaches the kernel.
    raw.rcvtimeo = 1000
    raw.send_multipart([encode_header(REQUEST, 105, 1), b"x" * (5 << 20)])
    with pytest.raises(zmq.Again):
        raw.recv_multipart()
    assert client.account.info().tenant == "acme"
