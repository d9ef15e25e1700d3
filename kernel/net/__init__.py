"""LISTEN: tenants' TCP ports, accepted by the kernel, carried to processes.

Theory of operation. `Network` is the kernel's table of listeners, one per
port, each owned by one tenant (nubis.net.listener). It runs on the kernel
loop like everything else and holds these invariants:

- a port is listened on only if it lies in its tenant's port ranges, and
  by one tenant at a time; it is bound on the configured `listen_host` or
  a loopback address, never elsewhere;
- a tenant holds at most `Quotas.max_connections` connections at once
  (waiting, relayed or handed off, over all its ports); one more is
  refused with a reset and counted, never queued;
- every connection the kernel still holds is in exactly one place: a
  listener's backlog, or `connections` (relayed); a handed-off one is the
  process's, and only its count stays here until the process reports it
  closed or goes away;
- a sweep every SWEEP_SECONDS refuses backlog waits that ran out, closes
  relayed connections whose idle or slow-sender clock expired
  (nubis.net.limits), and ends the streams of cloud processes that died
  (their transport may not notice, a ZeroMQ peer gone quiet says nothing).

Two carriers, one model (nubis.net.relay, nubis.net.handoff): handoff
passes the accepted socket to a process on this host, so its bytes never
pass through the kernel; relay carries them as events and RelayWrites.
"""

import asyncio
import ipaddress
import itertools
import logging
import socket
import time

from nubis.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from nubis.net.handoff import check_path
from nubis.net.limits import limits_of
from nubis.net.listener import Attachment, Listener, refuse
from nubis.net.relay import RelayedConnection
from nubis.v1 import listen_pb2 as pb

log = logging.getLogger("nubis.net")

SWEEP_SECONDS = 0.1
MODES = (pb.CARRY_MODE_HANDOFF, pb.CARRY_MODE_RELAY)


def owner(tenant):
    """The tenant itself, also when seen through a cloud process's view."""
    return getattr(tenant, "tenant", tenant)


class Network:
    """The kernel's listeners and the connections it relays."""

    def __init__(self, config):
        self.config = config
        self.listeners: dict[int, Listener] = {}     # port -> listener
        self.connections: dict[int, RelayedConnection] = {}
        self.live: dict[str, int] = {}               # tenant -> connections
        self._ids = itertools.count(1)
        self._clients = itertools.count(1)
        self._sweeper = None

    # -- the calls ----------------------------------------------------------

    def listen(self, tenant, req) -> Listener:
        tenant = owner(tenant)
        port = req.port
        if not 1 <= port <= 65535:
            raise InvalidArgument(f"port {port} is not a TCP port (1-65535)")
        if not any(lo <= port <= hi for lo, hi in tenant.ports):
            ranges = ", ".join(f"{lo}-{hi}" for lo, hi in tenant.ports) or "none"
            raise PermissionDenied(f"port {port} is not in the port ranges of "
                                   f"tenant {tenant.name!r} ({ranges})")
        held = self.listeners.get(port)
        if held is not None and held.tenant is not tenant:
            raise PermissionDenied(f"port {port} is held by another tenant")
        if held is not None:
            raise AlreadyExists(f"port {port} is already listened on")
        host = self._host(req.host)
        limits = limits_of(self.config, req)
        listener = Listener(self, tenant, host, port, limits,
                            _bind(host, port, limits.backlog))
        self.listeners[port] = listener
        self._start_sweeper()
        log.info("tenant %s listens on %s:%d", tenant.name, host, port)
        return listener

    def _host(self, host: str) -> str:
        if not host or host == self.config.listen_host:
            return self.config.listen_host
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise InvalidArgument(f"host {host!r} is not an IP address") from None
        if not address.is_loopback:
            raise PermissionDenied(f"host {host!r} is not allowed; this kernel "
                                   f"listens on {self.config.listen_host} or "
                                   "loopback")
        return host

    def get(self, tenant, port: int) -> Listener:
        listener = self.listeners.get(port)
        if listener is None or listener.tenant is not owner(tenant):
            raise NotFound(f"port {port} has no listener of tenant "
                           f"{tenant.name!r}")
        return listener

    def unlisten(self, tenant, port: int) -> None:
        listener = self.get(tenant, port)
        del self.listeners[port]
        listener.close()
        log.info("tenant %s stopped listening on port %d", tenant.name, port)

    def close_tenant(self, name: str) -> None:
        """Close the listeners of a tenant that is being deleted."""
        for port, listener in list(self.listeners.items()):
            if listener.tenant.name == name:
                del self.listeners[port]
                listener.close()
                log.info("tenant %s deleted: port %d closed", name, port)

    def attach(self, tenant, req) -> Attachment:
        listener = self.get(tenant, req.port)
        if req.mode not in MODES:
            raise InvalidArgument(f"mode {req.mode} is not HANDOFF (1) or "
                                  "RELAY (2)")
        if req.mode == pb.CARRY_MODE_HANDOFF:
            check_path(req.handoff_path)
        worker = getattr(tenant, "worker", None)
        if worker is not None and worker.proc is not None:
            pid = worker.proc.pid
        else:
            worker, pid = None, f"client-{next(self._clients)}"
        return Attachment(listener, req.mode, pid, req.handoff_path, worker)

    def relay_write(self, tenant, req):
        conn = self.connections.get(req.connection_id)
        if conn is None or conn.attachment.listener.tenant is not owner(tenant):
            raise NotFound(f"connection {req.connection_id} not found")
        return conn.write(req)

    def list(self, tenant) -> list:
        tenant = owner(tenant)
        return [self.listeners[p].info() for p in sorted(self.listeners)
                if self.listeners[p].tenant is tenant]

    # -- connections ----------------------------------------------------------

    def admit(self, listener: Listener, conn, peer: tuple) -> None:
        """An accepted connection: refuse it over the cap, else dispatch it."""
        tenant = listener.tenant
        conn_id = next(self._ids)
        held = self.live.get(tenant.name, 0)
        if held >= tenant.quotas.max_connections:
            self.refused(listener, conn_id, conn, counted=False)
            return
        self.live[tenant.name] = held + 1
        listener.accepted += 1
        tenant.usage.connections += 1
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.dispatch(conn_id, conn, peer)

    def refused(self, listener, conn_id: int, conn, counted=True) -> None:
        refuse(conn)
        listener.refused += 1
        listener.tenant.usage.connections_refused += 1
        if counted:
            self.released(listener)

    def released(self, listener) -> None:
        name = listener.tenant.name
        self.live[name] = self.live.get(name, 1) - 1

    def relay(self, attachment, conn_id: int, conn, peer: tuple) -> None:
        relayed = RelayedConnection(conn_id, peer, attachment, self._relay_gone)
        attachment.relayed[conn_id] = relayed
        self.connections[conn_id] = relayed
        asyncio.get_running_loop().create_task(self._carry(relayed, conn))

    async def _carry(self, relayed, conn) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: relayed, conn)
        except OSError as e:
            conn.close()
            if not relayed.gone:
                relayed._gone(f"cannot carry: {e}", tell=False)

    def _relay_gone(self, relayed) -> None:
        self.connections.pop(relayed.id, None)
        attachment = relayed.attachment
        if attachment.relayed.pop(relayed.id, None) is not None:
            attachment.connections -= 1
            self.released(attachment.listener)

    # -- timeouts -------------------------------------------------------------

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                self.sweep(time.monotonic())
            except Exception:
                log.exception("listener sweep failed")

    def sweep(self, now: float) -> None:
        for listener in list(self.listeners.values()):
            listener.sweep(now)
            for attachment in list(listener.attached):
                _check_worker(attachment)
        for conn in list(self.connections.values()):
            reason = conn.clock.expired(now)
            if reason is not None:
                conn.attachment.listener.timed_out += 1
                log.debug("connection %d closed: %s", conn.id, reason)
                conn.close(reason)

    async def close(self) -> None:
        """Stop every listener (the kernel is stopping)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for port in list(self.listeners):
            self.listeners.pop(port).close()
        for conn in list(self.connections.values()):
            conn.close("kernel stopping")


def _check_worker(attachment) -> None:
    """End the stream of a cloud process that is no longer running."""
    worker = attachment.worker
    if worker is None:
        return
    if worker.state == "dead" or worker.proc is not attachment.proc:
        log.info("listener %d: process %s is gone; detached",
                 attachment.listener.port, attachment.pid)
        attachment.end()


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(max(backlog, 128))
    except OSError as e:
        sock.close()
        raise Unavailable(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.setblocking(False)
    return sock
