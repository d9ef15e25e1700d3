"""QUEUE: reliable message queues with leases, acks and dead letters, in RAM.

`QueueStore` is the compiled twin (ext/queue_store.pyx) where it is built and
NUBIS_PURE is not 1, else the pure one, always at nubis.queue.store. The
value types are the pure module's in both builds.
"""

from nubis import _hot
from nubis.queue.store import (
    MAX_BATCH,
    MAX_DELAY_MS,
    MAX_LEASE_MS,
    MAX_PAGE_SIZE,
    QueueLimits,
    QueueSettings,
    QueueStore,
    Received,
)

__all__ = [
    "MAX_BATCH",
    "MAX_DELAY_MS",
    "MAX_LEASE_MS",
    "MAX_PAGE_SIZE",
    "QueueLimits",
    "QueueSettings",
    "QueueStore",
    "Received",
]

_ext = _hot.compiled("queue_store")
if _ext is not None:
    QueueStore = _ext.QueueStore
