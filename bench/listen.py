"""LISTEN benchmarks: echo round trips through handoff and relay against a
bare uvloop echo server, and the RESP daemon against redis-server.

    python -m nubis.bench.listen [--rounds 20000] [--size 64] [--json]

Servers, each a process of its own on loopback: a kernel (ZeroMQ over ipc,
no gRPC), a bare uvloop echo server, an echo daemon attached in handoff
mode, one in relay mode, the RESP daemon (handoff) and redis-server. The
echo client is one blocking socket doing one round trip at a time of
`size` bytes; rounds go to the three echo servers in turn, in slices, so
drift in the machine's load falls on all three alike. redis-benchmark
drives GET and SET on both RESP servers with the same options.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOKEN = "nubis-bench-listen-token-0123456789"
PORT_COUNT = 5
SLICE = 500

BARE = """
import asyncio, sys, uvloop
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
uvloop.run(main())
"""

DAEMON = """
import asyncio, sys
from nubis.services import listen
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
listen.run(Echo, int(sys.argv[1]), mode=sys.argv[2])
"""

KERNEL = """
import logging, sys
from nubis import config, server
logging.basicConfig(level=logging.WARNING)
server.run(config.load(sys.argv[1]))
"""

RESP = "from nubis.services import resp; import sys; resp.main(sys.argv[1].encode())"


class Servers:
    """The benchmark's server processes, stopped together."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="nubis-bl-")
        self.procs = []
        self.url = f"zmq+ipc://{self.folder}/kernel.sock"
        self.env = {**os.environ, "NUBIS_URL": self.url, "NUBIS_TOKEN": TOKEN}

    def start(self, args, log_name: str):
        log = open(os.path.join(self.folder, log_name), "w")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                env=self.env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def kernel(self, base: int) -> None:
        config = os.path.join(self.folder, "nubis.toml")
        with open(config, "w") as f:
            f.write(f'[kernel]\nzmq = ["ipc://{self.folder}/kernel.sock"]\n'
                    f'grpc = ""\nspawn = false\n'
                    f'[tenants.bench]\ntoken = "{TOKEN}"\n'
                    f'ports = ["{base}-{base + PORT_COUNT - 1}"]\n'
                    f'[tenants.bench.quotas]\nmax_connections = 4096\n')
        self.start([sys.executable, "-c", KERNEL, config], "kernel.log")
        wait_for(lambda: os.path.exists(f"{self.folder}/kernel.sock"))

    def python(self, code: str, *args: str, name: str) -> None:
        self.start([sys.executable, "-c", code, *args], f"{name}.log")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if os.environ.get("NUBIS_BENCH_KEEP") != "1":
            shutil.rmtree(self.folder, ignore_errors=True)


def free_ports() -> int:
    """The first of PORT_COUNT free loopback ports in a row."""
    for base in range(23000, 30000, PORT_COUNT):
        try:
            for port in range(base, base + PORT_COUNT):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for the benchmark")


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError("a benchmark server did not start")


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(1)
            s.sendall(b"ping\n")
            return s.recv(16) == b"ping\n"
    except OSError:
        return False


def echo_rounds(ports: dict, rounds: int, size: int) -> dict:
    """Round-trip times in ns per server, interleaved in slices."""
    payload = b"x" * (size - 1) + b"\n"
    socks = {name: socket.create_connection(("127.0.0.1", port))
             for name, port in ports.items()}
    for s in socks.values():
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(200):                       # warm up
            _round_trip(s, payload)
    times = {name: [] for name in socks}
    clock = time.perf_counter_ns
    for _ in range(max(1, rounds // SLICE)):
        for name, s in socks.items():
            out = times[name]
            for _ in range(SLICE):
                started = clock()
                _round_trip(s, payload)
                out.append(clock() - started)
    for s in socks.values():
        s.close()
    return times


def _round_trip(s, payload: bytes) -> None:
    s.sendall(payload)
    got = 0
    while got < len(payload):
        got += len(s.recv(65536))


def percentiles(values: list) -> dict:
    ordered = sorted(values)

    def at(p):
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] / 1e3

    return {"p50_us": at(50), "p99_us": at(99), "p999_us": at(99.9),
            "max_us": ordered[-1] / 1e3}


def redis_benchmark(port: int, requests: int, clients: int) -> dict:
    run = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-t", "get,set", "-n",
         str(requests), "-c", str(clients), "-q"],
        capture_output=True, text=True, timeout=300)
    rates = {}
    for line in run.stdout.replace("\r", "\n").splitlines():
        m = re.match(r"(\w+): ([\d.]+) requests per second", line.strip())
        if m:
            rates[m.group(1)] = float(m.group(2))
    return rates


def run(rounds: int, size: int, requests: int, clients: int) -> dict:
    servers = Servers()
    base = free_ports()
    ports = {"bare": base, "handoff": base + 1, "relay": base + 2}
    result = {"rounds": rounds, "size": size}
    try:
        servers.kernel(base)
        servers.python(BARE, str(ports["bare"]), name="bare")
        for mode in ("handoff", "relay"):
            servers.python(DAEMON, str(ports[mode]), mode, name=mode)
        for port in ports.values():
            wait_for(lambda p=port: answers(p))
        times = echo_rounds(ports, rounds, size)
        echo = {name: percentiles(t) for name, t in times.items()}
        bare = echo["bare"]
        for name in ("handoff", "relay"):
            for key in ("p50_us", "p99_us", "p999_us"):
                echo[name][key.replace("_us", "_ratio")] = echo[name][key] / bare[key]
        result["echo"] = echo
        result["call_floor"] = _call_floor(servers.url, min(rounds, 5000))
        if shutil.which("redis-benchmark") and shutil.which("redis-server"):
            result["resp"] = _resp(servers, base + 3, base + 4, requests, clients)
    finally:
        servers.stop()
    return result


def _call_floor(url: str, calls: int) -> dict:
    """An async unary call's round trip (ListListeners) over the same
    transport: the floor of a relayed round trip, which makes two hops."""
    import asyncio

    from nubis.client import AsyncClient

    async def measure():
        times = []
        async with AsyncClient(url, TOKEN) as c:
            for _ in range(calls):
                started = time.perf_counter_ns()
                await c.listen.list()
                times.append(time.perf_counter_ns() - started)
        return times

    return percentiles(asyncio.run(measure()))


def _resp(servers, daemon_port: int, redis_port: int, requests: int,
          clients: int) -> dict:
    servers.python(RESP, f"{daemon_port} handoff", name="resp")
    servers.start(["redis-server", "--port", str(redis_port), "--save", "",
                   "--appendonly", "no"], "redis.log")
    wait_for(lambda: _pings(daemon_port) and _pings(redis_port))
    nubis = redis_benchmark(daemon_port, requests, clients)
    redis = redis_benchmark(redis_port, requests, clients)
    return {"requests": requests, "clients": clients, "nubis_rps": nubis,
            "redis_rps": redis,
            "ratio": {k: nubis[k] / redis[k] for k in nubis if redis.get(k)}}


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(1)
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16) == b"+PONG\r\n"
    except OSError:
        return False


def report(result: dict) -> str:
    lines = [f"echo round trip, {result['size']} B, one in flight, "
             f"{result['rounds']} rounds each (us; ratio to bare uvloop)"]
    for name, row in result["echo"].items():
        ratio = (f"  x{row['p50_ratio']:.2f} p50  x{row['p99_ratio']:.2f} p99"
                 if "p50_ratio" in row else "")
        lines.append(f"  {name:8} p50 {row['p50_us']:7.1f}  p99 "
                     f"{row['p99_us']:7.1f}  p99.9 {row['p999_us']:7.1f}  max "
                     f"{row['max_us']:8.1f}{ratio}")
    floor = result.get("call_floor")
    if floor:
        lines.append(f"  (an async ZeroMQ call, for reference: p50 "
                     f"{floor['p50_us']:.1f}  p99 {floor['p99_us']:.1f})")
    resp = result.get("resp")
    if resp:
        lines.append(f"redis-benchmark -t get,set -n {resp['requests']} -c "
                     f"{resp['clients']} (requests/s)")
        for op in ("GET", "SET"):
            lines.append(f"  {op}: nubis resp {resp['nubis_rps'].get(op, 0):9.0f}"
                         f"  redis-server {resp['redis_rps'].get(op, 0):9.0f}"
                         f"  ratio {resp['ratio'].get(op, 0):.3f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.rounds, args.size, args.requests, args.clients)
    print(json.dumps(result, indent=2) if args.json else report(result))


if __name__ == "__main__":
    main()
