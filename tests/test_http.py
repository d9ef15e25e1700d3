"""The HTTP service: the protocol standalone, then apps deployed on LISTEN+SPAWN.

The first half runs an `HttpServer` on a plain `loop.create_server` in a
thread and talks to it with httpx, curl and raw sockets. The second half
boots a kernel with two tenants that own ports, deploys Starlette apps as
cloud processes, and checks balancing, the 502 of a crashed daemon and its
restart, and that two tenants' apps cannot reach each other's data.
"""

import asyncio
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from nubis.client import Client
from nubis.errors import NubisError, PermissionDenied
from nubis.services.http import HttpServer, Limits, WSGIAdapter
from nubis.services.http import deploy as dep
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)


# -- the protocol, standalone ----------------------------------------------

async def _hello(request):
    return PlainTextResponse("hello")


async def _echo(request):
    body = await request.body()
    return PlainTextResponse(f"{len(body)} {hashlib.sha256(body).hexdigest()}")


async def _slow(request):
    await asyncio.sleep(float(request.query_params.get("s", "5")))
    return PlainTextResponse("late")


async def _stream(request):
    async def parts():
        for i in range(5):
            yield f"part {i}\n".encode()
    return StreamingResponse(parts(), media_type="text/plain")


async def _boom(request):
    raise ValueError("the app failed on purpose")


APP = Starlette(routes=[
    Route("/", _hello), Route("/echo", _echo, methods=["POST"]),
    Route("/slow", _slow), Route("/stream", _stream), Route("/boom", _boom),
])


def _wsgi(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"wsgi {environ['REQUEST_METHOD']} {len(body)}".encode()]


class Standalone:
    """An HttpServer on 127.0.0.1 in a thread, with its own event loop."""

    def __init__(self, app, limits: Limits):
        self.loop = asyncio.new_event_loop()
        self.server = HttpServer(app, limits)
        self.port = free_port()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self, ready) -> None:
        asyncio.set_event_loop(self.loop)
        self.listener = self.loop.run_until_complete(self.loop.create_server(
            self.server.protocol, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()

    def drain(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.drain(), self.loop).result(15)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.listener.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def standalone():
    server = Standalone(APP, Limits(request_timeout=1.0, max_body_bytes=16 << 20,
                                    max_header_bytes=8 << 10))
    yield server
    server.close()


def raw(port: int, data: bytes, wait: float = 3.0) -> bytes:
    """Send bytes, read until the server closes (or `wait` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def test_get_and_keep_alive(standalone):
    with httpx.Client(base_url=standalone.url) as c:
        replies = [c.get("/") for _ in range(5)]
    assert [r.text for r in replies] == ["hello"] * 5
    assert all(r.headers["content-length"] == "5" for r in replies)
    # Two requests on one connection, pipelined: both answered, in order.
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    out = raw(standalone.port, req + req + b"GET / HTTP/1.1\r\nHost: x\r\n"
              b"Connection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.endswith(b"hello")


def test_large_and_chunked_bodies(standalone):
    data = os.urandom(8 << 20)
    want = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    with httpx.Client(base_url=standalone.url, timeout=30) as c:
        assert c.post("/echo", content=data).text == want

        def chunks():
            for i in range(0, len(data), 1 << 20):
                yield data[i:i + (1 << 20)]
        assert c.post("/echo", content=chunks()).text == want
        streamed = c.get("/stream")
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert streamed.text == "".join(f"part {i}\n" for i in range(5))


def test_curl(standalone, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    body = tmp_path / "body"
    body.write_bytes(b"x" * 200_000)
    out = subprocess.run(
        ["curl", "-sS", "--data-binary", f"@{body}", f"{standalone.url}/echo", "--next",
         f"{standalone.url}/"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("200000 ") and out.stdout.endswith("hello")


def test_malformed_requests_get_400_and_the_server_goes_on(standalone):
    for junk in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
                 b"\x00\x01\x02\x03\r\n\r\n"):
        out = raw(standalone.port, junk)
        assert out.startswith(b"HTTP/1.1 400 Bad Request"), (junk, out)
        assert b"connection: close" in out
    assert httpx.get(standalone.url + "/").text == "hello"


def test_limits_answer_431_413_504_500(standalone):
    out = raw(standalone.port, b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 ")
    out = raw(standalone.port, b"POST /echo HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 99999999\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413 ")
    t0 = time.monotonic()
    slow = httpx.get(standalone.url + "/slow?s=5", timeout=10)
    assert slow.status_code == 504 and time.monotonic() - t0 < 4
    assert httpx.get(standalone.url + "/boom").status_code == 500
    assert httpx.get(standalone.url + "/").text == "hello"


def test_head_and_expect_continue(standalone):
    head = httpx.head(standalone.url + "/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "5"
    out = raw(standalone.port, b"POST /echo HTTP/1.1\r\nHost: x\r\n"
              b"Expect: 100-continue\r\nContent-Length: 3\r\n"
              b"Connection: close\r\n\r\nabc")
    assert b"200 OK" in out and b"3 " in out


def test_overload_gets_503_then_drain_finishes_in_flight():
    server = Standalone(APP, Limits(max_inflight=1, request_timeout=5))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            slow = threading.Thread(target=lambda: results.append(
                c.get("/slow?s=1").text))
            results: list = []
            slow.start()
            time.sleep(0.3)
            busy = httpx.get(server.url + "/")
            assert busy.status_code == 503
            assert busy.headers["retry-after"] == "1"
            server.drain()          # waits for the slow request
            slow.join(5)
        assert results == ["late"]
        assert server.server.inflight == 0 and not server.server.connections
    finally:
        server.close()


def test_wsgi_adapter():
    server = Standalone(WSGIAdapter(_wsgi), Limits())
    try:
        assert httpx.post(server.url + "/x", content=b"abcd").text == "wsgi POST 4"
    finally:
        server.close()


def test_limits_from_dict_says_what_is_wrong():
    assert Limits.from_dict({"max_inflight": "8"}).max_inflight == 8
    with pytest.raises(ValueError, match="unknown HTTP limit"):
        Limits.from_dict({"max_inflightt": 8})
    with pytest.raises(ValueError, match="must be positive"):
        Limits.from_dict({"request_timeout": 0})
    with pytest.raises(ValueError, match="must be a int"):
        Limits.from_dict({"max_inflight": "lots"})


# -- deployed on LISTEN and SPAWN ------------------------------------------

TOKENS = {"web1": "web1-token-0123456789", "web2": "web2-token-0123456789"}

APP_SOURCE = '''
import os
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def pid(request):
    return PlainTextResponse(str(os.getpid()))

async def crash(request):
    os.kill(os.getpid(), 9)

async def put(request):
    client.blob.put(request.path_params["key"], await request.body())
    return PlainTextResponse("stored")

async def get(request):
    try:
        return PlainTextResponse(client.blob.get(request.path_params["key"]).data)
    except Exception as e:
        return PlainTextResponse(type(e).__name__, status_code=404)

app = Starlette(routes=[Route("/", pid), Route("/crash", crash),
                        Route("/blob/{key}", put, methods=["PUT"]),
                        Route("/blob/{key}", get)])
'''


class Kernel:
    def __init__(self, folder):
        self.folder = str(folder)
        self.ports = {"web1": free_port(), "web2": free_port()}
        config = os.path.join(self.folder, "nubis.toml")
        with open(config, "w") as f:
            f.write(f'[kernel]\nzmq = ["ipc://{self.folder}/k.sock"]\ngrpc = ""\n')
            for name, token in TOKENS.items():
                f.write(f'[tenants.{name}]\ntoken = "{token}"\n'
                        f'ports = ["{self.ports[name]}"]\n')
        self.url = f"zmq+ipc://{self.folder}/k.sock"
        self.log = open(os.path.join(self.folder, "kernel.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nubis.cli.main", "kernel", "--config", config],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with Client(self.url, TOKENS["web1"], timeout=2) as c:
                    c.spawn.list()      # answers once the zygote is up
                return
            except NubisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(self.read_log()) from None
                time.sleep(0.2)

    def client(self, tenant: str) -> Client:
        return Client(self.url, TOKENS[tenant])

    def read_log(self) -> str:
        with open(self.log.name) as f:
            return f.read()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            self.log.close()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    k = Kernel(tmp_path_factory.mktemp("h", numbered=True))
    yield k
    assert k.stop() == 0, k.read_log()


def wait_up(url: str, timeout: float = 20.0, status=200) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = httpx.get(url, timeout=3)
            if r.status_code == status:
                return r
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer {status}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def deployed(kernel):
    with kernel.client("web1") as c1, kernel.client("web2") as c2:
        dep.deploy(c1, "site", APP_SOURCE, kernel.ports["web1"], 2)
        dep.deploy(c2, "site", APP_SOURCE, kernel.ports["web2"], 1)
    urls = {t: f"http://127.0.0.1:{p}" for t, p in kernel.ports.items()}
    for url in urls.values():
        wait_up(url + "/")
    return urls


def test_deployed_app_is_balanced_over_processes(kernel, deployed):
    seen = set()
    deadline = time.monotonic() + 20
    while len(seen) < 2 and time.monotonic() < deadline:
        with httpx.Client() as c:     # a new connection each round
            seen.add(c.get(deployed["web1"] + "/").text)
    assert len(seen) == 2, seen
    with kernel.client("web1") as c:
        assert len(dep.processes(c, "site")) == 2
        [listener] = c.listen.list()
        assert len(listener.attached) == 2


def test_deployed_app_with_curl_and_keep_alive(deployed):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    url = deployed["web1"] + "/blob/k1"
    out = subprocess.run(["curl", "-sS", "-X", "PUT", "--data-binary", "v1", url,
                          "--next", url], capture_output=True, text=True,
                         timeout=20)
    assert out.stdout.startswith("stored"), out
    with httpx.Client() as c:
        pids = {c.get(deployed["web1"] + "/").text for _ in range(10)}
    assert len(pids) == 1     # one kept-alive connection, one process


def test_tenants_apps_cannot_reach_each_others_data(kernel, deployed):
    assert httpx.put(deployed["web1"] + "/blob/secret", content=b"s3cr3t").text \
        == "stored"
    assert httpx.get(deployed["web1"] + "/blob/secret").text == "s3cr3t"
    other = httpx.get(deployed["web2"] + "/blob/secret")
    assert other.status_code == 404 and other.text == "NotFound"
    with kernel.client("web2") as c2, pytest.raises(PermissionDenied):
        dep.deploy(c2, "steal", APP_SOURCE, kernel.ports["web1"], 1)


def test_crashed_daemon_gives_502_and_is_restarted(kernel, deployed):
    url = deployed["web2"]
    before = httpx.get(url + "/").text
    crashed = httpx.get(url + "/crash", timeout=10)
    assert crashed.status_code == 502
    assert "died" in crashed.text
    after = wait_up(url + "/").text
    assert after != before
    with kernel.client("web2") as c:
        [info] = dep.processes(c, "site")
        assert info.attempts >= 2


def test_cli_deploy_scale_ls_stop(kernel, tmp_path):
    app = tmp_path / "tiny.py"
    app.write_text("async def app(scope, receive, send):\n"
                   "    if scope['type'] != 'http':\n        return\n"
                   "    await send({'type': 'http.response.start', 'status': 200,"
                   " 'headers': []})\n"
                   "    await send({'type': 'http.response.body', 'body': b'tiny'})\n")
    env = {**os.environ, "NUBIS_URL": kernel.url, "NUBIS_TOKEN": TOKENS["web1"]}

    def nubis(*args):
        return subprocess.run([sys.executable, "-m", "nubis.cli.main", *args],
                              capture_output=True, text=True, env=env, timeout=30)

    with kernel.client("web1") as c:
        dep.stop(c, "site")
    port = kernel.ports["web1"]
    out = nubis("http", "deploy", f"{app}:app", "--port", str(port), "-n", "1")
    assert out.returncode == 0, out.stderr
    assert wait_up(f"http://127.0.0.1:{port}/").text == "tiny"
    assert nubis("http", "scale", "tiny", "2").returncode == 0
    listing = nubis("http", "ls")
    assert "tiny" in listing.stdout and str(port) in listing.stdout
    out = nubis("http", "stop", "tiny")
    assert out.returncode == 0 and "stopped 2" in out.stdout
    bad = nubis("http", "deploy", f"{app}:nothere", "--port", str(port))
    assert bad.returncode == 2 and "defines no 'nothere'" in bad.stderr
    bad = nubis("http", "deploy", f"{app}:app", "--port", str(port),
                "--limit", "bogus=1")
    assert bad.returncode == 2 and "unknown HTTP limit" in bad.stderr
