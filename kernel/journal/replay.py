"""Replay: apply journal records to a booting kernel, and what replay leaves.

Records are (op, tenant, time, ok, args). Store ops ("q.*", "b.*") call the
raw store method with the kernel clock pinned to the recorded time; "t.*"
add and remove tenants made at run time; "p.*" keep the set of cloud
processes accepted and not yet ended. While replaying, the current receipt
of every message leased is kept, so that the leases held at the crash can
be released once replay ends: those messages are delivered again, and
acknowledged ones are gone for good.
"""

import logging

from nubis.errors import NubisError
from nubis.journal.stores import BLOB_OPS, QUEUE_OPS, raw
from nubis.queue.store import QueueSettings
from nubis.tenants import Quotas

log = logging.getLogger("nubis.journal")


_METHODS = {"q": QUEUE_OPS, "b": BLOB_OPS, "t": ("create", "delete"),
            "p": ("spawn", "end")}


class Replayer:
    def __init__(self, kernel, journal):
        self.kernel = kernel
        self.journal = journal
        self.clock = journal.clock
        self.records = 0
        self.mismatched = 0        # a call that failed live and not now, or back
        self.orphans = 0           # records of tenants this kernel lacks
        # (tenant, queue) -> {message id: receipt of its current lease}
        self.leases: dict[tuple, dict] = {}

    def apply(self, record: tuple) -> None:
        op, tenant_name, t, ok, args = record
        self.records += 1
        kind, _, method = op.partition(".")
        if method not in _METHODS.get(kind, ()):
            raise ValueError(f"unknown journal op {op!r}")
        if kind == "t":
            return self._tenant(method, args)
        if kind == "p":
            return self._process(tenant_name, method, args)
        tenant = self.kernel.tenants.by_name.get(tenant_name)
        if tenant is None:
            self.orphans += 1
            return
        self.clock.pinned = t
        try:
            self._store(tenant, kind, method, args, ok)
        finally:
            self.clock.pinned = None

    def _store(self, tenant, kind, method, args, ok) -> None:
        store = raw(tenant.queues if kind == "q" else tenant.blobs)
        if method == "create":
            args = (args[0], QueueSettings(*args[1]))
        try:
            result = getattr(store, method)(*args)
        except NubisError:
            self.mismatched += ok
            return
        self.mismatched += not ok
        if kind == "q":
            self._track(tenant.name, method, args, result)

    def _track(self, tenant: str, method: str, args: tuple, result) -> None:
        if method == "receive":
            held = self.leases.setdefault((tenant, args[0]), {})
            for m in result:
                held[m.message_id] = m.receipt
        elif method == "ack":
            held = self.leases.get((tenant, args[0]))
            for receipt in args[1] if held else ():
                held.pop(receipt.rpartition(".")[0], None)
        elif method == "change_lease" and args[2] == 0:
            held = self.leases.get((tenant, args[0]))
            if held:
                held.pop(args[1].rpartition(".")[0], None)
        elif method == "release_receipts":
            for queue, receipt in args[0]:
                held = self.leases.get((tenant, queue))
                if held:
                    held.pop(receipt.rpartition(".")[0], None)
        elif method in ("purge", "delete"):
            self.leases.pop((tenant, args[0]), None)

    def _tenant(self, method: str, args: tuple) -> None:
        registry = self.kernel.tenants
        if method == "create":
            name, token, quotas, admin, ports = args
            try:
                registry.add(name, token, Quotas(**quotas), admin,
                             tuple(tuple(p) for p in ports))
            except NubisError as e:
                log.warning("journal: tenant %r made at run time is not "
                            "restored: %s", name, e)
                return
            self.journal.runtime_tenants[name] = args
        elif method == "delete":
            name = args[0]
            if name in registry.by_name:
                registry.remove(name)
            if self.journal.runtime_tenants.pop(name, None) is None:
                self.journal.deleted_tenants.add(name)

    def _process(self, tenant: str, method: str, args: tuple) -> None:
        spawns = self.journal.spawns
        if method == "spawn":
            spawns[tenant, args[0]] = args
            self.journal.max_pid = max(self.journal.max_pid, args[0])
        elif method == "end":
            spawns.pop((tenant, args[0]), None)

    def release_leases(self) -> int:
        """Release the leases held when the kernel stopped; how many.

        A lease that ended on its own since is skipped by the store.
        """
        by_tenant: dict[str, list] = {}
        for (tenant, queue), held in self.leases.items():
            by_tenant.setdefault(tenant, []).extend(
                (queue, receipt) for receipt in held.values())
        self.leases.clear()
        count = 0
        for name, pairs in by_tenant.items():
            tenant = self.kernel.tenants.by_name.get(name)
            if tenant is not None and pairs:
                tenant.queues.release_receipts(pairs)
                count += len(pairs)
        return count
