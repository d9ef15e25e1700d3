"""QUEUE calls: protobuf in, the tenant's queue store, protobuf out.

Long polls park on the loop: a receive that finds nothing waits on a future
kept in `kernel.queue_waiters`, woken by a send, a released lease or a timer
at the store's next wakeup, and gives up at its deadline with an empty reply.
"""

import asyncio
from collections import deque

from nubis.calls import handler
from nubis.errors import InvalidArgument, ResourceExhausted
from nubis.queue import QueueSettings
from nubis.v1 import queue_pb2 as pb

MAX_WAIT_MS = 20_000
# Long polls parked on one queue of one tenant; more answer RESOURCE_EXHAUSTED,
# so that waiting calls cannot grow the kernel's memory without bound.
MAX_LONG_POLLS = 4096

_SETTINGS = ("default_lease_ms", "max_receive_count", "dead_letter_queue",
             "retention_ms", "fifo", "dedup_window_ms", "default_delay_ms")


def settings_from_pb(msg: pb.QueueSettings) -> QueueSettings:
    defaults = QueueSettings()
    values = {}
    for name in _SETTINGS:
        value = getattr(msg, name)
        values[name] = value if value else getattr(defaults, name)
    return QueueSettings(**values)


def settings_to_pb(settings: QueueSettings) -> pb.QueueSettings:
    return pb.QueueSettings(**{n: getattr(settings, n) for n in _SETTINGS})


@handler("CreateQueue")
def create_queue(kernel, tenant, req, body):
    created = tenant.queues.create(req.name, settings_from_pb(req.settings))
    return pb.CreateQueueResponse(created=created)


@handler("DeleteQueue")
def delete_queue(kernel, tenant, req, body):
    tenant.queues.delete(req.name)
    wake(kernel, tenant, req.name, all_waiters=True)
    return pb.DeleteQueueResponse()


@handler("ListQueues")
def list_queues(kernel, tenant, req, body):
    names, token = tenant.queues.names(req.prefix, req.page_size, req.page_token)
    return pb.ListQueuesResponse(names=names, next_page_token=token)


@handler("GetQueueAttributes")
def get_queue_attributes(kernel, tenant, req, body):
    a = dict(tenant.queues.attributes(req.name))
    a["settings"] = settings_to_pb(a["settings"])
    return pb.GetQueueAttributesResponse(attributes=pb.QueueAttributes(**a))


@handler("SendMessages")
def send_messages(kernel, tenant, req, body):
    entries = [(m.body, m.delay_ms, m.group, m.dedup_id) for m in req.messages]
    ids = tenant.queues.send(req.queue, entries)
    tenant.usage.messages_sent += len(ids)
    wake(kernel, tenant, req.queue, len(ids))
    return pb.SendMessagesResponse(message_ids=ids)


@handler("ReceiveMessages")
def receive_messages(kernel, tenant, req, body):
    if req.wait_ms > MAX_WAIT_MS:
        raise InvalidArgument(
            f"wait_ms {req.wait_ms} is over the maximum of {MAX_WAIT_MS}")
    got = tenant.queues.receive(req.queue, req.max_messages, req.lease_ms)
    if got or not req.wait_ms:
        return _received(tenant, req.queue, got)
    waiting = kernel.queue_waiters.get((tenant.name, req.queue))
    if waiting is not None and len(waiting) >= MAX_LONG_POLLS:
        raise ResourceExhausted(
            f"queue {req.queue!r} has {len(waiting)} long polls waiting, the "
            f"limit of {MAX_LONG_POLLS}")
    return _long_poll(kernel, tenant, req, kernel.clock.now() + req.wait_ms / 1e3)


async def _long_poll(kernel, tenant, req, deadline: float):
    loop = asyncio.get_running_loop()
    key = (tenant.name, req.queue)
    store = tenant.queues
    now = kernel.clock.now    # the stores' clock: next_wakeup is in it
    while True:
        timeout = deadline - now()
        wakeup = store.next_wakeup(req.queue)
        if wakeup is not None:
            timeout = min(timeout, max(0.0, wakeup - now()))
        waiter = loop.create_future()
        waiters = kernel.queue_waiters.setdefault(key, deque())
        waiters.append(waiter)
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            _discard(kernel, key, waiter)
        got = store.receive(req.queue, req.max_messages, req.lease_ms)
        if got or now() >= deadline:
            return _received(tenant, req.queue, got)


def _expire(waiter) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _discard(kernel, key, waiter) -> None:
    waiters = kernel.queue_waiters.get(key)
    if waiters is None:
        return
    try:
        waiters.remove(waiter)
    except ValueError:
        pass
    if not waiters:
        del kernel.queue_waiters[key]


def wake(kernel, tenant, queue: str, count: int = 1, all_waiters=False) -> None:
    """Wake up to `count` long polls waiting on a queue."""
    waiters = kernel.queue_waiters.get((tenant.name, queue))
    while waiters and (count > 0 or all_waiters):
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            count -= 1
    if waiters is not None and not waiters:
        del kernel.queue_waiters[(tenant.name, queue)]


def _received(tenant, queue: str, got) -> pb.ReceiveMessagesResponse:
    tenant.usage.messages_received += len(got)
    # A cloud process's connection: its leases end when the process dies.
    on_receive = getattr(tenant, "on_receive", None)
    if on_receive is not None and got:
        on_receive(queue, got)
    return pb.ReceiveMessagesResponse(messages=[
        pb.ReceivedMessage(
            message_id=m.message_id, body=m.body, receipt=m.receipt,
            receive_count=m.receive_count, sent_unix_ms=m.sent_unix_ms,
            group=m.group,
        )
        for m in got
    ])


@handler("AckMessages")
def ack_messages(kernel, tenant, req, body):
    stale = tenant.queues.ack(req.queue, list(req.receipts))
    tenant.usage.messages_acked += len(req.receipts) - len(stale)
    return pb.AckMessagesResponse(stale_receipts=stale)


@handler("ChangeLease")
def change_lease(kernel, tenant, req, body):
    tenant.queues.change_lease(req.queue, req.receipt, req.lease_ms)
    if req.lease_ms == 0:
        wake(kernel, tenant, req.queue)
    return pb.ChangeLeaseResponse()


@handler("PurgeQueue")
def purge_queue(kernel, tenant, req, body):
    return pb.PurgeQueueResponse(purged=tenant.queues.purge(req.name))
