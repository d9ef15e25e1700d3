"""Fixtures: a real kernel process, and clients of it over every transport.

The kernel runs as `nubis kernel` in a subprocess, with a TOML config naming
three tenants, and serves ZeroMQ over ipc and tcp and gRPC on loopback.
Tests that take the `client` fixture run once per transport, so one test
body checks a behaviour on all of them. Names are made unique per test, as
the kernel is shared by the whole session.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from nubis.client import AsyncClient, Client
from nubis.errors import NubisError

TOKENS = {
    "acme": "acme-token-0123456789",
    "other": "other-token-0123456789",
    "ops": "ops-token-0123456789",
    "small": "small-token-0123456789",
    "slow": "slow-token-0123456789",
}
TRANSPORTS = ("zmq+ipc", "zmq+tcp", "grpc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder, zmq_port: int, grpc_port: int) -> str:
    path = os.path.join(folder, "nubis.toml")
    with open(path, "w") as f:
        f.write(f"""
[kernel]
zmq = ["ipc://{folder}/kernel.sock", "tcp://127.0.0.1:{zmq_port}"]
grpc = "127.0.0.1:{grpc_port}"
max_message_bytes = 4194304

[tenants.acme]
token = "{TOKENS['acme']}"
ports = ["20000-20099"]

[tenants.other]
token = "{TOKENS['other']}"

[tenants.ops]
token = "{TOKENS['ops']}"
admin = true

[tenants.small]
token = "{TOKENS['small']}"
ports = ["20100-20109"]

[tenants.small.quotas]
max_queues = 2
max_message_bytes = 1024
max_queue_depth = 5
max_bytes_stored = 65536
max_blob_bytes = 32768
max_processes = 2
max_connections = 3

[tenants.slow]
token = "{TOKENS['slow']}"
quotas = {{ calls_per_second = 5 }}
""")
    return path


class KernelProcess:
    def __init__(self, folder, env=None):
        self.folder = str(folder)
        self.zmq_port, self.grpc_port = free_port(), free_port()
        self.config = write_config(self.folder, self.zmq_port, self.grpc_port)
        self.urls = {
            "zmq+ipc": f"zmq+ipc://{self.folder}/kernel.sock",
            "zmq+tcp": f"zmq+tcp://127.0.0.1:{self.zmq_port}",
            "grpc": f"grpc://127.0.0.1:{self.grpc_port}",
        }
        self.log_path = os.path.join(self.folder, "kernel.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nubis.cli.main", "kernel", "--config",
             self.config],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kernel exited: {self.read_log()}")
            try:
                for url in self.urls.values():
                    with Client(url, TOKENS["acme"], timeout=2) as c:
                        c.account.info()
                return
            except NubisError:
                time.sleep(0.2)
        raise RuntimeError(f"kernel did not start: {self.read_log()}")

    def read_log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()


@pytest.fixture(scope="session")
def kernel(tmp_path_factory):
    # A short folder: unix socket paths are limited to about 100 bytes.
    folder = tmp_path_factory.mktemp("k", numbered=True)
    proc = KernelProcess(folder)
    yield proc
    assert proc.stop() == 0, proc.read_log()


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


@pytest.fixture
def url(kernel, transport):
    return kernel.urls[transport]


@pytest.fixture
def client(url):
    with Client(url, TOKENS["acme"]) as c:
        yield c


@pytest.fixture
def other(url):
    """A client of another tenant, on the same transport."""
    with Client(url, TOKENS["other"]) as c:
        yield c


@pytest.fixture
def admin(url):
    with Client(url, TOKENS["ops"]) as c:
        yield c


@pytest.fixture
def small(url):
    """A client of a tenant with tiny quotas."""
    with Client(url, TOKENS["small"]) as c:
        yield c


@pytest.fixture
def connect(url):
    """Open another client of a tenant on the test's transport."""
    opened = []

    def open_client(tenant: str = "acme") -> Client:
        opened.append(Client(url, TOKENS[tenant]))
        return opened[-1]

    yield open_client
    for c in opened:
        c.close()


@pytest.fixture
async def aclient(url):
    async with AsyncClient(url, TOKENS["acme"]) as c:
        yield c


@pytest.fixture
def name():
    """A name no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"
