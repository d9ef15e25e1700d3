"""Snapshots of the stores: a store pickled and loaded by the journal's own
pickler goes on exactly as the store it was taken from, in both twins.

Each test drives a store and its copy side by side with the random drivers
of test_hot, taking a fresh copy every few hundred calls, so that copies are
taken in many states (leases held, stale heap entries, dedup windows open).
"""

import random

import pytest

from nubis._hot import built
from nubis.blob import store as pure_blob
from nubis.clock import KernelClock
from nubis.journal import snapshot
from nubis.queue import QueueLimits, QueueSettings
from nubis.queue import store as pure_queue
from tests.test_hot import NOT_BUILT, blob_step, queue_step, same

QUEUES = [
    ("dead", QueueSettings()),
    ("fdead", QueueSettings(fifo=True)),
    ("q", QueueSettings(max_receive_count=3, dead_letter_queue="dead",
                        retention_ms=4000, default_lease_ms=1000)),
    ("f", QueueSettings(fifo=True, max_receive_count=2, dead_letter_queue="fdead",
                        dedup_window_ms=2000, default_delay_ms=125)),
    ("more", QueueSettings()),
]


def twin(module: str, pure_cls, name: str):
    """The store class of a twin: "pure", or "compiled" where it is built."""
    if name == "pure":
        return pure_cls
    ext = built(module)
    if ext is None:
        pytest.skip(f"nubis._ext.{module}: {NOT_BUILT}")
    return getattr(ext, pure_cls.__name__)


class PinnedClock:
    """The kernel clock, pinned to `now`, which the random drivers move."""

    def __init__(self, start: float):
        self.kernel = KernelClock()
        self.kernel.pinned = start

    @property
    def now(self) -> float:
        return self.kernel.pinned

    @now.setter
    def now(self, value: float) -> None:
        self.kernel.pinned = value


def copy(store, clock: PinnedClock):
    """The store through a snapshot's pickle, as a restart loads it."""
    data = snapshot.dumps({"store": store}, clock.kernel)
    restored = snapshot.loads(data, clock.kernel)["store"]

    assert type(restored) is type(store)
    if hasattr(type(store), "__reduce__") and type(store).__module__.startswith(
            "nubis._ext"):
        # Loading and exporting again gives back the same state.
        assert restored.__reduce__()[1] == store.__reduce__()[1]
    return restored


def queue_store(cls, clock: PinnedClock):
    limits = QueueLimits(max_depth=30, max_bytes=200, max_queues=6)
    return cls(limits, clock=clock.kernel.now, wall=clock.kernel.now)


@pytest.mark.parametrize("name", ["pure", "compiled"])
@pytest.mark.parametrize("seed", range(4))
def test_queue_store_copy_goes_on_alike(name, seed):
    cls = twin("queue_store", pure_queue.QueueStore, name)
    rng = random.Random(seed)
    clock = PinnedClock(1_700_000_000.0)
    store = queue_store(cls, clock)
    for queue, settings in QUEUES:
        store.create(queue, settings)

    receipts = []
    for _ in range(8):
        stores = [store, copy(store, clock)]
        for _ in range(400):
            queue_step(rng, stores, clock, receipts)
        same(stores, "names")
        for queue, _ in QUEUES:
            same(stores, "attributes", queue)
    same(stores, "delete", "more")
    same(stores, "create", "later", QueueSettings(fifo=True))
    same(stores, "send", "later", [(b"x", 0, "g", "d")])


@pytest.mark.parametrize("name", ["pure", "compiled"])
def test_queue_store_copy_keeps_stale_lease_entries(name):
    """Stale lease-heap entries decide when the heap is rebuilt, and so the
    ids that follow: a copy must rebuild at the same call."""
    cls = twin("queue_store", pure_queue.QueueStore, name)
    clock = PinnedClock(1_700_000_000.0)
    store = queue_store(cls, clock)
    store.create("q", QueueSettings())
    store.send("q", [(b"x", 0, "", "")] * 25)
    got = store.receive("q", 25, 1000)
    for i in range(30):
        store.change_lease("q", got[i % 25].receipt, 1000 + 125 * (i % 3))

    stores = [store, copy(store, clock)]
    for i in range(30, 120):
        same(stores, "change_lease", "q", got[i % 25].receipt, 1000 + 125 * (i % 3))
        same(stores, "send", "q", [(b"y", 0, "", "")])
    clock.now += 1.125
    same(stores, "receive", "q", 200, 250)
    same(stores, "next_wakeup", "q")


@pytest.mark.parametrize("name", ["pure", "compiled"])
@pytest.mark.parametrize("seed", range(3))
def test_blob_store_copy_goes_on_alike(name, seed):
    cls = twin("blob_store", pure_blob.BlobStore, name)
    rng = random.Random(seed)
    clock = PinnedClock(1_700_000_000.0)
    limits = pure_blob.BlobLimits(max_bytes=900, max_blob_bytes=30, max_blobs=50,
                                  max_metadata_bytes=6)
    store = cls(limits, wall=clock.kernel.now)

    for _ in range(6):
        stores = [store, copy(store, clock)]
        for _ in range(300):
            clock.now += 0.001
            blob_step(rng, stores)
        same(stores, "list", "", "", 1000, "")


@pytest.mark.parametrize("name", ["pure", "compiled"])
def test_blob_store_copy_lists_a_big_index_alike(name):
    cls = twin("blob_store", pure_blob.BlobStore, name)
    clock = PinnedClock(1_700_000_000.0)
    store = cls(wall=clock.kernel.now)
    keys = [f"{i:05d}" for i in range(3000)]
    random.Random(2).shuffle(keys)
    for key in keys:
        store.put(key, key.encode())

    stores = [store, copy(store, clock)]
    for key in keys[::3]:
        same(stores, "delete", key)
    for key in keys[:500]:
        same(stores, "put", key + "x", b"")
    token = ""
    while True:
        page = same(stores, "list", "0", "", 700, token)[1]
        token = page[2]
        if not token:
            break


def test_a_compiled_snapshot_says_when_its_module_is_not_built(monkeypatch):
    ext = built("queue_store")
    if ext is None:
        pytest.skip(f"nubis._ext.queue_store: {NOT_BUILT}")
    clock = KernelClock()
    data = snapshot.dumps({"store": ext.QueueStore(clock=clock.now,
                                                   wall=clock.now)}, clock)
    monkeypatch.setattr(snapshot._hot, "built", lambda module: None)

    with pytest.raises(Exception, match="nubis._ext.queue_store is not built"):
        snapshot.loads(data, clock)
