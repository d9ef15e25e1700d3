"""The queue store: leases, receipts, delays, dead letters, FIFO, limits."""

import random
import re

import pytest

from nubis._hot import built
from nubis.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from nubis.queue import QueueLimits, QueueSettings, Received
from nubis.queue import store as pure

# Every test runs against each twin: the pure one, and the compiled one where
# it is built (whatever NUBIS_PURE says).
IMPLS = [pure.QueueStore] + [m.QueueStore for m in [built("queue_store")] if m]

WALL = 1_700_000_000.25  # unix seconds the fake wall clock reads
START = 1000.0  # monotonic seconds at the start of each test


class FakeClock:
    """A monotonic clock that moves only when told.

    Tests move it by multiples of 125 ms, exact in binary, so that times the
    store computes as start + lease land exactly on the clock's readings.
    """

    def __init__(self):
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms / 1000


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(params=IMPLS, ids=lambda cls: cls.__module__)
def make(request, clock):
    def make(**limits):
        return request.param(QueueLimits(**limits), clock=clock,
                             wall=lambda: WALL)
    return make


@pytest.fixture
def store(make):
    store = make()
    store.create("jobs", QueueSettings())
    return store


def msg(body: bytes, delay_ms: int = 0, group: str = "", dedup_id: str = ""):
    return (body, delay_ms, group, dedup_id)


def bodies(received) -> list[bytes]:
    return [r.body for r in received]


def counts(store, name: str = "jobs") -> tuple[int, int, int]:
    a = store.attributes(name)
    return a["depth"], a["in_flight"], a["delayed"]


# -- create, delete, names ----------------------------------------------------


def test_create_is_idempotent_and_conflicts_on_other_settings(make):
    store = make()

    assert store.create("jobs", QueueSettings(default_lease_ms=5000)) is True
    assert store.create("jobs", QueueSettings(default_lease_ms=5000)) is False
    with pytest.raises(AlreadyExists, match="queue 'jobs' exists"):
        store.create("jobs", QueueSettings(default_lease_ms=6000))
    assert store.queue_count == 1
    assert store.attributes("jobs")["settings"].default_lease_ms == 5000


def test_zero_settings_read_as_the_abi_defaults(make):
    store = make()
    store.create("jobs", QueueSettings())

    zeros = QueueSettings(default_lease_ms=0, retention_ms=0, dedup_window_ms=0)
    assert store.create("jobs", zeros) is False
    assert store.attributes("jobs")["settings"] == QueueSettings()
    assert zeros.retention_ms == 0, "the caller's settings were changed"


def test_settings_compare_every_field():
    assert QueueSettings() == QueueSettings()
    for field, value in [("default_lease_ms", 1), ("max_receive_count", 1),
                         ("dead_letter_queue", "d"), ("retention_ms", 1),
                         ("fifo", True), ("dedup_window_ms", 1),
                         ("default_delay_ms", 1)]:
        assert QueueSettings(**{field: value}) != QueueSettings(), field


def test_attributes_return_a_copy_of_the_settings(store):
    store.attributes("jobs")["settings"].default_lease_ms = 1

    assert store.attributes("jobs")["settings"].default_lease_ms == 30_000


@pytest.mark.parametrize("name", ["", "a" * 81, "has space", "a/b", "ünï",
                                  "new\nline", "tab\t", None, 7])
def test_bad_queue_names_are_refused(make, name):
    store = make()

    with pytest.raises(InvalidArgument,
                       match=re.escape(f"queue name {name!r} is invalid")):
        store.create(name, QueueSettings())
    with pytest.raises(InvalidArgument, match="is invalid"):
        store.send(name, [msg(b"x")])
    assert store.queue_count == 0


@pytest.mark.parametrize("name", ["a", "A" * 80, "jobs.v2-high_prio", "0"])
def test_good_queue_names_are_accepted(make, name):
    store = make()

    assert store.create(name, QueueSettings())
    assert store.names() == ([name], "")


@pytest.mark.parametrize("settings, match", [
    (dict(default_lease_ms=-1), "default_lease_ms -1"),
    (dict(default_lease_ms=12 * 3600 * 1000 + 1), "default_lease_ms 43200001"),
    (dict(default_delay_ms=15 * 60 * 1000 + 1), "default_delay_ms 900001"),
    (dict(retention_ms=-5), "retention_ms -5"),
    (dict(dedup_window_ms=1.5), "dedup_window_ms 1.5"),
    (dict(max_receive_count=3), "max_receive_count 3 needs a dead_letter_queue"),
    (dict(max_receive_count=1, dead_letter_queue="bad name"),
     "dead_letter_queue 'bad name' is not a valid queue name"),
    (dict(fifo=1), "fifo 1 is not a bool"),
])
def test_bad_settings_are_refused(make, settings, match):
    store = make()

    with pytest.raises(InvalidArgument, match=match):
        store.create("jobs", QueueSettings(**settings))
    assert store.queue_count == 0


def test_settings_must_be_queue_settings(make):
    with pytest.raises(InvalidArgument, match="not dict"):
        make().create("jobs", {"fifo": True})


def test_dead_letter_queue_must_exist_and_not_be_the_queue(make):
    store = make()
    settings = QueueSettings(max_receive_count=2, dead_letter_queue="dead")

    with pytest.raises(FailedPrecondition, match="dead_letter_queue 'dead' does"):
        store.create("jobs", settings)
    with pytest.raises(InvalidArgument, match="'dead' cannot be its own"):
        store.create("dead", settings)
    store.create("dead", QueueSettings())
    assert store.create("jobs", settings) is True


def test_dead_letter_queue_must_match_fifo(make):
    store = make()
    store.create("dead", QueueSettings())

    with pytest.raises(FailedPrecondition, match="'dead' must be a fifo queue"):
        store.create("jobs", QueueSettings(
            fifo=True, max_receive_count=1, dead_letter_queue="dead"))
    assert store.queue_count == 1


def test_queue_count_limit(make):
    store = make(max_queues=2)
    store.create("a", QueueSettings())
    store.create("b", QueueSettings())

    with pytest.raises(ResourceExhausted, match="'c' would pass the limit of 2"):
        store.create("c", QueueSettings())
    assert store.create("a", QueueSettings()) is False
    store.delete("a")
    assert store.create("c", QueueSettings()) is True


def test_operations_on_a_missing_queue_are_not_found(store):
    calls = [
        lambda: store.delete("nope"),
        lambda: store.attributes("nope"),
        lambda: store.send("nope", [msg(b"x")]),
        lambda: store.receive("nope"),
        lambda: store.ack("nope", ["r"]),
        lambda: store.change_lease("nope", "r", 0),
        lambda: store.purge("nope"),
        lambda: store.next_wakeup("nope"),
    ]
    for call in calls:
        with pytest.raises(NotFound, match="queue 'nope' not found"):
            call()


def test_delete_refuses_a_queue_in_use_as_dead_letter_queue(make):
    store = make()
    store.create("dead", QueueSettings())
    store.create("jobs", QueueSettings(max_receive_count=1,
                                       dead_letter_queue="dead"))

    with pytest.raises(FailedPrecondition,
                       match="'dead' is the dead_letter_queue of 'jobs'"):
        store.delete("dead")
    store.delete("jobs")
    store.delete("dead")
    assert store.queue_count == 0


def test_delete_drops_messages_and_a_new_incarnation_has_new_ids(store):
    first = store.send("jobs", [msg(b"abc"), msg(b"de")])

    store.delete("jobs")
    assert (store.bytes_stored, store.message_count()) == (0, 0)
    store.create("jobs", QueueSettings())
    again = store.send("jobs", [msg(b"abc"), msg(b"de")])

    assert not set(first) & set(again)
    assert bodies(store.receive("jobs", 10)) == [b"abc", b"de"]


def list_all(store, prefix="", page_size=0):
    pages, token = [], ""
    while True:
        names, token = store.names(prefix, page_size, token)
        pages.append(names)
        if not token:
            return pages
        assert len(pages) < 1000, "listing does not end"


def test_names_page_in_order_by_prefix(make):
    store = make()
    names = ["b2", "a", "b1", "c", "b3", "b10", "ba"]
    for name in names:
        store.create(name, QueueSettings())

    assert store.names() == (sorted(names), "")
    assert list_all(store, "b", 2) == [["b1", "b10"], ["b2", "b3"], ["ba"]]
    assert list_all(store, "b", 5) == [["b1", "b10", "b2", "b3", "ba"]]
    assert list_all(store, "", 3) == [["a", "b1", "b10"], ["b2", "b3", "ba"],
                                      ["c"]]
    assert store.names("x") == ([], "")


def test_names_survive_deletes_between_pages(make):
    store = make()
    for name in ["a", "b", "c", "d"]:
        store.create(name, QueueSettings())

    page, token = store.names("", 2)
    store.delete("b")
    store.delete("c")

    assert (page, token) == (["a", "b"], "b")
    assert store.names("", 2, token) == (["d"], "")


@pytest.mark.parametrize("page_size", [-1, 1001])
def test_bad_page_size_is_refused(store, page_size):
    with pytest.raises(InvalidArgument, match=f"page_size {page_size}"):
        store.names("", page_size)


def test_default_page_size_is_1000(make):
    store = make(max_queues=1001)
    for i in range(1001):
        store.create(f"q{i:04}", QueueSettings())

    page, token = store.names()
    assert (len(page), token) == (1000, "q0999")
    assert store.names(page_token=token) == (["q1000"], "")


# -- send, receive, ack -------------------------------------------------------


def test_send_receive_ack(store):
    [mid] = store.send("jobs", [msg(b"hello")])

    [got] = store.receive("jobs")

    assert isinstance(got, Received)
    assert (got.message_id, got.body, got.receive_count) == (mid, b"hello", 1)
    assert (got.sent_unix_ms, got.group) == (1_700_000_000_250, "")
    assert got.receipt and got.receipt != mid
    assert store.receive("jobs") == []
    assert counts(store) == (0, 1, 0)
    assert store.ack("jobs", [got.receipt]) == []
    assert counts(store) == (0, 0, 0)
    assert (store.bytes_stored, store.message_count()) == (0, 0)
    assert store.ack("jobs", [got.receipt]) == [got.receipt]


def test_batches_keep_order_and_ids_are_unique(store):
    ids = store.send("jobs", [msg(b"1"), msg(b"2"), msg(b"3")])
    ids += store.send("jobs", [msg(b"4")])

    first = store.receive("jobs", 2)
    rest = store.receive("jobs", 0)

    assert len(set(ids)) == 4
    assert bodies(first) == [b"1", b"2"] and bodies(rest) == [b"3"]
    assert [r.message_id for r in first + rest] == ids[:3]
    assert bodies(store.receive("jobs", 1000)) == [b"4"]
    receipts = [r.receipt for r in first + rest]
    assert store.ack("jobs", receipts) == []
    assert store.message_count() == 1


@pytest.mark.parametrize("entries", [[], [msg(b"x")] * 1001])
def test_batch_size_is_1_to_1000(store, entries):
    with pytest.raises(InvalidArgument, match=f"not {len(entries)}"):
        store.send("jobs", entries)
    assert len(store.send("jobs", [msg(b"x")] * 1000)) == 1000


@pytest.mark.parametrize("max_messages", [-1, 1001])
def test_receive_max_messages_is_0_to_1000(store, max_messages):
    with pytest.raises(InvalidArgument, match=f"max_messages {max_messages}"):
        store.receive("jobs", max_messages)


def test_a_bad_entry_fails_the_whole_batch(store):
    with pytest.raises(InvalidArgument, match="delay_ms 900001"):
        store.send("jobs", [msg(b"ok"), msg(b"late", 15 * 60 * 1000 + 1)])
    with pytest.raises(InvalidArgument, match="delay_ms -1"):
        store.send("jobs", [msg(b"ok"), msg(b"early", -1)])

    assert (store.message_count(), store.bytes_stored) == (0, 0)


def test_group_and_dedup_id_need_a_fifo_queue(store):
    with pytest.raises(InvalidArgument, match="group 'g'.*'jobs' is not one"):
        store.send("jobs", [msg(b"x"), msg(b"y", group="g")])
    with pytest.raises(InvalidArgument, match="dedup_id 'd'"):
        store.send("jobs", [msg(b"y", dedup_id="d")])
    assert store.message_count() == 0


# -- delays, leases, receipts -------------------------------------------------


def test_delayed_message_shows_when_its_delay_ends(store, clock):
    store.send("jobs", [msg(b"later", 500), msg(b"now")])

    assert bodies(store.receive("jobs", 10)) == [b"now"]
    assert counts(store) == (0, 1, 1)
    clock.advance(375)
    assert store.receive("jobs") == []
    clock.advance(125)
    assert counts(store) == (1, 1, 0)
    assert bodies(store.receive("jobs")) == [b"later"]


def test_default_delay_applies_to_messages_sent_without_one(make, clock):
    store = make()
    store.create("slow", QueueSettings(default_delay_ms=1000))
    store.send("slow", [msg(b"a"), msg(b"b", 250)])

    clock.advance(250)
    assert bodies(store.receive("slow", 10)) == [b"b"]
    clock.advance(625)
    assert store.receive("slow", 10) == []
    clock.advance(125)
    assert bodies(store.receive("slow", 10)) == [b"a"]


def test_expired_lease_redelivers_with_a_new_receipt(store, clock):
    store.send("jobs", [msg(b"work")])
    [first] = store.receive("jobs", lease_ms=1000)

    clock.advance(875)
    assert store.receive("jobs") == []
    clock.advance(125)
    [second] = store.receive("jobs")

    assert second.message_id == first.message_id
    assert (second.receive_count, second.body) == (2, b"work")
    assert second.receipt != first.receipt
    assert store.ack("jobs", [first.receipt]) == [first.receipt]
    with pytest.raises(FailedPrecondition,
                       match="is stale: its message was delivered again since"):
        store.change_lease("jobs", first.receipt, 1000)
    assert store.ack("jobs", [second.receipt]) == []
    assert store.message_count() == 0


def test_default_lease_is_used_when_receive_names_none(make, clock):
    store = make()
    store.create("jobs", QueueSettings(default_lease_ms=2000))
    store.send("jobs", [msg(b"x")])
    store.receive("jobs")

    clock.advance(1875)
    assert store.receive("jobs") == []
    clock.advance(125)
    assert [r.receive_count for r in store.receive("jobs")] == [2]


def test_stale_receipt_of_an_expired_lease(store, clock):
    store.send("jobs", [msg(b"x")])
    [got] = store.receive("jobs", lease_ms=500)
    clock.advance(500)

    with pytest.raises(FailedPrecondition, match="is stale: its lease ended"):
        store.change_lease("jobs", got.receipt, 1000)
    assert store.ack("jobs", [got.receipt]) == [got.receipt]
    assert counts(store) == (1, 0, 0)


def test_change_lease_extends_from_now(store, clock):
    store.send("jobs", [msg(b"x")])
    [got] = store.receive("jobs", lease_ms=1000)

    clock.advance(750)
    store.change_lease("jobs", got.receipt, 1000)
    clock.advance(875)
    assert store.receive("jobs") == []
    assert store.ack("jobs", [got.receipt]) == []
    assert store.message_count() == 0


def test_change_lease_can_shorten(store, clock):
    store.send("jobs", [msg(b"x")])
    [got] = store.receive("jobs", lease_ms=10_000)

    store.change_lease("jobs", got.receipt, 250)
    clock.advance(250)

    assert [r.receive_count for r in store.receive("jobs")] == [2]


def test_change_lease_zero_releases_at_once(store):
    store.send("jobs", [msg(b"x")])
    [got] = store.receive("jobs")

    store.change_lease("jobs", got.receipt, 0)

    [again] = store.receive("jobs")
    assert again.receive_count == 2
    assert store.ack("jobs", [got.receipt]) == [got.receipt]


@pytest.mark.parametrize("lease_ms", [-1, 12 * 3600 * 1000 + 1])
def test_lease_over_12_hours_is_refused(store, lease_ms):
    store.send("jobs", [msg(b"x")])

    with pytest.raises(InvalidArgument, match=f"lease_ms {lease_ms}"):
        store.receive("jobs", lease_ms=lease_ms)
    [got] = store.receive("jobs", lease_ms=12 * 3600 * 1000)
    with pytest.raises(InvalidArgument, match=f"lease_ms {lease_ms}"):
        store.change_lease("jobs", got.receipt, lease_ms)


def test_many_extensions_keep_one_live_lease(store, clock):
    store.send("jobs", [msg(b"x")])
    [got] = store.receive("jobs", lease_ms=1000)

    for _ in range(1000):
        clock.advance(125)
        store.change_lease("jobs", got.receipt, 1000)
    clock.advance(875)
    assert store.receive("jobs") == []
    clock.advance(125)

    assert [r.receive_count for r in store.receive("jobs")] == [2]


def test_leases_expire_on_time_after_many_acks(store, clock):
    store.send("jobs", [msg(b"%d" % i) for i in range(200)])
    got = store.receive("jobs", 200, lease_ms=1000)

    assert store.ack("jobs", [r.receipt for r in got[:-1]]) == []
    clock.advance(875)
    assert store.receive("jobs") == []
    clock.advance(125)

    assert [(r.body, r.receive_count) for r in store.receive("jobs")] == [
        (b"199", 2)]


@pytest.mark.parametrize("receipt", [
    "", "garbage", ".", "x.y.z", "1-1", "1-1.", "1-1.zz", "1-1.0", "1-1.01",
    "1-1.-1", "1-1.2", "9-1.1", "ünï.1", "1-1.1" * 1000,
])
def test_malformed_receipts_are_stale(store, receipt):
    store.send("jobs", [msg(b"x")])
    [got] = store.receive("jobs")

    assert store.ack("jobs", [receipt, got.receipt]) == [receipt]
    with pytest.raises(FailedPrecondition, match="is stale"):
        store.change_lease("jobs", receipt, 1000)


def test_receipt_of_another_queue_is_stale(store):
    store.create("other", QueueSettings())
    store.send("other", [msg(b"x")])
    [got] = store.receive("other")

    assert store.ack("jobs", [got.receipt]) == [got.receipt]
    with pytest.raises(FailedPrecondition, match="not a receipt of queue 'jobs'"):
        store.change_lease("jobs", got.receipt, 0)
    assert store.ack("other", [got.receipt]) == []


def test_duplicate_receipts_in_one_ack(store):
    store.send("jobs", [msg(b"x")])
    [got] = store.receive("jobs")

    assert store.ack("jobs", [got.receipt, got.receipt]) == [got.receipt]
    assert store.ack("jobs", []) == []


def test_release_receipts_ends_live_leases_and_skips_stale(store):
    store.create("other", QueueSettings())
    store.send("jobs", [msg(b"a"), msg(b"b")])
    store.send("other", [msg(b"c")])
    a, b = store.receive("jobs", 2)
    [c] = store.receive("other")
    store.ack("jobs", [b.receipt])

    store.release_receipts([("jobs", a.receipt), ("jobs", b.receipt),
                            ("other", c.receipt), ("gone", "x"),
                            ("jobs", "junk")])

    assert [(r.body, r.receive_count) for r in store.receive("jobs", 10)] == [
        (b"a", 2)]
    assert [(r.body, r.receive_count) for r in store.receive("other")] == [
        (b"c", 2)]


def test_redelivered_message_goes_to_the_back(store):
    store.send("jobs", [msg(b"1"), msg(b"2")])
    [one] = store.receive("jobs")

    store.change_lease("jobs", one.receipt, 0)

    assert bodies(store.receive("jobs", 10)) == [b"2", b"1"]


# -- dead letters -------------------------------------------------------------


@pytest.fixture
def dlq_store(make):
    store = make()
    store.create("dead", QueueSettings())
    store.create("jobs", QueueSettings(max_receive_count=2,
                                       dead_letter_queue="dead"))
    return store


def test_message_moves_to_dead_letters_after_max_receive_count(dlq_store, clock):
    store = dlq_store
    [mid] = store.send("jobs", [msg(b"poison")])
    for count in (1, 2):
        [got] = store.receive("jobs", 10, lease_ms=1000)
        assert (got.body, got.receive_count) == (b"poison", count)
        clock.advance(1000)
    store.send("jobs", [msg(b"fine")])

    assert bodies(store.receive("jobs", 10)) == [b"fine"]
    [dead] = store.receive("dead")
    assert (dead.body, dead.receive_count) == (b"poison", 1)
    assert dead.message_id != mid
    assert counts(store) == (0, 1, 0)
    assert counts(store, "dead") == (0, 1, 0)
    assert store.attributes("dead")["bytes"] == len(b"poison")
    assert store.attributes("jobs")["bytes"] == len(b"fine")
    assert store.bytes_stored == len(b"poison") + len(b"fine")
    assert store.message_count() == 2


def test_ack_before_the_limit_keeps_the_message_out_of_dead_letters(dlq_store):
    store = dlq_store
    store.send("jobs", [msg(b"x")])
    store.change_lease("jobs", store.receive("jobs")[0].receipt, 0)

    [got] = store.receive("jobs")
    store.ack("jobs", [got.receipt])

    assert got.receive_count == 2
    assert store.receive("dead") == []


def test_fifo_dead_letters_keep_the_group(make):
    store = make()
    store.create("dead", QueueSettings(fifo=True))
    store.create("jobs", QueueSettings(fifo=True, max_receive_count=1,
                                       dead_letter_queue="dead"))
    store.send("jobs", [msg(b"1", group="g"), msg(b"2", group="g")])
    store.change_lease("jobs", store.receive("jobs")[0].receipt, 0)

    [second] = store.receive("jobs")
    [dead] = store.receive("dead")

    assert (second.body, second.receive_count) == (b"2", 1)
    assert (dead.body, dead.group, dead.receive_count) == (b"1", "g", 1)


# -- FIFO ---------------------------------------------------------------------


@pytest.fixture
def fifo(make):
    store = make()
    store.create("f", QueueSettings(fifo=True))
    return store


def test_fifo_gives_one_lease_per_group_in_order(fifo, clock):
    fifo.send("f", [msg(b"a1", group="a"), msg(b"a2", group="a"),
                    msg(b"b1", group="b"), msg(b"a3", group="a")])

    first = fifo.receive("f", 10, lease_ms=1000)
    assert [(r.body, r.group) for r in first] == [(b"a1", "a"), (b"b1", "b")]
    assert fifo.receive("f", 10) == []

    fifo.ack("f", [first[0].receipt])
    [a2] = fifo.receive("f", 10, lease_ms=500)
    assert a2.body == b"a2"

    clock.advance(500)
    [again] = fifo.receive("f", 10)
    assert (again.body, again.receive_count) == (b"a2", 2)
    fifo.ack("f", [again.receipt, first[1].receipt])
    assert bodies(fifo.receive("f", 10)) == [b"a3"]


def test_fifo_released_message_is_the_head_again(fifo):
    fifo.send("f", [msg(b"1", group="g"), msg(b"2", group="g")])
    [one] = fifo.receive("f")

    fifo.release_receipts([("f", one.receipt)])

    [again] = fifo.receive("f", 10)
    assert (again.body, again.receive_count) == (b"1", 2)


def test_fifo_needs_a_group(fifo):
    with pytest.raises(InvalidArgument, match="fifo queue 'f' needs a group"):
        fifo.send("f", [msg(b"x", group="g"), msg(b"y")])
    with pytest.raises(InvalidArgument, match="longer than 128"):
        fifo.send("f", [msg(b"x", group="g" * 129)])
    assert fifo.message_count() == 0


def test_fifo_dedup_within_and_after_the_window(make, clock):
    store = make()
    store.create("f", QueueSettings(fifo=True, dedup_window_ms=1000))
    [first] = store.send("f", [msg(b"x", group="g", dedup_id="d1")])

    again = store.send("f", [msg(b"other", group="g", dedup_id="d1"),
                             msg(b"y", group="g", dedup_id="d2"),
                             msg(b"y2", group="g", dedup_id="d2")])
    assert again[0] == first and again[1] == again[2] != first
    assert store.message_count() == 2
    [got] = store.receive("f")
    store.ack("f", [got.receipt])

    clock.advance(875)
    assert store.send("f", [msg(b"z", group="g", dedup_id="d1")]) == [first]
    clock.advance(125)
    [fresh] = store.send("f", [msg(b"z", group="g", dedup_id="d1")])

    assert fresh != first
    assert store.message_count() == 2
    assert got.body == b"x"


def test_repeats_in_a_batch_take_room_once(make):
    store = make(max_depth=1)
    store.create("f", QueueSettings(fifo=True))

    ids = store.send("f", [msg(b"x", group="g", dedup_id="d"),
                           msg(b"x", group="g", dedup_id="d")])

    assert ids[0] == ids[1]
    assert store.message_count() == 1
    assert store.send("f", [msg(b"x", group="g", dedup_id="d")]) == ids[:1]
    with pytest.raises(ResourceExhausted):
        store.send("f", [msg(b"x", group="g", dedup_id="e")])


def test_dead_letters_may_pass_the_depth_limit(make):
    store = make(max_depth=1)
    store.create("dead", QueueSettings(fifo=True))
    store.create("f", QueueSettings(fifo=True, max_receive_count=1,
                                    dead_letter_queue="dead"))
    [mid] = store.send("dead", [msg(b"d", group="g", dedup_id="once")])
    store.send("f", [msg(b"x", group="g")])
    store.change_lease("f", store.receive("f")[0].receipt, 0)

    assert store.receive("f") == []
    assert counts(store, "dead") == (2, 0, 0)
    assert store.send("dead", [msg(b"d", group="g", dedup_id="once")]) == [mid]
    with pytest.raises(ResourceExhausted, match="'dead' holds 2 messages"):
        store.send("dead", [msg(b"d", group="g")])


def test_fifo_delayed_message_joins_its_group_when_ready(fifo, clock):
    fifo.send("f", [msg(b"late", 250, group="g"), msg(b"early", group="g")])

    [early] = fifo.receive("f")
    clock.advance(250)
    assert fifo.receive("f") == []
    fifo.ack("f", [early.receipt])

    assert bodies(fifo.receive("f")) == [b"late"]


# -- limits -------------------------------------------------------------------


def test_message_size_limit(make):
    store = make(max_message_bytes=10)
    store.create("jobs", QueueSettings())

    with pytest.raises(ResourceExhausted,
                       match="message of 11 bytes is over the limit of 10 bytes"):
        store.send("jobs", [msg(b"ok"), msg(b"x" * 11)])
    assert store.message_count() == 0
    assert len(store.send("jobs", [msg(b"x" * 10)])) == 1


def test_depth_limit_counts_every_state(make):
    store = make(max_depth=3)
    store.create("jobs", QueueSettings())
    store.send("jobs", [msg(b"1"), msg(b"2", 1000)])
    store.receive("jobs")

    with pytest.raises(ResourceExhausted, match="'jobs' holds 2 messages; 2 more"):
        store.send("jobs", [msg(b"3"), msg(b"4")])
    store.send("jobs", [msg(b"3")])
    with pytest.raises(ResourceExhausted, match="limit of 3"):
        store.send("jobs", [msg(b"4")])
    assert store.message_count() == 3


def test_bytes_limit_spans_queues_and_frees_on_ack(make):
    store = make(max_bytes=10)
    store.create("a", QueueSettings())
    store.create("b", QueueSettings())
    store.send("a", [msg(b"123456")])

    with pytest.raises(ResourceExhausted,
                       match="hold 6 bytes; 5 more would pass the limit of 10"):
        store.send("b", [msg(b"12345")])
    store.send("b", [msg(b"1234")])
    store.ack("a", [store.receive("a")[0].receipt])
    store.send("b", [msg(b"12345")])

    assert store.bytes_stored == 9


def test_bytes_limit_reclaims_expired_messages_of_other_queues(make, clock):
    store = make(max_bytes=10)
    store.create("a", QueueSettings(retention_ms=1000))
    store.create("b", QueueSettings())
    store.send("a", [msg(b"12345678")])

    clock.advance(1000)
    store.send("b", [msg(b"12345678")])

    assert store.bytes_stored == 8
    assert store.attributes("a")["bytes"] == 0


# -- attributes, purge, retention, wakeups ------------------------------------


def test_attributes_count_each_state(store, clock):
    store.send("jobs", [msg(b"ab"), msg(b"cde"), msg(b"f", 5000)])
    clock.advance(250)
    store.send("jobs", [msg(b"gh")])
    store.receive("jobs")
    clock.advance(500)

    a = store.attributes("jobs")

    assert a == {
        "name": "jobs", "settings": QueueSettings(), "depth": 2,
        "in_flight": 1, "delayed": 1, "oldest_age_ms": 750,
        "created_unix_ms": 1_700_000_000_250, "bytes": 8,
    }


def test_empty_queue_has_no_age(store):
    assert store.attributes("jobs")["oldest_age_ms"] == 0


def test_purge_drops_every_message(store):
    store.create("other", QueueSettings())
    store.send("other", [msg(b"keep")])
    store.send("jobs", [msg(b"a"), msg(b"b"), msg(b"c", 1000)])
    [got] = store.receive("jobs")

    assert store.purge("jobs") == 3

    assert counts(store) == (0, 0, 0)
    assert store.ack("jobs", [got.receipt]) == [got.receipt]
    assert store.next_wakeup("jobs") is None
    assert (store.bytes_stored, store.message_count()) == (4, 1)
    store.send("jobs", [msg(b"d")])
    assert bodies(store.receive("jobs", 10)) == [b"d"]


def test_retention_drops_old_messages_in_every_state(make, clock):
    store = make()
    store.create("jobs", QueueSettings(retention_ms=1000))
    store.send("jobs", [msg(b"ready"), msg(b"leased"), msg(b"delayed", 5000)])
    [got] = store.receive("jobs", lease_ms=10_000)
    clock.advance(500)
    store.send("jobs", [msg(b"young")])

    clock.advance(500)

    assert counts(store) == (1, 0, 0)
    assert store.message_count() == 1
    assert store.bytes_stored == len(b"young")
    assert store.ack("jobs", [got.receipt]) == [got.receipt]
    assert bodies(store.receive("jobs", 10)) == [b"young"]
    clock.advance(500)
    assert store.message_count() == 0


def test_fifo_retention_empties_a_group(make, clock):
    store = make()
    store.create("f", QueueSettings(fifo=True, retention_ms=1000))
    store.send("f", [msg(b"old", group="a"), msg(b"old", group="b")])
    store.receive("f", lease_ms=10_000)
    clock.advance(1000)
    store.send("f", [msg(b"new", group="a"), msg(b"new", group="c")])

    got = store.receive("f", 10)

    assert [(r.body, r.group) for r in got] == [(b"new", "a"), (b"new", "c")]
    assert store.message_count() == 2


def test_next_wakeup(store, clock):
    assert store.next_wakeup("jobs") is None
    store.send("jobs", [msg(b"a", 2000)])
    assert store.next_wakeup("jobs") == START + 2
    store.send("jobs", [msg(b"b")])
    [got] = store.receive("jobs", lease_ms=1000)
    assert store.next_wakeup("jobs") == START + 1

    store.ack("jobs", [got.receipt])
    assert store.next_wakeup("jobs") == START + 2
    clock.advance(2000)
    assert store.next_wakeup("jobs") is None
    [got] = store.receive("jobs", lease_ms=500)
    assert store.next_wakeup("jobs") == START + 2.5
    store.change_lease("jobs", got.receipt, 0)
    assert store.next_wakeup("jobs") is None


# -- invariants under random operations ---------------------------------------


class Model:
    """What the test knows: sent bodies, acks, and when each lease ends."""

    def __init__(self, store, clock, fifo):
        self.store, self.clock, self.fifo = store, clock, fifo
        self.sent: dict[str, bytes] = {}
        self.acked: dict[str, list[str]] = {"q": [], "dead": []}
        self.leases: dict[tuple[str, str], tuple[float, Received]] = {}

    def tick(self):
        now = self.clock.now
        self.leases = {k: v for k, v in self.leases.items() if v[0] > now}

    def received(self, name, got, lease_ms):
        ends = self.clock.now + (lease_ms or 30_000) / 1000
        held = {r.message_id for _, r in self.leases.values()}
        groups = {(k[0], r.group) for k, (_, r) in self.leases.items()}
        for r in got:
            assert r.message_id not in held, "two leases on one message"
            if self.fifo:
                assert (name, r.group) not in groups, "a group leased twice"
                groups.add((name, r.group))
            self.leases[(name, r.receipt)] = (ends, r)

    def check(self):
        store = self.store
        total_bytes = total_messages = 0
        for name in ("q", "dead"):
            a = store.attributes(name)
            assert min(a["depth"], a["in_flight"], a["delayed"]) >= 0
            assert a["in_flight"] == sum(1 for k in self.leases if k[0] == name)
            total_bytes += a["bytes"]
            total_messages += a["depth"] + a["in_flight"] + a["delayed"]
            wakeup = store.next_wakeup(name)
            assert wakeup is None or wakeup > self.clock.now
        assert store.bytes_stored == total_bytes
        assert store.message_count() == total_messages


def random_step(rng, model):
    store, clock = model.store, model.clock
    name = rng.choice(["q", "dead"])
    op = rng.random()
    if op < 0.3:
        entries = [msg(bytes([rng.randrange(256)]) * rng.randrange(1, 9),
                       rng.choice([0, 0, 250, 1000]),
                       rng.choice("abc") if model.fifo else "")
                   for _ in range(rng.randrange(1, 4))]
        before = store.message_count()
        try:
            ids = store.send("q", entries)
        except ResourceExhausted:
            assert store.message_count() == before
            return
        model.sent.update(zip(ids, (e[0] for e in entries), strict=True))
    elif op < 0.6:
        lease_ms = rng.choice([0, 250, 500])
        got = store.receive(name, rng.randrange(4), lease_ms)
        model.received(name, got, lease_ms)
    elif op < 0.8 and model.leases:
        key = rng.choice(sorted(model.leases))
        assert store.ack(key[0], [key[1]]) == []
        model.acked[key[0]].append(model.leases.pop(key)[1].message_id)
    elif op < 0.9 and model.leases:
        key = rng.choice(sorted(model.leases))
        lease_ms = rng.choice([0, 250])
        store.change_lease(key[0], key[1], lease_ms)
        if lease_ms:
            model.leases[key] = (clock.now + 0.25, model.leases[key][1])
        else:
            del model.leases[key]
    else:
        clock.advance(rng.choice([125, 250, 500]))
    model.tick()


def drain(model):
    """Release every lease, then receive and ack until both queues are empty."""
    store = model.store
    store.release_receipts(list(model.leases))
    model.leases.clear()
    model.clock.advance(1000)
    for _ in range(1000):
        if not store.message_count():
            return
        for name in ("q", "dead"):
            got = store.receive(name, 1000)
            assert store.ack(name, [r.receipt for r in got]) == []
            model.acked[name] += [r.message_id for r in got]
    raise AssertionError("the queues do not drain")


@pytest.mark.parametrize("seed", range(8))
def test_random_operations_keep_counts_and_lose_nothing(make, clock, seed):
    rng = random.Random(seed)
    fifo = seed % 2 == 1
    store = make(max_depth=40, max_bytes=300)
    store.create("dead", QueueSettings(fifo=fifo))
    store.create("q", QueueSettings(fifo=fifo, max_receive_count=3,
                                    dead_letter_queue="dead"))
    model = Model(store, clock, fifo)

    for _ in range(1500):
        random_step(rng, model)
        model.check()
    drain(model)

    acked_q, acked_dead = model.acked["q"], model.acked["dead"]
    assert len(set(acked_q)) == len(acked_q) and set(acked_q) <= set(model.sent)
    assert len(acked_q) + len(acked_dead) == len(model.sent)
    assert acked_dead, "no message reached the dead-letter queue"
    assert store.bytes_stored == 0
