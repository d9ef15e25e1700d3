"""The client library tenants use: sync and asyncio, over ZeroMQ or gRPC.

    from nubis.client import Client
    with Client("zmq+ipc:///tmp/nubis-1000/kernel.sock", token="...") as c:
        c.blob.put("hello.txt", b"hi")
        c.queue.create("jobs")
        c.queue.send("jobs", b"job 1")
        [msg] = c.queue.receive("jobs", wait=1)
        c.queue.ack("jobs", msg.receipt)

The URL picks the transport (see nubis.client.url); with none given the
client uses $NUBIS_URL, else the local kernel's default unix socket. The
token is $NUBIS_TOKEN, else the demo token a local kernel wrote down. Every
failed call raises the NubisError subclass of its status code.

Over the network, grpcs:// URLs use TLS and zmq+tcp:// URLs use CURVE when
given the kernel's public key; the keyword options (tls_ca, tls_cert,
tls_key, curve_server_key, curve_secret_key, curve_public_key) and their
environment variables are in nubis.client.keys.
"""

import os

from nubis import abi
from nubis.client.api import (
    AccountApi,
    AdminApi,
    BlobApi,
    BlobContent,
    ListenApi,
    QueueApi,
    SpawnApi,
)
from nubis.client.keys import connection_options
from nubis.client.url import KernelUrl, parse
from nubis.config import runtime_dir
from nubis.errors import *  # noqa: F403 - the exceptions are part of the API
from nubis.errors import NubisError

__all__ = ["Client", "AsyncClient", "BlobContent", "NubisError", "default_url",
           "default_token", "KernelUrl", "parse", "current"]

DEFAULT_TIMEOUT = 30.0

# Inside a cloud process: its client, bound to its tenant (set by the worker).
_current = None


def current() -> "Client":
    """The client of the cloud process this code runs in."""
    if _current is None:
        raise RuntimeError("nubis.client.current() works only inside a cloud "
                           "process")
    return _current


def default_url() -> str:
    return os.environ.get("NUBIS_URL") or f"zmq+ipc://{runtime_dir()}/kernel.sock"


def default_token() -> str:
    token = os.environ.get("NUBIS_TOKEN")
    if token:
        return token
    try:
        with open(os.path.join(runtime_dir(), "demo.token")) as f:
            return f.read().strip()
    except OSError:
        return ""


class _Base:
    def __init__(self, url, token, timeout, max_message_bytes, chunk_bytes,
                 security):
        self.url = parse(url or default_url())
        self.token = token if token is not None else default_token()
        self.timeout = timeout
        self.options = dict(max_message_bytes=max_message_bytes,
                            chunk_bytes=chunk_bytes,
                            **connection_options(self.url, security))
        self.queue = QueueApi(self._call)
        self.blob = BlobApi(self._call)
        self.account = AccountApi(self._call)
        self.admin = AdminApi(self._call)
        self.spawn = SpawnApi(self._call, self.events)
        self.listen = ListenApi(self._call, self.events)

    def _deadline(self, timeout, wait):
        timeout = self.timeout if timeout is None else timeout
        return None if timeout is None else timeout + wait


class Client(_Base):
    """A blocking client; one call at a time (use one per thread).

    TLS and CURVE options (tls_ca=, curve_server_key=, ...) are those of
    nubis.client.keys.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float | None = DEFAULT_TIMEOUT,
                 max_message_bytes: int = 8 << 20, chunk_bytes: int = 1 << 20,
                 **security: str):
        super().__init__(url, token, timeout, max_message_bytes, chunk_bytes,
                         security)
        if self.url.transport == "zmq":
            from nubis.client.zmq import ZmqConnection as Connection
        else:
            from nubis.client.grpc import GrpcConnection as Connection
        self.conn = Connection(self.url.address, self.token, **self.options)

    def _call(self, name, request, content=None, timeout=None, post=None, wait=0):
        response, data = self.conn.call(abi.BY_NAME[name], request, content,
                                        self._deadline(timeout, wait))
        return post(response, data) if post else response

    def events(self, name: str, request, timeout: float | None = None):
        """Iterate the responses of an events call (a stream)."""
        return self.conn.events(abi.BY_NAME[name], request, timeout)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncClient(_Base):
    """An asyncio client; any number of calls may be in flight at once.

    Create it with `await AsyncClient.connect(url, token)` or use it as
    `async with AsyncClient(url, token) as c:`. TLS and CURVE options are
    those of nubis.client.keys.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float | None = DEFAULT_TIMEOUT,
                 max_message_bytes: int = 8 << 20, chunk_bytes: int = 1 << 20,
                 **security: str):
        super().__init__(url, token, timeout, max_message_bytes, chunk_bytes,
                         security)
        self.conn = None

    @classmethod
    async def connect(cls, url: str | None = None, token: str | None = None,
                      **options) -> "AsyncClient":
        client = cls(url, token, **options)
        await client.open()
        return client

    async def open(self) -> None:
        if self.url.transport == "zmq":
            from nubis.client.zmq import AsyncZmqConnection

            self.conn = AsyncZmqConnection(self.url.address, self.token,
                                           **self.options)
            await self.conn.open()
        else:
            from nubis.client.grpc import AsyncGrpcConnection

            self.conn = AsyncGrpcConnection(self.url.address, self.token,
                                            **self.options)

    async def _run(self, method, request, content, timeout, post):
        response, data = await self.conn.call(method, request, content, timeout)
        return post(response, data) if post else response

    def _call(self, name, request, content=None, timeout=None, post=None, wait=0):
        return self._run(abi.BY_NAME[name], request, content,
                         self._deadline(timeout, wait), post)

    def events(self, name: str, request, timeout: float | None = None):
        """Async-iterate the responses of an events call (a stream)."""
        return self.conn.events(abi.BY_NAME[name], request, timeout)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def __aenter__(self):
        if self.conn is None:
            await self.open()
        return self

    async def __aexit__(self, *exc):
        await self.close()
