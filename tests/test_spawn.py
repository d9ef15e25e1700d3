"""SPAWN through the public client, over every transport: cloud processes,
their failures of every kind, retries, warm reuse and the sandbox."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from nubis.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from nubis.v1 import spawn_pb2 as pb

from .conftest import TOKENS

S = pb.ProcessState
MiB = 1 << 20


def unique(source: str) -> str:
    """Source no other test uses: its own warm pool."""
    return f"# {uuid.uuid4().hex}\n{source}"


def run(client, source, args=b"", entry="main", wait=10, **options):
    reply = client.spawn.spawn(entry, source, args, **options)
    done = client.spawn.wait(reply.pid, wait)
    assert done.ended, done
    return done.process


def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def running(client, pid):
    info = client.spawn.wait(pid).process
    return info if info.state == S.PROCESS_STATE_RUNNING and info.os_pid else None


ECHO = """
import sys
def main(args):
    print("out", len(args))
    print("err", file=sys.stderr)
    return args[::-1]
"""


def test_spawn_wait_result_and_logs(client):
    info = run(client, ECHO, b"abc")
    assert info.state == S.PROCESS_STATE_SUCCEEDED
    assert (info.result, info.exit_code, info.attempts) == (b"cba", 0, 1)
    assert info.ended_unix_ms >= info.started_unix_ms >= info.created_unix_ms
    assert info.usage.wall_seconds > 0 and info.usage.peak_memory_bytes > 0
    chunks = list(client.spawn.logs(info.pid))
    by_stream = {c.stream: c.data for c in chunks}
    assert by_stream[pb.LOG_STREAM_STDOUT] == b"out 3\n"
    assert by_stream[pb.LOG_STREAM_STDERR] == b"err\n"
    assert chunks[-1].offset == len(b"out 3\nerr\n")
    assert b"".join(c.data for c in client.spawn.logs(info.pid, offset=6)) == b"err\n"


def test_logs_follow_while_running(client):
    source = unique("""
import time
def main(args):
    for i in range(3):
        print("line", i)
        time.sleep(0.05)
""")
    reply = client.spawn.spawn("main", source)
    data = b"".join(c.data for c in client.spawn.logs(reply.pid, follow=True))
    assert data == b"line 0\nline 1\nline 2\n"
    assert client.spawn.wait(reply.pid).ended


def test_exception_is_retried_then_failed_and_listed(client):
    source = "def main(args):\n    raise ValueError('bad input ' + args.decode())\n"
    info = run(client, source, b"x", attempts=3, backoff=(0.01, 0.02))
    assert info.state == S.PROCESS_STATE_FAILED
    assert info.attempts == 3 and info.exit_code == 1
    assert info.error == "ValueError: bad input x"
    assert "Traceback" in info.traceback and "line 2, in main" in info.traceback
    failed = client.spawn.list(S.PROCESS_STATE_FAILED).processes
    assert info.pid in [p.pid for p in failed]
    assert all(p.state == S.PROCESS_STATE_FAILED for p in failed)


def test_retry_until_success_uses_the_bound_client(client, name):
    source = f"""
def main(args):
    try:
        n = int(client.blob.get("{name}").data)
    except Exception:
        n = 0
    client.blob.put("{name}", str(n + 1).encode())
    if n < 2:
        raise RuntimeError("attempt %d" % n)
    return b"done after %d" % n
"""
    info = run(client, source, attempts=-1, backoff=(0.01, 0.05))
    assert info.state == S.PROCESS_STATE_SUCCEEDED
    assert (info.attempts, info.result) == (3, b"done after 2")


def test_sigkill_mid_run_is_retried_on_a_fresh_worker(client, name):
    source = f"""
import time
def main(args):
    try:
        client.blob.head("{name}")
        return b"second"
    except Exception:
        client.blob.put("{name}", b"1")
        time.sleep(30)
"""
    reply = client.spawn.spawn("main", source, attempts=2, backoff=(0.01, 0.01))
    first = until(lambda: running(client, reply.pid))
    until(lambda: _has_blob(client, name))
    os.kill(first.os_pid, signal.SIGKILL)
    info = client.spawn.wait(reply.pid, 10).process
    assert info.state == S.PROCESS_STATE_SUCCEEDED
    assert (info.attempts, info.result) == (2, b"second")
    assert info.error == "worker killed by SIGKILL"


def _has_blob(client, key):
    try:
        client.blob.head(key)
        return True
    except NotFound:
        return False


def test_os_exit_fails_with_its_status(client):
    info = run(client, "import os\ndef main(args):\n    os._exit(3)\n")
    assert info.state == S.PROCESS_STATE_FAILED
    assert info.exit_code == 3
    assert info.error == "worker exited with status 3"


def test_infinite_loop_times_out(client):
    info = run(client, "def main(args):\n    while True:\n        pass\n",
               timeout_s=0.3, attempts=2, backoff=(0.01, 0.01))
    assert info.state == S.PROCESS_STATE_FAILED
    assert info.attempts == 2
    assert info.error == "timed out after 0.3 s"
    assert info.exit_code == -signal.SIGKILL
    assert info.usage.cpu_user_seconds > 0.2


def test_cpu_limit_kills(client):
    info = run(client, unique("def main(args):\n    while True:\n        pass\n"),
               cpu_seconds=1)
    assert info.state == S.PROCESS_STATE_FAILED
    assert "SIGXCPU" in info.error or "SIGKILL" in info.error


def test_memory_bomb_hits_the_memory_limit(client):
    source = unique("""
def main(args):
    hoard = []
    while True:
        hoard.append(bytearray(8 << 20))
""")
    info = run(client, source, memory_bytes=256 * MiB)
    assert info.state == S.PROCESS_STATE_FAILED
    assert info.error.startswith("MemoryError")
    assert info.usage.peak_memory_bytes < 256 * MiB
    # The next process gets a fresh worker and runs normally.
    assert run(client, ECHO, b"ok", memory_bytes=256 * MiB).result == b"ko"


def test_fork_bomb_hits_the_process_limit(client):
    source = unique("""
import os, time
def main(args):
    while True:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
""")
    info = run(client, source, max_processes=16)
    assert info.state == S.PROCESS_STATE_FAILED
    assert "BlockingIOError" in info.error or "Resource" in info.error


def test_idempotency_key_returns_the_same_process(client, name):
    first = client.spawn.spawn("main", ECHO, b"1", idempotency_key=name)
    again = client.spawn.spawn("main", ECHO, b"2", idempotency_key=name)
    assert again.pid == first.pid and again.existing and not first.existing
    assert client.spawn.wait(first.pid, 5).process.result == b"1"


def test_warm_versus_cold(client):
    source = unique(ECHO)
    first = client.spawn.spawn("main", source, b"a")
    client.spawn.wait(first.pid, 5)
    second = client.spawn.spawn("main", source, b"b")
    assert (first.warm, second.warm) == (False, True)
    assert client.spawn.wait(second.pid, 5).process.warm


def test_set_warm_pool_keeps_workers_ready(client):
    source = unique(ECHO)
    client.spawn.warm_pool("main", source, 2)
    time.sleep(0.5)
    replies = [client.spawn.spawn("main", source, b"x") for _ in range(2)]
    assert all(r.warm for r in replies)
    client.spawn.warm_pool("main", source, 0)


def test_kill_stops_a_process_and_its_retries(client):
    reply = client.spawn.spawn("main", unique(
        "import time\ndef main(args):\n    time.sleep(30)\n"), attempts=5)
    until(lambda: running(client, reply.pid))
    client.spawn.kill(reply.pid)
    info = client.spawn.wait(reply.pid, 5).process
    assert info.state == S.PROCESS_STATE_KILLED and info.attempts == 1
    assert info.exit_code == -signal.SIGTERM
    with pytest.raises(FailedPrecondition, match=reply.pid):
        client.spawn.kill(reply.pid)


def test_daemon_restarts_with_crash_loop_backoff(client):
    reply = client.spawn.spawn("main", "def main(args):\n    raise SystemExit(2)\n",
                               restart="on-failure", backoff=(0.01, 0.04))
    until(lambda: client.spawn.wait(reply.pid).process.attempts >= 4)
    info = client.spawn.wait(reply.pid).process
    assert info.state != S.PROCESS_STATE_FAILED
    assert info.restart == pb.RESTART_POLICY_ON_FAILURE and info.exit_code == 2
    client.spawn.kill(reply.pid)
    assert client.spawn.wait(reply.pid, 5).process.state == S.PROCESS_STATE_KILLED


def test_concurrency_limit_per_executable(client):
    source = unique("import time\ndef main(args):\n    time.sleep(0.15)\n")
    name = f"one-at-a-time-{uuid.uuid4().hex[:6]}"
    pids = [client.spawn.spawn("main", source, name=name,
                               max_concurrency=1).pid for _ in range(3)]
    states = [client.spawn.wait(p).process.state for p in pids]
    assert states.count(S.PROCESS_STATE_RUNNING) == 1
    assert states.count(S.PROCESS_STATE_PENDING) == 2
    for pid in pids:
        assert client.spawn.wait(pid, 5).process.state == S.PROCESS_STATE_SUCCEEDED


def test_leases_of_a_dead_process_are_released_at_once(client, name):
    client.queue.create(name)
    client.queue.send(name, b"job")
    source = f"""
import time
def main(args):
    client.queue.receive("{name}", lease=60)
    time.sleep(30)
"""
    reply = client.spawn.spawn("main", unique(source))
    info = until(lambda: running(client, reply.pid))
    until(lambda: client.queue.attributes(name).in_flight == 1)
    os.kill(info.os_pid, signal.SIGKILL)
    [again] = client.queue.receive(name, wait=3)
    assert again.body == b"job" and again.receive_count == 2


def test_accounting(client):
    source = unique("""
import time
def main(args):
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
""")
    before = client.account.usage()[0]
    info = run(client, source)
    assert info.usage.cpu_user_seconds + info.usage.cpu_system_seconds >= 0.1
    after = client.account.usage()[0]
    assert after.processes == before.processes + 1
    assert after.cpu_user_seconds > before.cpu_user_seconds


ISOLATION = """
import os, socket
def main(args):
    config, runtime = args.decode().split("\\n")
    found = []
    try:
        socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), 1)
        found.append("tcp connected")
    except OSError:
        pass
    try:
        client.blob.get(os.environ["KEY"])
        found.append("other tenant's blob read")
    except Exception as e:
        if type(e).__name__ != "NotFound":
            found.append(repr(e))
    for path in (config, runtime):
        try:
            open(path).read() if path == config else os.listdir(path)
            found.append(path + " readable")
        except PermissionError:
            pass
    return "; ".join(found) or "isolated"
"""


def test_isolation_probes(client, other, kernel, name):
    other.blob.put(name, b"secret")
    args = f"{kernel.config}\n{kernel.folder}".encode()
    info = run(client, unique(ISOLATION), args,
               env={"PORT": str(kernel.grpc_port), "KEY": name})
    assert info.result == b"isolated", info.error + info.traceback


def test_bad_input_names_the_value(client, small, name):
    with pytest.raises(NotFound, match="p999999"):
        client.spawn.wait("p999999")
    with pytest.raises(NotFound, match="nope"):
        client.spawn.kill("nope")
    with pytest.raises(NotFound, match="p999999"):
        list(client.spawn.logs("p999999"))
    with pytest.raises(InvalidArgument, match="'not a name'"):
        client.spawn.spawn("not a name", ECHO)
    with pytest.raises(InvalidArgument, match="'absent' is not defined"):
        client.spawn.spawn("absent", ECHO)
    with pytest.raises(InvalidArgument, match="line 2"):
        client.spawn.spawn("main", "x = 1\ndef main(:\n")
    with pytest.raises(NotFound, match=name):
        client.spawn.spawn("main", blob_key=name)
    with pytest.raises(InvalidArgument, match="attempts -5"):
        client.spawn.spawn("main", ECHO, attempts=-5)
    reply = client.spawn.spawn("main", ECHO)
    with pytest.raises(InvalidArgument, match="signal 999"):
        client.spawn.kill(reply.pid, 999)
    pids = [small.spawn.spawn("main", "import time\ndef main(a):\n"
                              "    time.sleep(5)\n").pid for _ in range(2)]
    with pytest.raises(ResourceExhausted, match="max_processes 2"):
        small.spawn.spawn("main", ECHO)
    for pid in pids:
        small.spawn.kill(pid, signal.SIGKILL)
        small.spawn.wait(pid, 5)


def test_source_from_a_blob(client, name):
    client.blob.put(name, ECHO.encode())
    info = run(client, None, b"blob", blob_key=name)
    assert info.result == b"bolb"


def test_cli_spawn_ps_logs_wait_kill(kernel, tmp_path):
    path = tmp_path / "job.py"
    path.write_text(ECHO)
    base = [sys.executable, "-m", "nubis.cli.main", "--url",
            kernel.urls["zmq+ipc"], "--token", TOKENS["acme"]]

    def nubis(*args, status=0):
        out = subprocess.run(base + list(args), capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == status, out.stderr
        return out.stdout

    assert nubis("spawn", f"{path}:main", "hello", "--wait").strip() == "olleh"
    pid = nubis("spawn", f"{path}:main", "abc").split()[0]
    assert "cba" in nubis("wait", pid)
    assert nubis("logs", pid) == "out 3\n"    # stderr goes to stderr
    assert pid in nubis("ps")
    sleeper = tmp_path / "sleep.py"
    sleeper.write_text("import time\ndef main(args):\n    time.sleep(30)\n")
    pid = nubis("spawn", f"{sleeper}:main").split()[0]
    nubis("kill", pid)
    assert "KILLED" in nubis("wait", pid, "--timeout", "5", status=1)
