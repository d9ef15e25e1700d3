"""The zygote: a pre-loaded Python process that forks workers for the kernel.

Theory of operation. The kernel runs an event loop and libzmq and gRPC
threads, so it never forks; at boot it starts this process instead, which
imports the client library, zmq and protobuf once and then forks a worker
per request, so a worker starts without paying for interpreter start-up.
The two talk over a unix SOCK_SEQPACKET socket pair: each packet is one
JSON message, and packet boundaries make a length prefix unnecessary. A
fork request carries three file descriptors (SCM_RIGHTS): the worker's end
of its channel to the kernel and the write ends of its stdout and stderr
pipes; the kernel keeps the other ends, so task traffic and output never
pass through here. The zygote is a child subreaper: it reaps every worker
and every orphan a worker leaves, and reports each worker's exit status and
rusage (os.wait4) to the kernel. It dies with the kernel (PDEATHSIG) and
kills its workers when the kernel's socket closes.

Messages, kernel to zygote: {"op": "fork", "wid", "spec"} with the fds.
Zygote to kernel: {"op": "ready", "probe"}, {"op": "forked", "wid", "pid"},
{"op": "fork_failed", "wid", "error"}, {"op": "exit", "wid", "pid",
"status", "utime", "stime", "maxrss"}.
"""

import importlib
import json
import logging
import os
import select
import signal
import socket
import sys

log = logging.getLogger("nubis.zygote")


# Imported once here, so workers share them and need not read them again:
# under a tenant's user id the interpreter's own files may be unreadable.
PRELOAD = (
    "asyncio", "base64", "collections", "concurrent.futures", "contextlib",
    "csv", "dataclasses", "datetime", "decimal", "encodings.idna", "fractions",
    "functools", "gzip", "hashlib", "heapq", "hmac", "html", "http.client",
    "inspect", "io", "itertools", "json", "logging", "math", "operator",
    "pathlib", "pickle", "random", "re", "secrets", "shutil", "socket",
    "statistics", "string", "struct", "subprocess", "tempfile", "textwrap",
    "threading", "time", "traceback", "typing", "urllib.parse", "uuid", "zlib",
    "zoneinfo", "google.protobuf", "zmq", "nubis.client", "nubis.client.zmq",
    "nubis.proc.worker",
)


def _preload(extra=()) -> None:
    for name in (*PRELOAD, *extra):
        try:
            importlib.import_module(name)
        except ImportError as e:
            log.info("zygote: cannot preload %s: %s", name, e)


def _send(sock: socket.socket, message: dict) -> None:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:
        pass    # the kernel is gone; the next read ends the zygote


def _child(fds: list, spec: dict) -> None:
    """In the forked worker: wire up the fds, enter the sandbox, serve."""
    from nubis.proc import sandbox, worker

    signal.set_wakeup_fd(-1)
    for number in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    chan_fd, out_fd, err_fd = fds
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.dup2(chan_fd, 3)
    os.closerange(4, 1 << 16)
    status = 1
    try:
        sandbox.apply(spec)
        os.environ.clear()
        os.environ.update(spec["env"])
        status = worker.serve(socket.socket(fileno=3))
    except OSError as e:
        os.write(2, f"nubis: cannot enter the sandbox: {e}\n".encode())
        status = 71
    finally:
        os._exit(status)


class Zygote:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.children: dict[int, int] = {}    # os pid -> worker id
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def serve(self) -> None:
        while True:
            ready, _, _ = select.select([self.sock, self.wake_r], [], [])
            if self.wake_r in ready:
                while True:
                    try:
                        if not os.read(self.wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                self.reap()
            if self.sock in ready and not self.on_request():
                return

    def on_request(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 8)
        except OSError:
            return False    # the kernel is gone
        if not data:
            return False
        message = json.loads(data)
        if message.get("op") == "fork" and len(fds) == 3:
            self.fork(message["wid"], message["spec"], fds)
        else:
            log.warning("zygote: ignored a malformed request %r", message)
        for fd in fds:
            os.close(fd)
        return True

    def fork(self, wid: int, spec: dict, fds: list) -> None:
        try:
            pid = os.fork()
        except OSError as e:
            _send(self.sock, {"op": "fork_failed", "wid": wid, "error": str(e)})
            return
        if pid == 0:
            _child(fds, spec)
        self.children[pid] = wid
        _send(self.sock, {"op": "forked", "wid": wid, "pid": pid})

    def reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            wid = self.children.pop(pid, None)
            if wid is None:
                continue    # an orphan a worker left behind
            _send(self.sock, {
                "op": "exit", "wid": wid, "pid": pid, "status": status,
                "utime": usage.ru_utime, "stime": usage.ru_stime,
                "maxrss": usage.ru_maxrss * 1024,
            })

    def kill_all(self) -> None:
        for pid in list(self.children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def main(argv: list[str]) -> int:
    from nubis.proc import sandbox

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=int(argv[1]))
    uid_base = int(argv[2])
    sandbox.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)
    sandbox.prctl(sandbox.PR_SET_CHILD_SUBREAPER, 1)
    # The kernel ends the zygote (by closing its socket, or by dying), not a
    # Ctrl-C that reaches the whole process group; workers restore both.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _preload([m for m in argv[3].split(",") if m] if len(argv) > 3 else ())
    _send(sock, {"op": "ready", "probe": sandbox.probe(uid_base)})
    zygote = Zygote(sock)
    try:
        zygote.serve()
    finally:
        zygote.kill_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
