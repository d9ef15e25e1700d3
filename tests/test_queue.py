"""QUEUE through the public client, over every transport."""

import threading
import time

import pytest

from nubis.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)


def test_send_receive_ack(client, name):
    assert client.queue.create(name) is True
    assert client.queue.create(name) is False
    ids = client.queue.send(name, b"one", b"two", b"three")
    assert len(set(ids)) == 3

    got = client.queue.receive(name, 10)
    assert [m.body for m in got] == [b"one", b"two", b"three"]
    assert [m.message_id for m in got] == ids
    assert all(m.receive_count == 1 and m.receipt for m in got)

    attrs = client.queue.attributes(name)
    assert (attrs.depth, attrs.in_flight) == (0, 3)
    assert client.queue.ack(name, *(m.receipt for m in got)) == []
    attrs = client.queue.attributes(name)
    assert (attrs.depth, attrs.in_flight) == (0, 0)
    assert client.queue.receive(name) == []


def test_create_conflict_and_delete(client, name):
    client.queue.create(name, lease=5)
    with pytest.raises(AlreadyExists, match=name):
        client.queue.create(name, lease=6)
    client.queue.delete(name)
    with pytest.raises(NotFound, match=name):
        client.queue.send(name, b"x")


def test_lease_expiry_redelivers(client, name):
    client.queue.create(name)
    client.queue.send(name, b"job")
    [first] = client.queue.receive(name, lease=0.2)
    assert client.queue.receive(name) == []
    time.sleep(0.3)
    [again] = client.queue.receive(name, lease=10)
    assert again.message_id == first.message_id
    assert again.receive_count == 2
    assert client.queue.ack(name, first.receipt) == [first.receipt]
    assert client.queue.ack(name, again.receipt) == []


def test_change_lease_release_and_extend(client, name):
    client.queue.create(name)
    client.queue.send(name, b"job")
    [m] = client.queue.receive(name, lease=0.3)
    client.queue.change_lease(name, m.receipt, 30)
    time.sleep(0.4)
    assert client.queue.receive(name) == []
    client.queue.change_lease(name, m.receipt, 0)
    [m2] = client.queue.receive(name)
    assert m2.message_id == m.message_id
    with pytest.raises(FailedPrecondition, match="stale"):
        client.queue.change_lease(name, m.receipt, 5)


def test_delay(client, name):
    client.queue.create(name)
    client.queue.send(name, b"later", delay=0.3)
    assert client.queue.attributes(name).delayed == 1
    assert client.queue.receive(name) == []
    [m] = client.queue.receive(name, wait=2)
    assert m.body == b"later"


def test_long_poll_is_woken_by_a_send(client, connect, name):
    client.queue.create(name)
    sender = connect("acme")

    def send_later():
        time.sleep(0.3)
        sender.queue.send(name, b"wake")

    thread = threading.Thread(target=send_later)
    started = time.monotonic()
    thread.start()
    [m] = client.queue.receive(name, wait=10)
    waited = time.monotonic() - started
    thread.join()
    assert m.body == b"wake"
    assert waited < 9    # woken by the send, not by the deadline


def test_long_poll_times_out_empty(client, name):
    client.queue.create(name)
    started = time.monotonic()
    assert client.queue.receive(name, wait=0.3) == []
    assert time.monotonic() - started >= 0.25


def test_dead_letters(client, name):
    dlq = f"{name}-dlq"
    client.queue.create(dlq)
    client.queue.create(name, max_receive_count=2, dead_letter_queue=dlq)
    client.queue.send(name, b"poison")
    for _ in range(2):
        [m] = client.queue.receive(name, lease=0.1)
        client.queue.change_lease(name, m.receipt, 0)
    assert client.queue.receive(name) == []
    [dead] = client.queue.receive(dlq)
    assert dead.body == b"poison"
    with pytest.raises(FailedPrecondition, match=dlq):
        client.queue.delete(dlq)


def test_fifo_groups_and_dedup(client, name):
    client.queue.create(name, fifo=True)
    client.queue.send(name, b"a1", group="a", dedup_id="1")
    client.queue.send(name, b"a2", group="a", dedup_id="2")
    client.queue.send(name, b"b1", group="b", dedup_id="3")
    again = client.queue.send(name, b"a1", group="a", dedup_id="1")
    got = client.queue.receive(name, 10)
    # One message per group at a time, in order within the group.
    assert sorted(m.body for m in got) == [b"a1", b"b1"]
    assert client.queue.attributes(name).depth == 1
    a1 = next(m for m in got if m.body == b"a1")
    assert again == [a1.message_id]
    client.queue.ack(name, *(m.receipt for m in got))
    [a2] = client.queue.receive(name, 10)
    assert a2.body == b"a2"


def test_list_and_purge(client, name):
    for suffix in ("a", "b", "c"):
        client.queue.create(f"{name}-{suffix}")
    page = client.queue.list(name, page_size=2)
    assert list(page.names) == [f"{name}-a", f"{name}-b"]
    page = client.queue.list(name, page_size=2, page_token=page.next_page_token)
    assert list(page.names) == [f"{name}-c"] and not page.next_page_token
    client.queue.send(f"{name}-a", b"1", b"2")
    assert client.queue.purge(f"{name}-a") == 2
    assert client.queue.attributes(f"{name}-a").depth == 0


def test_bad_arguments(client, name):
    with pytest.raises(InvalidArgument, match="no spaces allowed"):
        client.queue.create("no spaces allowed")
    client.queue.create(name)
    with pytest.raises(InvalidArgument):
        client.queue.send(name)
    with pytest.raises(InvalidArgument, match="wait_ms"):
        client.queue.receive(name, wait=60)
    with pytest.raises(InvalidArgument):
        client.queue.receive(name, 5000)
    with pytest.raises(InvalidArgument, match="group"):
        client.queue.send(name, b"x", group="g")
    assert client.queue.ack(name, "garbage-receipt") == ["garbage-receipt"]


def test_quotas(small, name):
    small.queue.create(name)
    with pytest.raises(ResourceExhausted, match="1024"):
        small.queue.send(name, b"x" * 2000)
    small.queue.send(name, *[b"m"] * 5)
    with pytest.raises(ResourceExhausted):
        small.queue.send(name, b"one too many")
    small.queue.create(f"{name}-2")
    with pytest.raises(ResourceExhausted):
        small.queue.create(f"{name}-3")
    small.queue.delete(name)
    small.queue.delete(f"{name}-2")


async def test_many_calls_in_flight_on_one_connection(aclient, name):
    import asyncio

    await aclient.queue.create(name)
    sends = [aclient.queue.send(name, str(i).encode()) for i in range(200)]
    ids = await asyncio.gather(*sends)
    assert len({i for [i] in ids}) == 200
    # A parked long poll does not hold up the calls behind it.
    poll = asyncio.ensure_future(aclient.queue.receive(f"{name}", 1, wait=5))
    await asyncio.sleep(0)
    got = await aclient.queue.receive(name, 100)
    assert got and await poll
    attrs = await aclient.queue.attributes(name)
    assert attrs.in_flight + attrs.depth == 200
