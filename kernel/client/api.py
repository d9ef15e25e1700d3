"""The typed cloud calls of the client library, written once for sync and async.

Each method builds its request and hands it to `self._call`, which the sync
client runs at once and the async client returns as a coroutine; `post`, if
given, shapes the reply. So `client.queue.send(...)` returns the message ids
in a `Client` and an awaitable of them in an `AsyncClient`.

Times are seconds (floats) in this API and milliseconds on the wire.
"""

from dataclasses import dataclass

from nubis.v1 import account_pb2, blob_pb2, listen_pb2, queue_pb2, spawn_pb2


def _ms(seconds) -> int:
    return 0 if seconds is None else max(0, int(round(seconds * 1000)))


@dataclass(frozen=True, slots=True)
class BlobContent:
    """An object's info and (a range of) its content."""

    info: blob_pb2.BlobInfo
    data: bytes


class _Api:
    __slots__ = ("_call",)

    def __init__(self, call):
        self._call = call


class QueueApi(_Api):
    """QUEUE: reliable queues with leases, acks and dead letters."""

    __slots__ = ()

    def create(self, name: str, *, lease: float = 0, max_receive_count: int = 0,
               dead_letter_queue: str = "", retention: float = 0,
               fifo: bool = False, dedup_window: float = 0, delay: float = 0,
               timeout: float | None = None):
        """Create a queue; the reply says whether it was new."""
        settings = queue_pb2.QueueSettings(
            default_lease_ms=_ms(lease), max_receive_count=max_receive_count,
            dead_letter_queue=dead_letter_queue, retention_ms=_ms(retention),
            fifo=fifo, dedup_window_ms=_ms(dedup_window),
            default_delay_ms=_ms(delay),
        )
        return self._call("CreateQueue",
                          queue_pb2.CreateQueueRequest(name=name, settings=settings),
                          timeout=timeout, post=lambda r, _: r.created)

    def delete(self, name: str, *, timeout: float | None = None):
        """Delete a queue and its messages."""
        return self._call("DeleteQueue", queue_pb2.DeleteQueueRequest(name=name),
                          timeout=timeout, post=_none)

    def list(self, prefix: str = "", *, page_size: int = 0, page_token: str = "",
             timeout: float | None = None):
        """One page of queue names: a ListQueuesResponse."""
        return self._call("ListQueues", queue_pb2.ListQueuesRequest(
            prefix=prefix, page_size=page_size, page_token=page_token),
            timeout=timeout)

    def attributes(self, name: str, *, timeout: float | None = None):
        """Settings and live counts: a QueueAttributes."""
        return self._call("GetQueueAttributes",
                          queue_pb2.GetQueueAttributesRequest(name=name),
                          timeout=timeout, post=lambda r, _: r.attributes)

    def send(self, queue: str, *bodies: bytes, delay: float = 0, group: str = "",
             dedup_id: str = "", timeout: float | None = None):
        """Send one or more message bodies; returns their ids."""
        entries = [queue_pb2.MessageEntry(body=b, delay_ms=_ms(delay), group=group,
                                          dedup_id=dedup_id) for b in bodies]
        return self.send_entries(queue, entries, timeout=timeout)

    def send_entries(self, queue: str, entries, *, timeout: float | None = None):
        """Send MessageEntry messages (each with its own delay, group, id)."""
        return self._call("SendMessages",
                          queue_pb2.SendMessagesRequest(queue=queue, messages=entries),
                          timeout=timeout, post=lambda r, _: list(r.message_ids))

    def receive(self, queue: str, max_messages: int = 1, *, wait: float = 0,
                lease: float = 0, timeout: float | None = None):
        """Lease up to max_messages, waiting up to `wait` seconds for one."""
        return self._call("ReceiveMessages", queue_pb2.ReceiveMessagesRequest(
            queue=queue, max_messages=max_messages, wait_ms=_ms(wait),
            lease_ms=_ms(lease)), timeout=timeout,
            post=lambda r, _: list(r.messages), wait=wait)

    def ack(self, queue: str, *receipts: str, timeout: float | None = None):
        """Acknowledge leased messages; returns the receipts that were stale."""
        return self._call("AckMessages", queue_pb2.AckMessagesRequest(
            queue=queue, receipts=receipts), timeout=timeout,
            post=lambda r, _: list(r.stale_receipts))

    def change_lease(self, queue: str, receipt: str, lease: float, *,
                     timeout: float | None = None):
        """Extend a lease to `lease` seconds from now, or release it with 0."""
        return self._call("ChangeLease", queue_pb2.ChangeLeaseRequest(
            queue=queue, receipt=receipt, lease_ms=_ms(lease)),
            timeout=timeout, post=_none)

    def purge(self, name: str, *, timeout: float | None = None):
        """Drop every message of a queue; returns how many."""
        return self._call("PurgeQueue", queue_pb2.PurgeQueueRequest(name=name),
                          timeout=timeout, post=lambda r, _: r.purged)


class BlobApi(_Api):
    """BLOB: whole immutable objects by key."""

    __slots__ = ()

    def put(self, key: str, data: bytes, *, content_type: str = "",
            metadata: dict | None = None, if_none_match: bool = False,
            if_match: str = "", timeout: float | None = None):
        """Store an object; returns its BlobInfo (with the etag)."""
        if not isinstance(data, bytes):
            data = bytes(data)    # content is sent zero-copy: freeze it
        request = blob_pb2.PutBlobRequest(
            key=key, content_type=content_type, metadata=metadata or {},
            if_none_match=if_none_match, if_match=if_match, size=len(data))
        return self._call("PutBlob", request, content=data, timeout=timeout,
                          post=lambda r, _: r.info)

    def get(self, key: str, *, offset: int = 0, length: int = 0,
            if_match: str = "", timeout: float | None = None):
        """Read an object, or a byte range of it: a BlobContent."""
        request = blob_pb2.GetBlobRequest(key=key, offset=offset, length=length,
                                          if_match=if_match)
        return self._call("GetBlob", request, timeout=timeout,
                          post=lambda r, data: BlobContent(r.info, data))

    def head(self, key: str, *, timeout: float | None = None):
        """An object's BlobInfo, without its content."""
        return self._call("HeadBlob", blob_pb2.HeadBlobRequest(key=key),
                          timeout=timeout, post=lambda r, _: r.info)

    def delete(self, key: str, *, if_match: str = "", timeout: float | None = None):
        """Delete an object."""
        return self._call("DeleteBlob", blob_pb2.DeleteBlobRequest(
            key=key, if_match=if_match), timeout=timeout, post=_none)

    def list(self, prefix: str = "", *, delimiter: str = "", page_size: int = 0,
             page_token: str = "", timeout: float | None = None):
        """One page of a listing: a ListBlobsResponse."""
        return self._call("ListBlobs", blob_pb2.ListBlobsRequest(
            prefix=prefix, delimiter=delimiter, page_size=page_size,
            page_token=page_token), timeout=timeout)


class AccountApi(_Api):
    """What tenants used, and what this kernel is."""

    __slots__ = ()

    def usage(self, tenant: str = "", *, timeout: float | None = None):
        """Usage of the caller (or, for the admin, of `tenant`, "*" = all)."""
        return self._call("GetUsage", account_pb2.GetUsageRequest(tenant=tenant),
                          timeout=timeout, post=lambda r, _: list(r.usage))

    def info(self, *, timeout: float | None = None):
        """Version, uptime, endpoints and call table: GetKernelInfoResponse."""
        return self._call("GetKernelInfo", account_pb2.GetKernelInfoRequest(),
                          timeout=timeout)

    def call_stats(self, *, reset: bool = False, timeout: float | None = None):
        """In-kernel service time per call: a list of CallStats."""
        return self._call("GetCallStats", account_pb2.GetCallStatsRequest(
            reset=reset), timeout=timeout, post=lambda r, _: list(r.stats))


class AdminApi(_Api):
    """Tenant administration, for the admin tenant."""

    __slots__ = ()

    def create_tenant(self, name: str, *, token: str = "", admin: bool = False,
                      ports=(), quotas: dict | None = None,
                      timeout: float | None = None):
        """Add a tenant; returns its token."""
        tenant = account_pb2.Tenant(name=name, admin=admin, ports=list(ports),
                                    quotas=account_pb2.Quotas(**(quotas or {})))
        return self._call("CreateTenant", account_pb2.CreateTenantRequest(
            tenant=tenant, token=token), timeout=timeout,
            post=lambda r, _: r.token)

    def delete_tenant(self, name: str, *, timeout: float | None = None):
        return self._call("DeleteTenant", account_pb2.DeleteTenantRequest(
            name=name), timeout=timeout, post=_none)

    def list_tenants(self, *, timeout: float | None = None):
        return self._call("ListTenants", account_pb2.ListTenantsRequest(),
                          timeout=timeout, post=lambda r, _: list(r.tenants))


_RESTART = {"never": 1, "on-failure": 2, "always": 3}


class SpawnApi(_Api):
    """SPAWN: cloud processes running Python source, supervised and retried."""

    __slots__ = ("_events",)

    def __init__(self, call, events):
        super().__init__(call)
        self._events = events

    @staticmethod
    def executable(entry: str, source: str | None = None, *,
                   blob_key: str = "", name: str = ""):
        """An Executable message: inline source, or the key of a blob."""
        if source is not None:
            return spawn_pb2.Executable(source=source, entry=entry, name=name)
        return spawn_pb2.Executable(blob_key=blob_key, entry=entry, name=name)

    def spawn(self, entry: str, source: str | None = None, args: bytes = b"", *,
              blob_key: str = "", name: str = "", attempts: int = 0,
              backoff: tuple = (0, 0), timeout_s: float = 0,
              cpu_seconds: int = 0, memory_bytes: int = 0,
              max_processes: int = 0, restart: str = "never",
              idempotency_key: str = "", env: dict | None = None,
              max_concurrency: int = 0, rate_per_second: float = 0,
              timeout: float | None = None):
        """Start a cloud process running `entry(args)`: a SpawnResponse
        (pid, warm, existing). `timeout_s` limits each attempt; `timeout`
        is the call's own deadline. attempts=-1 retries until success."""
        if restart not in _RESTART:
            raise ValueError(f"restart must be one of {sorted(_RESTART)}")
        options = spawn_pb2.SpawnOptions(
            attempts=attempts, backoff_min_ms=_ms(backoff[0]),
            backoff_max_ms=_ms(backoff[1]), timeout_ms=_ms(timeout_s),
            cpu_seconds=cpu_seconds, memory_bytes=memory_bytes,
            max_processes=max_processes, restart=_RESTART[restart],
            idempotency_key=idempotency_key, env=env or {},
            max_concurrency=max_concurrency, rate_per_second=rate_per_second)
        request = spawn_pb2.SpawnRequest(
            executable=self.executable(entry, source, blob_key=blob_key,
                                       name=name),
            args=args, options=options)
        return self._call("Spawn", request, timeout=timeout)

    def wait(self, pid: str, wait: float = 0, *, timeout: float | None = None):
        """Wait up to `wait` seconds for a process to end: a
        WaitProcessResponse (process info, and whether it ended)."""
        return self._call("WaitProcess", spawn_pb2.WaitProcessRequest(
            pid=pid, timeout_ms=_ms(wait)), timeout=timeout, wait=wait)

    def kill(self, pid: str, signal: int = 0, *, timeout: float | None = None):
        """Signal a process (SIGTERM by default) and stop its retries."""
        return self._call("KillProcess", spawn_pb2.KillProcessRequest(
            pid=pid, signal=signal), timeout=timeout, post=_none)

    def list(self, state: int = 0, *, page_size: int = 0, page_token: str = "",
             timeout: float | None = None):
        """One page of the caller's processes, newest first."""
        return self._call("ListProcesses", spawn_pb2.ListProcessesRequest(
            state=state, page_size=page_size, page_token=page_token),
            timeout=timeout)

    def logs(self, pid: str, *, offset: int = 0, follow: bool = False,
             timeout: float | None = None):
        """Iterate ReadProcessLogsResponse chunks of a process's output."""
        return self._events("ReadProcessLogs", spawn_pb2.ReadProcessLogsRequest(
            pid=pid, offset=offset, follow=follow), timeout)

    def warm_pool(self, entry: str, source: str | None = None, count: int = 1, *,
                  blob_key: str = "", name: str = "", memory_bytes: int = 0,
                  max_processes: int = 0, timeout: float | None = None):
        """Keep `count` workers of an executable ready (0 lets them go)."""
        return self._call("SetWarmPool", spawn_pb2.SetWarmPoolRequest(
            executable=self.executable(entry, source, blob_key=blob_key,
                                       name=name),
            count=count, options=spawn_pb2.SpawnOptions(
                memory_bytes=memory_bytes, max_processes=max_processes)),
            timeout=timeout, post=_none)


_MODES = {"handoff": listen_pb2.CARRY_MODE_HANDOFF,
          "relay": listen_pb2.CARRY_MODE_RELAY}


class ListenApi(_Api):
    """LISTEN: the tenant's TCP ports, accepted by the kernel."""

    __slots__ = ("_events",)

    def __init__(self, call, events):
        super().__init__(call)
        self._events = events

    def listen(self, port: int, *, host: str = "", backlog: int = 0,
               backlog_timeout: float = 0, idle_timeout: float = 0,
               slow_timeout: float = 0, min_rate: int = 0,
               timeout: float | None = None):
        """Own a TCP port from the tenant's ranges; 0 limits = the kernel's."""
        return self._call("Listen", listen_pb2.ListenRequest(
            port=port, host=host, backlog=backlog,
            backlog_timeout_ms=_ms(backlog_timeout),
            idle_timeout_ms=_ms(idle_timeout), slow_timeout_ms=_ms(slow_timeout),
            min_rate=min_rate), timeout=timeout, post=lambda r, _: r.port)

    def unlisten(self, port: int, *, timeout: float | None = None):
        """Give a port back; its connections are closed."""
        return self._call("Unlisten", listen_pb2.UnlistenRequest(port=port),
                          timeout=timeout, post=_none)

    def attach(self, port: int, mode: str = "relay", handoff_path: str = "", *,
               timeout: float | None = None):
        """Iterate the ConnectionEvents of the caller attached to `port`
        ("handoff" needs the path of a unix socket to pass sockets to)."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}")
        return self._events("AttachListener", listen_pb2.AttachListenerRequest(
            port=port, mode=_MODES[mode], handoff_path=handoff_path), timeout)

    def write(self, connection_id: int, data: bytes = b"", *,
              half_close: bool = False, close: bool = False, consumed: int = 0,
              timeout: float | None = None):
        """Relay: write to a connection, then half-close or close it;
        `consumed` reports the DATA bytes taken in (flow control)."""
        return self._call("RelayWrite", listen_pb2.RelayWriteRequest(
            connection_id=connection_id, data=data, half_close=half_close,
            close=close, consumed=consumed), timeout=timeout, post=_none)

    def list(self, *, timeout: float | None = None):
        """The caller's listeners: a list of ListenerInfo."""
        return self._call("ListListeners", listen_pb2.ListListenersRequest(),
                          timeout=timeout, post=lambda r, _: list(r.listeners))


def _none(response, content):
    return None
