"""Crash harness: kill -9 a journaling kernel under load, then check the history.

Producers, consumers and blob writers run over ZeroMQ and gRPC against a
kernel with a data folder, each keeping a history of what the kernel
acknowledged. A killer sends SIGKILL at random moments and boots the kernel
again on the same folder, `kills` times, then once more after the load
stops; the consumers drain the queue. The checker reports:

- lost: sends acknowledged and never delivered (must be 0 under always);
- resurrected: messages delivered again after their ack was acknowledged
  (must be 0 under always);
- duplicates: deliveries beyond the first (allowed: at-least-once);
- blobs missing or with another etag than the put acknowledged (must be 0);
- under everysec, how long before its kill the newest lost send was
  acknowledged (the loss window; about a second is expected).

Run: python -m nubis.bench.crash [--policy always] [--kills 20]
[--ops 100000]; it prints the report as JSON.
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from nubis.client import Client
from nubis.errors import NubisError

TOKEN = "crash-token-0123456789abcdef"
QUEUE = "crash"
LEASE_SECONDS = 5
CALL_TIMEOUT = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Kernel:
    """A kernel subprocess on fixed ports and a data folder, bootable again."""

    def __init__(self, folder: str, policy: str, compact_bytes: int = 64 << 20,
                 pure: bool = False):
        self.folder = folder
        self.zmq_port, self.grpc_port = _free_port(), _free_port()
        self.urls = (f"zmq+tcp://127.0.0.1:{self.zmq_port}",
                     f"grpc://127.0.0.1:{self.grpc_port}")
        self.config = os.path.join(folder, "kernel.toml")
        with open(self.config, "w") as f:
            f.write(f"""[kernel]
zmq = ["tcp://127.0.0.1:{self.zmq_port}"]
grpc = "127.0.0.1:{self.grpc_port}"
data_dir = "{folder}/data"
fsync = "{policy}"
journal_compact_bytes = {compact_bytes}
spawn = false

[tenants.crash]
token = "{TOKEN}"
quotas = {{ max_queue_depth = 10000000, max_bytes_stored = 4294967296 }}
""")
        self.env = {**os.environ, **({"NUBIS_PURE": "1"} if pure else {})}
        self.proc = None
        self.boots = 0
        self.log_path = os.path.join(folder, "kernel.log")

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nubis.cli.main", "kernel", "--config",
                 self.config], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.boots += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kernel exited; see {self.log_path}")
            try:
                with Client(self.urls[0], TOKEN, timeout=1) as c:
                    c.account.info()
                return
            except NubisError:
                time.sleep(0.05)
        raise RuntimeError(f"kernel did not start; see {self.log_path}")

    def kill(self) -> float:
        """SIGKILL; returns when it was sent."""
        at = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return at

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


class History:
    """What the kernel acknowledged, by whom and when (unix seconds)."""

    def __init__(self):
        self.sent: dict[bytes, float] = {}         # body -> acknowledged at
        self.deliveries: list[tuple[bytes, float]] = []
        self.acked: dict[bytes, float] = {}        # body -> ack acknowledged at
        self.puts: dict[str, tuple[str, float]] = {}   # key -> (etag, at)
        self.errors = 0

    @property
    def ops(self) -> int:
        return len(self.sent) + len(self.acked) + len(self.puts)


def _client(url: str):
    return Client(url, TOKEN, timeout=CALL_TIMEOUT)


def _loop(url: str, stop: threading.Event, history: History, step) -> None:
    """Run `step(client)` until stopped, opening a new client after an error."""
    while not stop.is_set():
        try:
            with _client(url) as c:
                while not stop.is_set():
                    step(c)
        except NubisError:
            history.errors += 1
            time.sleep(0.05)


def _producer(name: str, history: History):
    counter = iter(range(1 << 62))

    def step(c) -> None:
        body = f"{name}-{next(counter)}".encode()
        c.queue.send(QUEUE, body)
        history.sent[body] = time.time()
    return step


def _consumer(history: History):
    def step(c) -> None:
        got = c.queue.receive(QUEUE, 16, wait=0.2)
        now = time.time()
        history.deliveries += [(m.body, now) for m in got]
        if not got:
            return
        stale = set(c.queue.ack(QUEUE, *[m.receipt for m in got]))
        now = time.time()
        for m in got:
            if m.receipt not in stale:
                history.acked[m.body] = now
    return step


def _putter(name: str, history: History, rng: random.Random):
    counter = iter(range(1 << 62))

    def step(c) -> None:
        key = f"{name}/{next(counter)}"
        data = rng.randbytes(rng.choice((16, 300, 5000, 70_000)))
        info = c.blob.put(key, data)
        history.puts[key] = (info.etag, time.time())
    return step


def run(policy: str = "always", kills: int = 5, ops: int = 0,
        gap: tuple = (0.3, 1.5), producers: int = 4, consumers: int = 2,
        putters: int = 2, folder: str | None = None, seed: int = 0,
        compact_bytes: int = 64 << 20, pure: bool = False) -> dict:
    """Run the harness; returns the report (see the module docstring)."""
    rng = random.Random(seed)
    own = folder is None
    folder = folder or tempfile.mkdtemp(prefix="nubis-crash-")
    kernel = Kernel(folder, policy, compact_bytes, pure)
    kernel.start()
    with _client(kernel.urls[0]) as c:
        c.queue.create(QUEUE, lease=LEASE_SECONDS)

    history = History()
    stop_load, stop_drain = threading.Event(), threading.Event()
    threads = []
    for i in range(producers):
        threads.append((stop_load, kernel.urls[i % 2], _producer(f"p{i}", history)))
    for i in range(putters):
        threads.append((stop_load, kernel.urls[(i + 1) % 2],
                        _putter(f"b{i}", history, random.Random(seed + i))))
    for i in range(consumers):
        threads.append((stop_drain, kernel.urls[i % 2], _consumer(history)))
    running = [threading.Thread(target=_loop, args=(url, ev, history, step),
                                daemon=True) for ev, url, step in threads]
    for t in running:
        t.start()

    killed_at = []
    started = time.monotonic()
    while len(killed_at) < kills or history.ops < ops:
        time.sleep(rng.uniform(*gap))
        killed_at.append(kernel.kill())
        kernel.start()
    stop_load.set()
    killed_at.append(kernel.kill())     # one more, with the load stopped
    kernel.start()
    load_seconds = time.monotonic() - started

    _drain(kernel, history)
    stop_drain.set()
    for t in running:
        t.join(timeout=10)
    report = _check(kernel, history, killed_at, policy)
    report.update(load_seconds=round(load_seconds, 1), folder=folder)
    kernel.stop()
    if own and not report["lost"] and not report["blobs_bad"]:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return report


def _drain(kernel: Kernel, history: History, quiet: float = 1.5) -> None:
    """Wait until the queue stays empty, with nothing leased, for `quiet` s."""
    calm_since = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with _client(kernel.urls[1]) as c:
            a = c.queue.attributes(QUEUE)
        if a.depth or a.in_flight or a.delayed:
            calm_since = None
        elif calm_since is None:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since > quiet:
            return
        time.sleep(0.2)
    raise RuntimeError("the queue did not drain in 120 s")


def _check(kernel: Kernel, history: History, killed_at: list, policy: str) -> dict:
    delivered: dict[bytes, list[float]] = {}
    for body, at in history.deliveries:
        delivered.setdefault(body, []).append(at)
    lost = [b for b in history.sent if b not in delivered]
    resurrected = sum(1 for b, at in history.acked.items()
                      if any(t > at for t in delivered.get(b, ())))
    duplicates = len(history.deliveries) - len(delivered)

    bad = []
    with _client(kernel.urls[0]) as c:
        for key, (etag, at) in history.puts.items():
            try:
                if c.blob.head(key).etag != etag:
                    bad.append(at)
            except NubisError:
                bad.append(at)
    # Under everysec: how long before the kill that followed it was the
    # newest lost send or put acknowledged.
    window = 0.0
    for at in [history.sent[b] for b in lost] + bad:
        kill = min((k for k in killed_at if k >= at), default=at)
        window = max(window, kill - at)
    return {
        "policy": policy, "kills": len(killed_at), "boots": kernel.boots,
        "acknowledged_ops": history.ops, "sends": len(history.sent),
        "acks": len(history.acked), "puts": len(history.puts),
        "lost": len(lost), "resurrected": resurrected,
        "duplicates": duplicates, "blobs_bad": len(bad),
        "loss_window_seconds": round(window, 3),
        "client_errors": history.errors,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m nubis.bench.crash",
                                description=__doc__.split("\n")[0])
    p.add_argument("--policy", default="always",
                   choices=("always", "everysec"))
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--ops", type=int, default=100_000,
                   help="keep killing until this many acknowledged operations")
    p.add_argument("--producers", type=int, default=6)
    p.add_argument("--consumers", type=int, default=3)
    p.add_argument("--putters", type=int, default=2)
    p.add_argument("--compact-bytes", type=int, default=16 << 20)
    p.add_argument("--pure", action="store_true",
                   help="NUBIS_PURE=1 in the kernel")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    report = run(a.policy, a.kills, a.ops, producers=a.producers,
                 consumers=a.consumers, putters=a.putters, seed=a.seed,
                 compact_bytes=a.compact_bytes, pure=a.pure)
    print(json.dumps(report, indent=2))
    if a.policy == "always" and (report["lost"] or report["blobs_bad"]
                                 or report["resurrected"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
