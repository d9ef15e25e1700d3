"""The kernel: the call table, the tenants and the state they own.

Theory of operation. One event loop owns every piece of state; handlers run
on it one at a time and never block, so no locks are needed. A transport
decodes a request, asks `authenticate` for the tenant once per connection or
call, passes the decoded request to `invoke`, sends what comes back, and then
reports the call to `finish`, which keeps the usage counters and the
in-kernel service-time histograms: from the request read off the wire to
the reply handed back to the transport, so that a benchmark can split the
kernel's own time from the transport's.
"""

import logging
import time

from nubis import calls
from nubis.clock import KernelClock
from nubis.errors import NubisError, PermissionDenied, ResourceExhausted
from nubis.histogram import Histogram
from nubis.net import Network
from nubis.tenants import TenantRegistry
from nubis.version import __version__

log = logging.getLogger("nubis.kernel")


class Kernel:
    def __init__(self, config):
        self.config = config
        self.calls: dict = calls.build()
        self.by_path = {c.method.path: c for c in self.calls.values()}
        # Stores run on the kernel clock: unix time, pinned by the journal.
        self.clock = KernelClock()
        self.tenants = TenantRegistry(self.clock.now)
        # The journal, when the kernel keeps one (nubis.journal).
        self.journal = None
        self.stats = {call_id: Histogram() for call_id in self.calls}
        self.started = time.time()
        self.endpoints: list[str] = []
        self.version = __version__
        # (tenant name, queue name) -> waiting long polls, oldest first.
        self.queue_waiters: dict = {}
        # The cloud process supervisor, when SPAWN runs (nubis.proc).
        self.procs = None
        # The tenants' listeners and relayed connections (nubis.net).
        self.net = Network(config)
        for t in config.tenants:
            tenant, _ = self.tenants.add(t.name, t.token, t.quotas, t.admin,
                                         t.ports)
            if t.curve_public_key:
                from zmq.utils import z85

                self.tenants.add_curve_key(tenant, z85.decode(t.curve_public_key))

    def authenticate(self, token: str):
        """The tenant of a bearer token; raises Unauthenticated."""
        return self.tenants.authenticate(token)

    def authenticate_curve(self, public_key: bytes):
        """The tenant of a CURVE client's public key; raises Unauthenticated."""
        return self.tenants.authenticate_curve(public_key)

    def invoke(self, call, tenant, request, body):
        """Run one cloud call for a tenant; returns what the handler returns."""
        if call.admin and not tenant.admin:
            raise PermissionDenied(f"{call.key} is for the admin tenant only")
        if tenant.bucket is not None and not tenant.bucket.take():
            raise ResourceExhausted(
                f"tenant {tenant.name!r} is over its rate limit of "
                f"{tenant.quotas.calls_per_second} calls per second")
        journal = self.journal
        if journal is None or not journal.waits:
            return call.handler(self, tenant, request, body)
        # fsync=always: the reply waits until what the call changed is on disk.
        mark = journal.required
        result = call.handler(self, tenant, request, body)
        return journal.hold(result, mark, call.method.events)

    def finish(self, call, tenant, started_ns: int, error: NubisError | None,
               bytes_in: int, bytes_out: int) -> None:
        """Account one finished call and record its service time."""
        self.stats[call.id].record(time.perf_counter_ns() - started_ns)
        if tenant is None:
            return
        usage = tenant.usage
        counts = usage.calls.get(call.key)
        if counts is None:
            counts = usage.calls[call.key] = [0, 0]
        counts[0] += 1
        if error is not None:
            counts[1] += 1
        usage.bytes_in += bytes_in
        usage.bytes_out += bytes_out

    def hot_paths(self) -> str:
        from nubis import _hot

        return _hot.BUILD
