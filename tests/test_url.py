"""Kernel URLs pick the transport; bad ones are INVALID_ARGUMENT."""

import pytest

from nubis.client.url import parse
from nubis.errors import InvalidArgument


@pytest.mark.parametrize("url, transport, address", [
    ("zmq+ipc:///tmp/nubis/kernel.sock", "zmq", "ipc:///tmp/nubis/kernel.sock"),
    ("zmq+tcp://127.0.0.1:7701", "zmq", "tcp://127.0.0.1:7701"),
    ("ZMQ+TCP://localhost:1", "zmq", "tcp://localhost:1"),
    ("zmq+tcp://[::1]:7701", "zmq", "tcp://[::1]:7701"),
    ("grpc://127.0.0.1:7700", "grpc", "127.0.0.1:7700"),
    ("grpc://kernel.example:443/", "grpc", "kernel.example:443"),
    ("grpcs://kernel.example:443", "grpc", "kernel.example:443"),
])
def test_good_urls(url, transport, address):
    parsed = parse(url)
    assert (parsed.transport, parsed.address) == (transport, address)
    assert parsed.tls == url.startswith("grpcs")


@pytest.mark.parametrize("url, words", [
    ("", "expected SCHEME://ADDRESS"),
    ("localhost:7700", "expected SCHEME://ADDRESS"),
    ("http://localhost:7700", "unknown scheme 'http'"),
    ("zmq+ipc://relative/path", "absolute socket path"),
    ("zmq+ipc:///", "absolute socket path"),
    ("zmq+tcp://localhost", "host:port"),
    ("zmq+tcp://localhost:notaport", "bad port"),
    ("grpc://localhost:99999", "bad port"),
    ("grpc://:7700", "host:port"),
    ("grpc://host:1/path", "only host:port"),
    ("grpcs://host", "host:port"),
    (None, "bad kernel URL"),
])
def test_bad_urls(url, words):
    with pytest.raises(InvalidArgument, match=words):
        parse(url)
