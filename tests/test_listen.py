"""LISTEN through the public client and real sockets: ports and their
permissions, handoff and relay, balancing, robustness, the daemon library
and its example daemons (echo, RESP with redis-py and redis-benchmark)."""

import asyncio
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from nubis.client import AsyncClient, Client
from nubis.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from nubis.services import listen
from nubis.services.echo import LineEcho

from .conftest import TOKENS

# Ports cycle through the tenants' ranges; each test gives its ports back.
PORTS = itertools.cycle(range(20000, 20100))
SMALL_PORTS = itertools.cycle(range(20100, 20110))
KEEP = set()        # ports a module-scoped fixture holds
MODES = ("handoff", "relay")
HERE = os.path.dirname(os.path.abspath(__file__))
SERVICES = os.path.join(os.path.dirname(HERE), "services")


def free(ports) -> int:
    """The tenant's next port that no one on this host holds (other test
    sessions may run kernels of their own)."""
    for _ in range(200):
        port = next(ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in the tenant's range")


def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


class Daemon:
    """`listen.serve` in a thread of its own, as a listener process."""

    def __init__(self, url, port, factory=LineEcho, mode="relay",
                 tenant="acme", **options):
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.task = None
        self.error = None
        self.thread = threading.Thread(
            target=self._run, args=(url, port, factory, mode, tenant, options),
            daemon=True)
        self.thread.start()
        assert self.ready.wait(10), self.error

    def _run(self, url, port, factory, mode, tenant, options):
        async def main():
            async with AsyncClient(url, TOKENS[tenant]) as c:
                await listen.serve(factory, port, mode=mode, client=c,
                                   ready=self.ready.set, **options)

        self.task = self.loop.create_task(main())
        try:
            self.loop.run_until_complete(self.task)
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.error = e
            self.ready.set()

    def stop(self):
        """Detach: cancel the serve, as a process that goes away."""
        if self.task is not None and not self.task.done():
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)


@pytest.fixture(autouse=True)
def give_ports_back(kernel):
    yield
    for tenant in ("acme", "small"):
        with Client(kernel.urls["zmq+ipc"], TOKENS[tenant]) as c:
            for info in c.listen.list():
                if info.port not in KEEP:
                    c.listen.unlisten(info.port)


@pytest.fixture
def daemons():
    started = []

    def start(*args, **kwargs):
        started.append(Daemon(*args, **kwargs))
        return started[-1]

    yield start
    for d in started:
        d.stop()


def connect(port, timeout=5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout)
    s.settimeout(timeout)
    return s


def refused(port) -> bool:
    """True if a connection to `port` is reset or closed at once."""
    try:
        with connect(port) as s:
            return closed(s)
    except ConnectionResetError:
        return True


def closed(s) -> bool:
    """True if the peer closed (EOF or reset) within the socket's timeout."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def ask(s, line: bytes) -> bytes:
    s.sendall(line)
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def echoes(port) -> bool:
    try:
        with connect(port) as s:
            return ask(s, b"y\n") == b"y\n"
    except OSError:
        return False


def attached(client, port) -> int:
    [info] = [i for i in client.listen.list() if i.port == port]
    return len(info.attached)


# -- the calls ----------------------------------------------------------------


def test_listen_permissions_and_bad_input(client, other):
    port = free(PORTS)
    assert client.listen.listen(port) == port
    with pytest.raises(AlreadyExists, match=str(port)):
        client.listen.listen(port)
    with pytest.raises(PermissionDenied, match=f"port {port}.*'other'"):
        other.listen.listen(port)
    with pytest.raises(PermissionDenied, match="port 30000 "):
        client.listen.listen(30000)
    for bad in (0, 70000):
        with pytest.raises(InvalidArgument, match=f"port {bad} "):
            client.listen.listen(bad)
    with pytest.raises(PermissionDenied, match="'10.1.2.3'"):
        client.listen.listen(free(PORTS), host="10.1.2.3")
    with pytest.raises(InvalidArgument, match="'nowhere'"):
        client.listen.listen(free(PORTS), host="nowhere")
    with pytest.raises(InvalidArgument, match="idle_timeout_ms 999999999 "):
        client.listen.listen(free(PORTS), idle_timeout=999999.999)

    with pytest.raises(NotFound, match=f"port {port} "):
        next(iter(other.listen.attach(port)))
    with pytest.raises(InvalidArgument, match="handoff_path 'rel' "):
        next(iter(client.listen.attach(port, "handoff", "rel")))
    with pytest.raises(NotFound, match="connection 987654321 "):
        client.listen.write(987654321, b"x")
    with pytest.raises(NotFound, match=f"port {port} "):
        other.listen.unlisten(port)
    client.listen.unlisten(port)
    with pytest.raises(NotFound, match=f"port {port} "):
        client.listen.unlisten(port)


def test_attach_ends_with_the_listener(client):
    port = client.listen.listen(free(PORTS))
    events = iter(client.listen.attach(port, "relay"))
    first = next(events)
    assert first.kind == 6 and first.pid.startswith("client-")
    assert attached(client, port) == 1
    with Client(client.url.url, TOKENS["acme"]) as c2:
        c2.listen.unlisten(port)
    assert list(events) == []


# -- handoff and relay --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_echo_round_trip(client, url, daemons, mode):
    port = free(PORTS)
    before = client.account.usage()[0]
    daemons(url, port, mode=mode)
    with connect(port) as s:
        for i in range(20):
            assert ask(s, b"line %d\n" % i) == b"line %d\n" % i
        s.sendall(b"tail")
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b"tail" and closed(s)
    [info] = [i for i in client.listen.list() if i.port == port]
    assert info.accepted == 1 and info.attached[0].given == 1
    after = client.account.usage()[0]
    assert after.connections == before.connections + 1
    relayed = after.relay_bytes_in - before.relay_bytes_in
    assert relayed == (sum(len(b"line %d\n" % i) for i in range(20)) + 4
                       if mode == "relay" else 0)


class Named(LineEcho):
    """Says which process it runs in, then echoes."""

    name = ""

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.write(self.name.encode() + b"\n")


def named(name):
    return type(name, (Named,), {"name": name})


def whose(s) -> bytes:
    return s.recv(10).strip()


@pytest.mark.parametrize("mode", MODES)
def test_least_connections_balancing(client, url, daemons, mode):
    port = free(PORTS)
    daemons(url, port, named("a"), mode=mode)
    daemons(url, port, named("b"), mode=mode)
    until(lambda: attached(client, port) == 2)
    socks = [connect(port) for _ in range(4)]
    names = [whose(s) for s in socks]
    assert sorted(names) == [b"a", b"a", b"b", b"b"], names

    for s, name in zip(socks, names, strict=True):
        if name == b"a":
            s.close()
    info = lambda: [i for i in client.listen.list() if i.port == port][0]  # noqa
    until(lambda: info().connections == 2)
    more = [connect(port) for _ in range(2)]
    assert [whose(s) for s in more] == [b"a", b"a"]
    for s in socks + more:
        s.close()


def spawn_daemon(url, module, port, mode):
    """A daemon in a process of its own, killable for real."""
    env = {**os.environ, "NUBIS_URL": url, "NUBIS_TOKEN": TOKENS["acme"]}
    code = (f"from nubis.services import {module}; "
            f"{module}.main(b'{port} {mode}')")
    return subprocess.Popen([sys.executable, "-c", code], env=env)


@pytest.mark.parametrize("mode", MODES)
def test_a_dead_listener_loses_its_connections_not_new_ones(kernel, mode):
    url = kernel.urls["zmq+ipc"]
    port = free(PORTS)
    with Client(url, TOKENS["acme"]) as client:
        client.listen.listen(port)
        procs = [spawn_daemon(url, "echo", port, mode) for _ in range(2)]
        try:
            until(lambda: attached(client, port) == 2, 15)
            socks = [connect(port) for _ in range(2)]
            assert all(ask(s, b"hi\n") == b"hi\n" for s in socks)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
            # One of the two connections was the dead process's.
            lost = [s for s in socks if closed_or_answers(s) == "closed"]
            assert len(lost) == 1
            for _ in range(4):
                with connect(port) as s:
                    assert ask(s, b"again\n") == b"again\n"
            until(lambda: attached(client, port) == 1)
        finally:
            for p in procs:
                p.kill()
                p.wait()
            client.listen.unlisten(port)


def closed_or_answers(s) -> str:
    try:
        s.sendall(b"ping\n")
        got = s.recv(100)
    except OSError:
        return "closed"
    return "answers" if got == b"ping\n" else "closed"


# -- robustness ---------------------------------------------------------------


def test_backlog_waits_then_refuses(client, url, daemons):
    port = client.listen.listen(free(PORTS), backlog=2, backlog_timeout=0.4)
    waiting = [connect(port) for _ in range(2)]
    assert refused(port)                # over the backlog: refused at once
    for s in waiting:
        s.sendall(b"early\n")
    daemons(url, port, mode="relay", listen=False)
    for s in waiting:
        assert s.recv(100) == b"early\n"
        s.close()

    port = client.listen.listen(free(PORTS), backlog_timeout=0.3)
    started = time.monotonic()
    assert refused(port)
    assert 0.25 < time.monotonic() - started < 2
    [info] = [i for i in client.listen.list() if i.port == port]
    assert info.refused == 1 and info.backlog == 0


@pytest.mark.parametrize("mode", MODES)
def test_idle_and_slow_sender_timeouts(client, url, daemons, mode):
    port = client.listen.listen(free(PORTS), idle_timeout=0.3,
                                slow_timeout=0.4, min_rate=1000)
    daemons(url, port, mode=mode, listen=False)
    with connect(port) as s:
        assert ask(s, b"hi\n") == b"hi\n"
        started = time.monotonic()
        assert closed(s)
        assert 0.25 < time.monotonic() - started < 2

    with connect(port) as s:            # slowloris: a byte every 0.1 s
        started = time.monotonic()
        with pytest.raises(OSError):
            for _ in range(40):
                s.sendall(b"x")
                time.sleep(0.1)
            s.recv(1) or _raise(ConnectionResetError())
        assert time.monotonic() - started < 3
    if mode == "relay":
        [info] = [i for i in client.listen.list() if i.port == port]
        assert info.timed_out == 2


def _raise(e):
    raise e


def test_connection_cap_of_the_tenant(kernel, small, daemons):
    port = small.listen.listen(free(SMALL_PORTS))
    daemons(kernel.urls["zmq+ipc"], port, tenant="small", listen=False)
    held = [connect(port) for _ in range(3)]
    assert all(ask(s, b"x\n") == b"x\n" for s in held)
    before = small.account.usage()[0].connections_refused
    assert refused(port)
    assert small.account.usage()[0].connections_refused == before + 1
    held.pop().close()
    until(lambda: echoes(port))         # room again, once one closed
    for s in held:
        s.close()


class Stalled(LineEcho):
    """Takes nothing in until told to; counts what it got."""

    transports = []

    def connection_made(self, transport):
        transport.pause_reading()
        self.got = 0
        self.transports.append((transport, self))

    def data_received(self, data):
        self.got += len(data)


def test_relay_flow_control_bounds_the_kernel_buffer(client, url, daemons):
    port = free(PORTS)
    daemon = daemons(url, port, Stalled, mode="relay")
    s = connect(port)
    s.setblocking(False)
    sent, chunk = 0, b"z" * 65536
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            time.sleep(0.05)
    transport, protocol = Stalled.transports[-1]
    held = sum(len(d) for d in transport._held if d)
    # The kernel reads at most its window (256 KiB) plus a read ahead of the
    # last credit; the rest waits in the peer's own TCP buffers.
    assert 0 < held <= 768 << 10, (held, sent)
    assert sent > held
    daemon.loop.call_soon_threadsafe(transport.resume_reading)
    s.setblocking(True)
    s.shutdown(socket.SHUT_WR)
    until(lambda: protocol.got == sent)
    s.close()


# -- example daemons as cloud processes ---------------------------------------


def source_of(module: str) -> str:
    with open(os.path.join(SERVICES, f"{module}.py")) as f:
        return f"# {uuid.uuid4().hex}\n{f.read()}"


def spawn_cloud(client, module, port, mode="handoff"):
    reply = client.spawn.spawn("main", source_of(module),
                               f"{port} {mode}".encode(), restart="on-failure")
    try:
        until(lambda: port in [i.port for i in client.listen.list()]
              and attached(client, port) >= 1, 15)
    except AssertionError:
        info = client.spawn.wait(reply.pid).process
        logs = b"".join(c.data for c in client.spawn.logs(reply.pid))
        raise AssertionError(f"{info.error} {logs[-2000:]!r}") from None
    return reply.pid


def test_echo_daemon_as_a_sandboxed_cloud_process(client):
    port = free(PORTS)
    pid = spawn_cloud(client, "echo", port)
    try:
        [info] = [i for i in client.listen.list() if i.port == port]
        assert info.attached[0].pid == pid
        assert info.attached[0].mode == 1
        with connect(port) as s:
            assert ask(s, b"from a sandbox\n") == b"from a sandbox\n"
    finally:
        client.spawn.kill(pid)
        client.listen.unlisten(port)


@pytest.fixture(scope="module")
def resp(kernel):
    port = free(PORTS)
    with Client(kernel.urls["zmq+ipc"], TOKENS["acme"]) as c:
        KEEP.add(port)
        pid = spawn_cloud(c, "resp", port)
        yield port
        c.spawn.kill(pid)
        c.listen.unlisten(port)


def test_resp_daemon_with_redis_py(resp, client, name):
    redis = pytest.importorskip("redis")
    r = redis.Redis(port=resp, socket_timeout=5, protocol=2)   # RESP2
    assert r.ping() is True
    assert r.set(f"{name}:a", b"1") is True and r.set(f"{name}:b", b"22")
    assert r.get(f"{name}:b") == b"22" and r.get(f"{name}:none") is None
    assert client.blob.get(f"{name}:a").data == b"1"     # keys are blobs
    assert r.exists(f"{name}:a", f"{name}:b", f"{name}:c") == 2
    assert sorted(r.keys(f"{name}:*")) == [f"{name}:a".encode(),
                                           f"{name}:b".encode()]
    assert r.delete(f"{name}:a", f"{name}:c") == 1
    assert r.keys(f"{name}:*") == [f"{name}:b".encode()]
    with pytest.raises(redis.ResponseError, match="prefix"):
        r.keys("a?c*")

    assert r.lpush(f"{name}:q", b"one", b"two") == 2
    assert r.llen(f"{name}:q") == 2
    assert client.queue.attributes(f"{name}.3aq").depth == 2   # lists: queues
    assert r.rpop(f"{name}:q") == b"one" and r.rpop(f"{name}:q") == b"two"
    assert r.rpop(f"{name}:q") is None and r.llen(f"{name}:q") == 0
    assert f"{name}:q".encode() in r.keys(f"{name}:*")
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("FLUSHALL")
    with pytest.raises(redis.ResponseError, match="wrong number"):
        r.execute_command("GET")
    pipe = r.pipeline(transaction=False)
    for i in range(20):
        pipe.set(f"{name}:p{i}", i)
        pipe.get(f"{name}:p{i}")
    assert pipe.execute()[1::2] == [str(i).encode() for i in range(20)]
    r.close()


def test_resp_daemon_under_redis_benchmark(resp):
    if shutil.which("redis-benchmark") is None:
        pytest.skip("redis-benchmark is not installed")
    run = subprocess.run(
        ["redis-benchmark", "-p", str(resp), "-t", "get,set", "-n", "2000",
         "-c", "10", "-q"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    rates = {line.split(":")[0]: line for line in run.stdout.splitlines()
             if "requests per second" in line}
    assert {"SET", "GET"} <= set(rates), run.stdout


def test_nubis_listen_ls(kernel, daemons):
    port = free(PORTS)
    daemons(kernel.urls["zmq+ipc"], port, mode="relay")
    run = subprocess.run(
        [sys.executable, "-m", "nubis.cli.main", "--url", kernel.urls["zmq+ipc"],
         "--token", TOKENS["acme"], "listen", "ls"],
        capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    [row] = [line for line in run.stdout.splitlines() if f":{port} " in line]
    assert row.split()[1:3] == ["1", "0"]
    assert "relay" in run.stdout and "client-" in run.stdout


def test_nubis_listen_run_spawns_supervised_daemons(kernel, client):
    port = free(PORTS)
    run = subprocess.run(
        [sys.executable, "-m", "nubis.cli.main", "--url", kernel.urls["zmq+ipc"],
         "--token", TOKENS["acme"], "listen", "run", "nubis.services.echo",
         "--port", str(port), "--processes", "2"],
        capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    pids = run.stdout.split()
    try:
        until(lambda: attached(client, port) == 2, 15)
        info = client.spawn.wait(pids[0]).process
        assert info.restart == 2                     # on-failure
        with connect(port) as s:
            assert ask(s, b"cli\n") == b"cli\n"
    finally:
        for pid in pids:
            client.spawn.kill(pid)
        client.listen.unlisten(port)
