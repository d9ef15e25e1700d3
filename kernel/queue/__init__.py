"""QUEUE: reliable message queues with leases, acks and dead letters, in RAM."""

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
