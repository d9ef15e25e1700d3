"""The server processes of a run: a kernel, the echo floors and the peers.

Every server is a child process on loopback or under a private temporary
folder, started in a session of its own so that a Ctrl-C at the terminal
reaches only the suite, which then stops them in order. `Fleet` is a
context manager: leaving it, normally or by an exception, stops every
process it started and removes the folder.
"""

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

log = logging.getLogger("nubis.bench.servers")

TOKEN = "nubis-bench-token-0123456789abcdef"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
READY_SECONDS = 30.0

INSTALL = {
    "redis-server": "apt-get install redis-server",
    "nats-server": "apt-get install nats-server, or a release from "
                   "https://github.com/nats-io/nats-server/releases",
    "redis": "pip install 'redis[hiredis]' (or 'nubis[bench]')",
    "nats": "pip install nats-py (or 'nubis[bench]')",
}


def which(name: str) -> str | None:
    """The path of a program, looking in the sbin folders too."""
    return shutil.which(name) or shutil.which(name, path=SBIN)


def peer_notes() -> dict[str, str | None]:
    """For each peer, None when it can run, else a note on how to get it."""
    notes = {}
    for system, binary, module in (("redis", "redis-server", "redis"),
                                   ("nats", "nats-server", "nats")):
        notes[system] = None
        if which(binary) is None:
            notes[system] = (f"{system} skipped: {binary} not found; install "
                             f"it with {INSTALL[binary]}")
            continue
        try:
            __import__(module)
        except ImportError:
            notes[system] = (f"{system} skipped: the {module} package is "
                             f"missing; install it with {INSTALL[module]}")
    return notes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A child process the suite started, with its log file."""

    def __init__(self, name: str, argv: list[str], folder: str):
        self.name = name
        self.log_path = os.path.join(folder, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with status "
                               f"{self.proc.returncode}: {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        with open(self.log_path) as f:
            return "".join(f.readlines()[-lines:]).strip()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop on SIGTERM; killing it", self.name)
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Fleet(contextlib.ExitStack):
    """Starts servers and stops them all when the `with` block ends."""

    def __init__(self):
        super().__init__()
        # Short: a unix socket path must fit in about 100 bytes.
        self.folder = tempfile.mkdtemp(prefix="nubis-bench-")
        self.callback(shutil.rmtree, self.folder, True)
        self.servers: dict[str, Server] = {}

    def start(self, name: str, argv: list[str]) -> Server:
        server = Server(name, argv, self.folder)
        self.servers[name] = server
        self.callback(server.stop)
        return server

    def stop(self, name: str) -> None:
        self.servers.pop(name).stop()

    def wait(self, server: Server, probe) -> None:
        """Call `probe` until it returns without error, or give up."""
        deadline = time.monotonic() + READY_SECONDS
        while True:
            server.check()
            try:
                probe()
                return
            except Exception as e:  # noqa: BLE001 - not ready yet, any way
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server.name} did not start: {e}; "
                                       f"log: {server.tail()}") from e
                time.sleep(0.1)

    # -- the kernel ---------------------------------------------------------

    def kernel(self, name: str = "kernel", grpc: bool = True) -> dict:
        """Start a kernel with one tenant; returns its URLs and pid."""
        folder = os.path.join(self.folder, name)
        os.makedirs(folder, mode=0o700)
        zmq_port, grpc_port = free_port(), free_port()
        urls = {"zmq+ipc": f"zmq+ipc://{folder}/k.sock",
                "zmq+tcp": f"zmq+tcp://127.0.0.1:{zmq_port}"}
        if grpc:
            urls["grpc"] = f"grpc://127.0.0.1:{grpc_port}"
        config = os.path.join(folder, "nubis.toml")
        with open(config, "w") as f:
            f.write(kernel_config(folder, zmq_port, grpc_port if grpc else 0))
        server = self.start(name, [sys.executable, "-m", "nubis.cli.main",
                                   "kernel", "--config", config])

        from nubis.client import Client

        def probe():
            for url in urls.values():
                with Client(url, TOKEN, timeout=2) as c:
                    c.account.info()

        self.wait(server, probe)
        return {"urls": urls, "pid": server.pid, "token": TOKEN}

    # -- the floors -----------------------------------------------------------

    def zmq_echo(self) -> dict:
        import zmq

        ipc = f"ipc://{self.folder}/echo.sock"
        tcp = f"tcp://127.0.0.1:{free_port()}"
        server = self.start("pyzmq-echo", _echo("zmq", ipc, tcp))

        def probe():
            for endpoint in (ipc, tcp):
                sock = zmq.Context.instance().socket(zmq.DEALER)
                sock.linger = 0
                try:
                    sock.connect(endpoint)
                    sock.send_multipart([b"h" * 12, b"ping"])
                    if not sock.poll(500):
                        raise TimeoutError(f"no echo from {endpoint}")
                    sock.recv_multipart()
                finally:
                    sock.close(0)

        self.wait(server, probe)
        return {"zmq+ipc": ipc, "zmq+tcp": tcp}

    def grpc_echo(self) -> str:
        import grpc

        from nubis.bench.echo import GRPC_METHOD

        address = f"127.0.0.1:{free_port()}"
        server = self.start("grpcio-echo", _echo("grpc", address))

        def probe():
            with grpc.insecure_channel(address) as channel:
                channel.unary_unary(GRPC_METHOD)(b"ping", timeout=1)

        self.wait(server, probe)
        return address

    # -- the peers ------------------------------------------------------------

    def redis(self) -> dict:
        import redis

        port = free_port()
        server = self.start("redis", [
            which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self.folder,
            "--protected-mode", "no", "--unixsocket", ""])
        self.wait(server, lambda: redis.Redis(port=port).ping())
        return {"host": "127.0.0.1", "port": port,
                "version": redis.Redis(port=port).info("server")["redis_version"]}

    def nats(self) -> dict:
        port = free_port()
        config = os.path.join(self.folder, "nats.conf")
        with open(config, "w") as f:
            f.write(f"listen: 127.0.0.1:{port}\nmax_payload: 8388608\n"
                    f"jetstream {{ store_dir: \"{self.folder}/js\" }}\n")
        server = self.start("nats", [which("nats-server"), "-c", config])
        url = f"nats://127.0.0.1:{port}"
        self.wait(server, lambda: socket.create_connection(
            ("127.0.0.1", port), timeout=1).close())
        responder = self.start("nats-responder",
                               _echo("nats", url, NATS_SUBJECT))
        self.wait(responder, lambda: _nats_probe(url))
        version = subprocess.run([which("nats-server"), "--version"],
                                 capture_output=True, text=True).stdout
        version = version.strip().removeprefix("nats-server: ")
        return {"url": url, "subject": NATS_SUBJECT, "version": version}


NATS_SUBJECT = "nubis.bench.echo"


def _echo(*args: str) -> list[str]:
    return [sys.executable, "-m", "nubis.bench.echo", *args]


def _nats_probe(url: str) -> None:
    import asyncio

    import nats

    async def ask():
        nc = await nats.connect(url, max_reconnect_attempts=0,
                                allow_reconnect=False)
        try:
            await nc.request(NATS_SUBJECT, b"ping", timeout=1)
        finally:
            await nc.close()

    asyncio.run(ask())


def kernel_config(folder: str, zmq_port: int, grpc_port: int) -> str:
    """A kernel with one tenant whose quotas fit every case of the suite."""
    grpc = f"127.0.0.1:{grpc_port}" if grpc_port else ""
    return f"""\
[kernel]
zmq = ["ipc://{folder}/k.sock", "tcp://127.0.0.1:{zmq_port}"]
grpc = "{grpc}"
max_message_bytes = 16777216
log_level = "WARNING"

[tenants.bench]
token = "{TOKEN}"

[tenants.bench.quotas]
max_bytes_stored = 17179869184
max_queues = 100000
max_message_bytes = 8388608
max_queue_depth = 8000000
max_blob_bytes = 8388608
"""
