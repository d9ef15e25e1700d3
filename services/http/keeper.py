"""The keeper: a parent that answers 502 for its HTTP daemon if it dies.

Theory of operation. A process that crashes cannot answer for itself, and
a handed-off connection is the daemon's alone (the kernel no longer holds
it), so when a daemon dies its clients would see a reset. The keeper is
what stays alive to answer instead. A daemon process is two processes:

- the keeper (the cloud process's own, first process) forks the server,
  then only reads a SOCK_SEQPACKET pair: "O" + slot with a connection's
  file descriptor (SCM_RIGHTS, sent once per connection, not per request),
  and "C" + slot when the connection closes;
- the server (the child) runs the event loop and the app, and marks each
  connection's slot in a shared anonymous mmap: IDLE, WAITING (a request
  is in the app with no response started) or ANSWERING. These are single
  byte stores, so tracking costs nothing per request.

When the server exits, the keeper reads the messages still queued (the
pair keeps their order, so a close is seen before the reuse of its slot),
then, unless the server exited with status 0: every WAITING connection gets
`502 Bad Gateway` and a close; ANSWERING ones are closed (the client sees
a cut response); IDLE ones are closed. The keeper then returns the
server's status, so the cloud process fails and its restart policy starts
a new one. The keeper holds duplicates of the sockets, so a connection the
server closes ends (FIN) when the keeper closes its copy, right after the
"C" message. SIGTERM (the kernel's kill reaches the whole process group)
makes the server drain; the keeper waits for it.
"""

import ctypes
import logging
import mmap
import os
import signal
import socket
import sys
import traceback

from nubis.services.http.limits import canned

log = logging.getLogger("nubis.http")

SLOTS = 4096
IDLE, WAITING, ANSWERING = 0, 1, 2
PR_SET_PDEATHSIG = 1


class Tracker:
    """The server's side: connections and their state, told to the keeper."""

    def __init__(self, sock: socket.socket, table: mmap.mmap):
        self.sock = sock
        self.table = table
        self.free = list(range(len(table) - 1, -1, -1))

    def opened(self, transport) -> int:
        """A new connection: its slot, or -1 if it is not kept (no room)."""
        raw = transport.get_extra_info("socket")
        if raw is None or not self.free:
            return -1
        slot = self.free.pop()
        self.table[slot] = IDLE
        try:
            socket.send_fds(self.sock, [b"O" + slot.to_bytes(4, "big")],
                            [raw.fileno()])
        except OSError:
            self.free.append(slot)
            return -1
        return slot

    def waiting(self, slot: int) -> None:
        self.table[slot] = WAITING

    def answering(self, slot: int) -> None:
        self.table[slot] = ANSWERING

    def idle(self, slot: int) -> None:
        self.table[slot] = IDLE

    def closed(self, slot: int) -> None:
        self.table[slot] = IDLE
        try:
            self.sock.send(b"C" + slot.to_bytes(4, "big"))
        except OSError:
            pass
        self.free.append(slot)


def supervise(serve) -> int:
    """Fork `serve(tracker)` as the server, keep its connections, and answer
    502 for it if it dies; returns its exit status (0 after a clean exit)."""
    table = mmap.mmap(-1, SLOTS)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    pid = os.fork()
    if pid == 0:
        ours.close()
        _server(serve, Tracker(theirs, table))
    theirs.close()
    signal.signal(signal.SIGTERM, lambda *_: _forward(pid, signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: _forward(pid, signal.SIGTERM))
    held = _keep(ours)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    answered = 0
    for slot, sock in held.items():
        if code != 0 and table[slot] == WAITING:
            answered += _answer(sock)
        sock.close()
    ours.close()
    if code != 0:
        why = f"signal {-code}" if code < 0 else f"status {code}"
        print(f"nubis.http: the server process died ({why}); answered 502 to "
              f"{answered} waiting request(s), closed {len(held)} "
              "connection(s)", file=sys.stderr, flush=True)
    return code


def _server(serve, tracker: Tracker) -> None:
    """In the child: serve, and never return into the caller's frames."""
    code = 0
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        serve(tracker)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _keep(sock: socket.socket) -> dict:
    """Hold the server's connections until the pair closes (it exited)."""
    held: dict[int, socket.socket] = {}
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 16, 1)
        except OSError:
            break
        if not message:
            break
        slot = int.from_bytes(message[1:5], "big")
        kind = message[:1]
        if kind == b"O" and fds:
            old = held.pop(slot, None)
            if old is not None:
                old.close()
            held[slot] = socket.socket(fileno=fds[0])
            continue
        for fd in fds:
            os.close(fd)
        if kind == b"C":
            old = held.pop(slot, None)
            if old is not None:
                old.close()
    return held


def _answer(sock: socket.socket) -> int:
    try:
        sock.setblocking(False)
        sock.send(canned(502, "the server process died while answering this "
                         "request; it is being restarted"))
        sock.shutdown(socket.SHUT_WR)
        return 1
    except OSError:
        return 0


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass
