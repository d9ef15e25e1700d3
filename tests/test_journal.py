"""The journal: its record codec, replay equal to the live run for both twins,
damage handling, and restarts of a real kernel under each fsync policy."""

import logging
import os
import pickle
import random
import struct
import time
import zlib
from types import SimpleNamespace

import pytest

from nubis import tenants as tenants_module
from nubis._hot import built
from nubis.blob import store as pure_blob
from nubis.client import Client
from nubis.clock import KernelClock
from nubis.errors import NubisError
from nubis.journal import Journal, codec, snapshot
from nubis.journal.stores import raw
from nubis.queue import QueueSettings
from nubis.queue import store as pure_queue
from nubis.tenants import TenantRegistry
from tests.conftest import TOKENS, KernelProcess

TWINS = [("pure", pure_queue.QueueStore, pure_blob.BlobStore)]
if built("queue_store") and built("blob_store"):
    TWINS.append(("compiled", built("queue_store").QueueStore,
                  built("blob_store").BlobStore))


# -- the record codec ------------------------------------------------------------


def _records(data: bytes, start: int = 0):
    out = []
    scan = codec.scan(data, start)
    while True:
        try:
            out.append(next(scan))
        except StopIteration as stop:
            return out, stop.value


def test_codec_round_trip():
    records = [("q.send", "acme", 1.5, True, ("jobs", [(b"x" * 300, 0, "", "")])),
               ("b.put", "acme", 2.0, True, ("k", b"\x00\xff", "", {}, False,
                                             "", "ab")),
               ("t.delete", "", 3.0, True, ("old",))]
    data = b"".join(codec.encode(r) for r in records)
    got, (end, why) = _records(data)
    assert [r for _, r in got] == records
    assert end == len(data) and why == ""


def test_codec_torn_tail_and_flipped_byte():
    records = [("q.ack", "acme", float(i), True, ("jobs", [f"1-{i}.1"]))
               for i in range(20)]
    frames = [codec.encode(r) for r in records]
    data = b"".join(frames)
    cut = len(data) - len(frames[-1]) // 2
    got, (end, why) = _records(data[:cut])
    assert len(got) == 19 and "torn" in why
    assert end == len(data) - len(frames[-1])

    flipped = bytearray(data)
    at = sum(map(len, frames[:7])) + codec.HEADER.size + 3
    flipped[at] ^= 0x40
    got, (end, why) = _records(bytes(flipped))
    assert len(got) == 7 and why == "checksum mismatch"


def test_codec_refuses_objects():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    for hostile in (pickle.dumps(Evil(), 5), pickle.dumps(("x", Evil()), 2)):
        frame = codec.HEADER.pack(len(hostile), zlib.crc32(hostile)) + hostile
        got, (end, why) = _records(frame)
        assert got == [] and end == 0 and "refused" in why


def test_snapshot_refuses_other_classes(tmp_path):
    payload = pickle.dumps({"x": SimpleNamespace(a=1)}, 5)
    path = tmp_path / snapshot.NAME
    path.write_bytes(snapshot.MAGIC + snapshot.HEADER.pack(
        len(payload), zlib.crc32(payload)) + payload)
    with pytest.raises(snapshot.SnapshotError, match="may not hold"):
        snapshot.read(str(tmp_path), KernelClock())


# -- replay reaches the live state ----------------------------------------------------


class FakeTime:
    def __init__(self):
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def _boot(folder, twin, monkeypatch, fake, compact=0):
    """A kernel's tenants and journal, without transports."""
    _, queue_cls, blob_cls = twin
    monkeypatch.setattr(tenants_module, "QueueStore", queue_cls)
    monkeypatch.setattr(tenants_module, "BlobStore", blob_cls)
    clock = KernelClock(fake)
    registry = TenantRegistry(clock.now)
    registry.add("acme", TOKENS["acme"])
    kernel = SimpleNamespace(tenants=registry, clock=clock)
    journal = Journal(str(folder), "everysec", clock, compact)
    journal.open(kernel, release=False)
    return kernel, journal


def _random_run(kernel, fake, rng: random.Random, steps: int) -> None:
    q, b = kernel.tenants.by_name["acme"].queues, kernel.tenants.by_name["acme"].blobs
    q.create("dl", QueueSettings())
    q.create("std", QueueSettings(default_lease_ms=2000, max_receive_count=3,
                                  dead_letter_queue="dl", retention_ms=60_000))
    q.create("fifo", QueueSettings(fifo=True, default_lease_ms=1500))
    receipts = []
    for i in range(steps):
        fake.t += rng.choice((0.0, 0.001, 0.2, 0.9, 2.5))
        queue = rng.choice(("std", "fifo", "std", "dl"))
        op = rng.random()
        try:
            if op < 0.3:
                entries = [(f"m{i}.{k}".encode(), rng.choice((0, 0, 1000)),
                            f"g{rng.randrange(3)}" if queue == "fifo" else "",
                            f"d{rng.randrange(50)}" if queue == "fifo" else "")
                           for k in range(rng.randrange(1, 4))]
                q.send(queue, entries)
            elif op < 0.55:
                got = q.receive(queue, rng.randrange(0, 4), rng.choice((0, 700)))
                receipts += [(queue, m.receipt) for m in got]
            elif op < 0.7 and receipts:
                picked = rng.sample(receipts, min(len(receipts), 2))
                q.ack(picked[0][0], [r for _, r in picked])
            elif op < 0.75 and receipts:
                queue, receipt = rng.choice(receipts)
                q.change_lease(queue, receipt, rng.choice((0, 3000)))
            elif op < 0.8 and receipts:
                q.release_receipts(rng.sample(receipts, min(len(receipts), 3)))
            elif op < 0.86:
                q.attributes(queue)
            elif op < 0.9:
                q.next_wakeup(queue)
            elif op < 0.91:
                q.purge(queue)
            elif op < 0.97:
                key = f"k{rng.randrange(20)}"
                b.put(key, os.urandom(rng.randrange(0, 64)), "",
                      {"i": str(i)} if rng.random() < 0.3 else None)
            else:
                b.delete(f"k{rng.randrange(20)}")
        except NubisError:
            pass
        if len(receipts) > 40:
            del receipts[:20]


def _probe(kernel, fake) -> list:
    """What the stores hold, read the same way from both."""
    tenant = kernel.tenants.by_name["acme"]
    q, b = raw(tenant.queues), raw(tenant.blobs)
    fake.t += 0.5
    kernel.clock.pinned = fake.t
    try:
        out = [q.bytes_stored, b.bytes_stored]
        for name in q.names()[0]:
            a = q.attributes(name)
            out.append((name, a["depth"], a["in_flight"], a["delayed"], a["bytes"]))
            out.append([(m.message_id, m.body, m.receipt, m.receive_count,
                         m.sent_unix_ms) for m in q.receive(name, 1000, 60_000)])
            out.append(q.send(name, [(b"probe", 0, "g" if name == "fifo" else "",
                                      "")]))
        blobs, _, _ = b.list()
        out.append([(x.key, x.etag, x.size, x.created_unix_ms, x.metadata)
                    for x in blobs])
    finally:
        kernel.clock.pinned = None
    return out


@pytest.mark.parametrize("twin", TWINS, ids=lambda t: t[0])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replay_matches_live(tmp_path, monkeypatch, twin, seed):
    fake = FakeTime()
    live, journal = _boot(tmp_path, twin, monkeypatch, fake)
    _random_run(live, fake, random.Random(seed), 1500)
    journal.flush()
    assert journal.seq > 1000

    replayed_fake = FakeTime()
    replayed, journal2 = _boot(tmp_path, twin, monkeypatch, replayed_fake)
    assert journal2.replayed == journal.seq
    replayed_fake.t = fake.t
    assert _probe(replayed, replayed_fake) == _probe(live, fake)


@pytest.mark.parametrize("twin", TWINS, ids=lambda t: t[0])
def test_snapshot_then_tail_matches_live(tmp_path, monkeypatch, twin):
    fake = FakeTime()
    live, journal = _boot(tmp_path, twin, monkeypatch, fake)
    rng = random.Random(7)
    _random_run(live, fake, rng, 600)
    journal.flush()
    # What the forked child does, done here in-process.
    build = __import__("nubis.journal.log", fromlist=["_state"])._state(
        journal, live, journal.segment + 1)
    snapshot.write(str(tmp_path), build(), live.clock)
    journal.segment += 1
    journal._fd = journal._create_segment(journal.segment)
    _random_run(live, fake, rng, 600)
    journal.flush()

    replayed_fake = FakeTime()
    replayed, journal2 = _boot(tmp_path, twin, monkeypatch, replayed_fake)
    assert not os.path.exists(tmp_path / "journal.00000000")
    replayed_fake.t = fake.t
    assert _probe(replayed, replayed_fake) == _probe(live, fake)


@pytest.mark.parametrize("twin", TWINS, ids=lambda t: t[0])
def test_compaction_by_fork_then_restart_matches_live(tmp_path, monkeypatch,
                                                      twin):
    fake = FakeTime()
    live, journal = _boot(tmp_path, twin, monkeypatch, fake, compact=1 << 20)
    assert journal.compact_bytes == 1 << 20      # both twins can compact
    rng = random.Random(11)
    _random_run(live, fake, rng, 800)
    journal.flush()

    # As _drain does once the segments pass compact_bytes.
    journal._rotate()
    deadline = time.monotonic() + 30
    while journal._child is not None and time.monotonic() < deadline:
        time.sleep(0.02)
        journal._reap()
    assert journal._child is None
    assert os.path.exists(tmp_path / snapshot.NAME)
    assert not os.path.exists(tmp_path / "journal.00000000")
    _random_run(live, fake, rng, 400)
    journal.flush()

    replayed_fake = FakeTime()
    replayed, journal2 = _boot(tmp_path, twin, monkeypatch, replayed_fake)
    tenant = replayed.tenants.by_name["acme"]
    assert type(raw(tenant.queues)) is twin[1]
    assert type(raw(tenant.blobs)) is twin[2]
    replayed_fake.t = fake.t
    assert _probe(replayed, replayed_fake) == _probe(live, fake)


# -- damage: boots, and loses only what it reports -------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_damaged_journal_boots_and_says_what_it_lost(tmp_path, monkeypatch,
                                                      caplog, seed):
    rng = random.Random(seed)
    fake = FakeTime()
    live, journal = _boot(tmp_path, TWINS[0], monkeypatch, fake)
    _random_run(live, fake, rng, 300)
    journal.flush()
    os.close(journal._fd)
    path = tmp_path / "journal.00000000"
    data = path.read_bytes()
    offsets = [at for at, _ in _records(data, len(codec.MAGIC))[0]]

    damaged = bytearray(data)
    where = rng.randrange(len(codec.MAGIC), len(data))
    if seed % 2:
        del damaged[where:]
    else:
        damaged[where] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(damaged))
    kept = sum(1 for at in offsets if at < where
               and (at + codec.HEADER.size + struct.unpack_from("<I", data, at)[0]
                    <= where))

    caplog.set_level(logging.WARNING, "nubis.journal")
    replayed, journal2 = _boot(tmp_path, TWINS[0], monkeypatch, FakeTime())
    assert journal2.replayed == kept
    if kept < len(offsets):
        [warning] = [r for r in caplog.records if "damaged" in r.getMessage()]
        assert str(path) in warning.getMessage()
        assert os.path.getsize(path) == offsets[kept] if kept < len(offsets) else 1
        assert os.path.exists(f"{path}.bad-{offsets[kept]}")


# -- restarts of a real kernel -----------------------------------------------------


def _kernel(folder, policy):
    return KernelProcess(folder, env={"NUBIS_DATA_DIR": str(folder / "data"),
                                      "NUBIS_FSYNC": policy})


def _kill(kernel) -> None:
    kernel.proc.kill()
    kernel.proc.wait()
    kernel.log.close()


def _fill(c, name):
    c.queue.create(name, lease=60)
    c.queue.send(name, b"acked", b"leased", b"waiting")
    got = c.queue.receive(name, 2)
    assert [m.body for m in got] == [b"acked", b"leased"]
    c.queue.ack(name, got[0].receipt)
    return c.blob.put(f"{name}/blob", b"content" * 1000).etag


@pytest.mark.parametrize("policy", ["always", "everysec"])
def test_restart_after_kill_keeps_what_was_acknowledged(tmp_path, policy):
    kernel = _kernel(tmp_path, policy)
    try:
        with Client(kernel.urls["zmq+ipc"], TOKENS["acme"]) as c:
            etag = _fill(c, "jobs")
        with Client(kernel.urls["grpc"], TOKENS["ops"]) as admin:
            token = admin.admin.create_tenant("later")
        if policy == "everysec":
            time.sleep(1.5)
    finally:
        _kill(kernel)

    kernel = _kernel(tmp_path, policy)
    try:
        with Client(kernel.urls["grpc"], TOKENS["acme"]) as c:
            got = c.queue.receive("jobs", 10)
            assert sorted((m.body, m.receive_count) for m in got) == [
                (b"leased", 2), (b"waiting", 1)]
            assert c.blob.head("jobs/blob").etag == etag
            assert c.blob.get("jobs/blob").data == b"content" * 1000
        with Client(kernel.urls["zmq+tcp"], token) as c:
            assert c.account.info().tenant == "later"
    finally:
        assert kernel.stop() == 0, kernel.read_log()


def test_policy_none_keeps_nothing(tmp_path):
    kernel = _kernel(tmp_path, "none")
    try:
        with Client(kernel.urls["zmq+ipc"], TOKENS["acme"]) as c:
            _fill(c, "jobs")
    finally:
        _kill(kernel)
    assert not os.path.exists(tmp_path / "data")
    kernel = _kernel(tmp_path, "none")
    try:
        with Client(kernel.urls["zmq+ipc"], TOKENS["acme"]) as c:
            assert "jobs" not in c.queue.list().names
    finally:
        assert kernel.stop() == 0


def test_clean_stop_keeps_everysec_tail_and_replays_twice(tmp_path):
    kernel = _kernel(tmp_path, "everysec")
    try:
        with Client(kernel.urls["zmq+ipc"], TOKENS["acme"]) as c:
            etag = _fill(c, "jobs")
    finally:
        assert kernel.stop() == 0
    for _ in range(2):
        kernel = _kernel(tmp_path, "everysec")
        try:
            with Client(kernel.urls["zmq+ipc"], TOKENS["acme"]) as c:
                assert c.blob.head("jobs/blob").etag == etag
                attrs = c.queue.attributes("jobs")
                assert attrs.depth == 2 and attrs.in_flight == 0
        finally:
            assert kernel.stop() == 0


def test_unended_process_runs_again_after_a_crash(tmp_path):
    source = "def main(args):\n    import time\n    time.sleep(20)\n"
    done = "def main(args):\n    return b'done'\n"
    kernel = _kernel(tmp_path, "always")
    try:
        with Client(kernel.urls["zmq+ipc"], TOKENS["acme"]) as c:
            ended = c.spawn.spawn("main", done, b"").pid
            assert c.spawn.wait(ended, 20).ended
            sleeper = c.spawn.spawn("main", source, b"", attempts=2).pid
    finally:
        _kill(kernel)

    kernel = _kernel(tmp_path, "always")
    try:
        with Client(kernel.urls["zmq+ipc"], TOKENS["acme"]) as c:
            procs = {p.pid: p for p in c.spawn.list().processes}
            assert sleeper in procs and ended not in procs
            assert procs[sleeper].state in (1, 2)      # pending or running
            later = c.spawn.spawn("main", done, b"").pid
            assert int(later[1:]) > int(sleeper[1:])
    finally:
        assert kernel.stop() == 0, kernel.read_log()
