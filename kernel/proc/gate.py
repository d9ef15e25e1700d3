"""The worker endpoint: how cloud processes reach the kernel, and as whom.

Workers connect to their own ZeroMQ ipc endpoint, served by a second
ZmqServer whose kernel is a `WorkerGate`: the real kernel, except that it
accepts only worker tokens and names each connection by its worker, so the
handlers see a `WorkerTenant`. That view behaves as the worker's tenant in
every way (same stores, quotas, usage and name) and also knows its worker,
so the kernel can tell which process leased which queue messages and release
those leases the moment the process dies.
"""

from types import SimpleNamespace

from nubis.errors import Unauthenticated


class WorkerTenant:
    """A tenant as seen through one worker's connection."""

    __slots__ = ("tenant", "worker", "key")

    def __init__(self, tenant, worker, key: str):
        self.tenant = tenant
        self.worker = worker
        self.key = key

    def __getattr__(self, name: str):
        return getattr(self.tenant, name)

    def __repr__(self) -> str:
        return f"<WorkerTenant {self.key}>"

    def on_receive(self, queue: str, received) -> None:
        """Note the leases the worker's current process now holds."""
        proc = self.worker.proc
        if proc is not None:
            proc.receipts.update((queue, m.receipt) for m in received)


class WorkerGate:
    """The kernel, as the worker endpoint's transport sees it."""

    def __init__(self, kernel):
        self._kernel = kernel
        self.tenants = SimpleNamespace(by_name={})   # view key -> WorkerTenant

    def __getattr__(self, name: str):
        return getattr(self._kernel, name)

    def authenticate(self, token: str):
        view = self._kernel.tenants.authenticate(token)
        if not isinstance(view, WorkerTenant):
            raise Unauthenticated("this endpoint is for cloud processes only")
        # The transport names the connection by `.name`: here, the worker.
        return SimpleNamespace(name=view.key)

    def admit(self, view: WorkerTenant, token: str) -> None:
        self._kernel.tenants.add_token(view, token)
        self.tenants.by_name[view.key] = view

    def expel(self, view: WorkerTenant, token: str) -> None:
        self._kernel.tenants.revoke_token(token)
        self.tenants.by_name.pop(view.key, None)
