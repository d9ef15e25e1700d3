"""Journaled stores: each store call the journal must see, recorded and replayed.

A tenant's stores are wrapped in proxies when the kernel journals. A proxy
passes reads straight through, and for each call in its table pins the
kernel clock to one reading, calls the store, unpins, and appends a record
(op, tenant, time, ok, args). Replay calls the same store method with the
clock pinned to the recorded time, so both twins replay exactly.

Which calls are recorded, and why (the table's flags):
- CHANGE: recorded when it succeeds (a failed call changes nothing), and
  the reply waits for the record under fsync=always. Queue create and
  delete, blob put and delete.
- ADVANCE: the queue store applies due lease ends, delays and retention at
  the start of almost every call, and pops stale heap entries, which moves
  its id counter later on. So every such call is recorded, failed or not,
  read or not, or a replay could hand out other message ids than the live
  run did. Only the mutating ones that succeed make the reply wait.
"""

from nubis.queue.store import QueueSettings

CHANGE, ADVANCE, ADVANCE_READ = 1, 2, 3

QUEUE_OPS = {
    "create": CHANGE, "delete": CHANGE,
    "purge": ADVANCE, "send": ADVANCE, "receive": ADVANCE, "ack": ADVANCE,
    "change_lease": ADVANCE, "release_receipts": ADVANCE,
    "attributes": ADVANCE_READ, "next_wakeup": ADVANCE_READ,
    "message_count": ADVANCE_READ,
}
BLOB_OPS = {"put": CHANGE, "delete": CHANGE, "clear": CHANGE}


def _plain_args(op: str, args: tuple, result) -> tuple:
    """The arguments of a call as plain values for the record."""
    if op == "q.create":
        name, settings = args
        return name, tuple(getattr(settings, f) for f in QueueSettings.__slots__)
    if op == "b.put":
        # The etag of the stored blob saves replay from hashing the content.
        key, data, *rest = args
        rest += [""] * (5 - len(rest))
        rest[4] = result.etag
        return (key, bytes(data), *rest)
    if op in ("q.send", "q.ack", "q.release_receipts"):
        return tuple(list(a) if type(a) is not str else a for a in args)
    return args


def _journaled(prefix: str, name: str, flag: int):
    op = f"{prefix}.{name}"

    def call(self, *args):
        journal = self._journal
        clock = journal.clock
        if clock.pinned is not None:        # replaying: the store's own call
            return getattr(self._store, name)(*args)
        t = clock.pinned = clock.source()
        try:
            result = getattr(self._store, name)(*args)
        except BaseException:
            clock.pinned = None
            if flag != CHANGE:
                journal.append((op, self._tenant, t, False,
                                _plain_args(op, args, None)), False)
            raise
        clock.pinned = None
        # An empty receive changed nothing a reply depends on.
        journal.append((op, self._tenant, t, True, _plain_args(op, args, result)),
                       flag != ADVANCE_READ and (name != "receive" or bool(result)))
        return result

    call.__name__ = name
    return call


class _Proxy:
    __slots__ = ("_store", "_journal", "_tenant")

    def __init__(self, store, journal, tenant: str):
        self._store = store
        self._journal = journal
        self._tenant = tenant

    def __getattr__(self, name: str):
        return getattr(self._store, name)


class JournaledQueues(_Proxy):
    """A tenant's queue store whose calls are journaled."""

    __slots__ = ()


class JournaledBlobs(_Proxy):
    """A tenant's blob store whose calls are journaled."""

    __slots__ = ()


for _name, _flag in QUEUE_OPS.items():
    setattr(JournaledQueues, _name, _journaled("q", _name, _flag))
for _name, _flag in BLOB_OPS.items():
    setattr(JournaledBlobs, _name, _journaled("b", _name, _flag))


def wrap(journal, tenant) -> None:
    """Journal a tenant's store calls from now on."""
    if not isinstance(tenant.queues, JournaledQueues):
        tenant.queues = JournaledQueues(tenant.queues, journal, tenant.name)
    if not isinstance(tenant.blobs, JournaledBlobs):
        tenant.blobs = JournaledBlobs(tenant.blobs, journal, tenant.name)


def raw(store):
    """The store behind a proxy (or the store itself)."""
    return store._store if isinstance(store, _Proxy) else store
