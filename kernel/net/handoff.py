"""The handoff channel: accepted sockets passed to a listener process.

Protocol. The process listens on a unix SOCK_SEQPACKET socket at the path
it named in AttachListenerRequest.handoff_path; the kernel connects once per
attach. Every packet is one message, so no framing is needed:

- process to kernel, first: the nonce of the stream's ATTACHED event. The
  kernel runs as root and would connect wherever a tenant points it, so it
  sends nothing until the socket proves it belongs to the caller's stream;
- kernel to process: b"R" once the nonce checked out (the process is in the
  balancer from then on), then per connection b"C" + connection id (u64) +
  peer port (u16) + peer host (UTF-8), carrying the socket (SCM_RIGHTS);
- process to kernel: b"X" + connection ids (u64 each) of connections it has
  closed, which the balancer and the tenant's connection count need.

The kernel closes its copy of each socket once sent, so the process holds
the only one: when it exits, its connections close with it. EOF on the
channel means the process is gone or detached.
"""

import asyncio
import hmac
import logging
import socket
import struct

from nubis.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger("nubis.net")

HELLO_TIMEOUT = 5.0
MAX_PATH = 107
_HEADER = struct.Struct(">QH")
_ID = struct.Struct(">Q")


def check_path(path: str) -> None:
    if not path.startswith("/"):
        raise InvalidArgument(f"handoff_path {path!r} is not an absolute path")
    if len(path.encode()) > MAX_PATH:
        raise InvalidArgument(f"handoff_path {path!r} is longer than "
                              f"{MAX_PATH} bytes")


class HandoffChannel:
    """The kernel's end of one attached process's handoff channel."""

    def __init__(self, path: str, on_release, on_lost, on_undelivered):
        self.path = path
        self.sock = None
        self.on_release = on_release    # called with each closed connection id
        self.on_lost = on_lost          # called once when the channel ends
        # Called with (id, socket, peer) for a socket that could not be sent.
        self.on_undelivered = on_undelivered
        self.backlog = []               # (id, peer, message, socket) unsent
        self.loop = None

    async def open(self, nonce: bytes) -> None:
        """Connect and check the nonce; FAILED_PRECONDITION if it fails."""
        self.loop = loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, self.path),
                                   HELLO_TIMEOUT)
            hello = await asyncio.wait_for(loop.sock_recv(sock, 64),
                                           HELLO_TIMEOUT)
        except (OSError, TimeoutError) as e:
            sock.close()
            why = "no answer" if isinstance(e, TimeoutError) else e.strerror
            raise FailedPrecondition(f"handoff_path {self.path!r}: {why}; the "
                                     "process must listen there (SOCK_SEQPACKET) "
                                     "and send the ATTACHED nonce") from None
        if not hmac.compare_digest(hello, nonce):
            sock.close()
            raise FailedPrecondition(f"handoff_path {self.path!r} did not send "
                                     "this stream's nonce")
        sock.send(b"R")
        self.sock = sock
        loop.add_reader(sock.fileno(), self._readable)

    def give(self, conn_id: int, peer: tuple, conn: socket.socket) -> None:
        """Pass an accepted socket to the process; the kernel's copy closes."""
        message = b"C" + _HEADER.pack(conn_id, peer[1]) + peer[0].encode()
        entry = (conn_id, peer, message, conn)
        if self.backlog or not self._send(entry):
            self.backlog.append(entry)
            if len(self.backlog) == 1 and self.sock is not None:
                self.loop.add_writer(self.sock.fileno(), self._writable)

    def _send(self, entry) -> bool:
        """True if sent (or handed back), False to retry when writable."""
        conn_id, peer, message, conn = entry
        if self.sock is None:
            self.on_undelivered(conn_id, conn, peer)
            return True
        try:
            socket.send_fds(self.sock, [message], [conn.fileno()])
        except BlockingIOError:
            return False
        except OSError as e:
            log.info("handoff %s: cannot send a socket: %s", self.path, e)
            self.close()
            self.on_undelivered(conn_id, conn, peer)
            return True
        conn.close()
        return True

    def _writable(self) -> None:
        while self.backlog:
            if not self._send(self.backlog[0]):
                return
            self.backlog.pop(0)
        if self.sock is not None:
            self.loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        try:
            packet = self.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            packet = b""
        if not packet:
            self.close()
            return
        if packet[:1] != b"X" or (len(packet) - 1) % _ID.size:
            log.info("handoff %s: malformed packet; closing", self.path)
            self.close()
            return
        for at in range(1, len(packet), _ID.size):
            self.on_release(_ID.unpack_from(packet, at)[0])

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        self.loop.remove_reader(sock.fileno())
        self.loop.remove_writer(sock.fileno())
        sock.close()
        backlog, self.backlog = self.backlog, []
        self.on_lost()
        for conn_id, peer, _, conn in backlog:
            self.on_undelivered(conn_id, conn, peer)
