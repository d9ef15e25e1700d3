"""Tenants: isolation, admin calls, accounting, over every transport."""

import pytest

from nubis.client import Client
from nubis.errors import NotFound, PermissionDenied, Unauthenticated


def test_another_tenant_cannot_see_or_touch_objects(client, other, name):
    client.blob.put(f"{name}/secret", b"acme only")
    client.queue.create(name)
    client.queue.send(name, b"acme job")

    # Same names, other tenant: nothing there, and nothing to tell it exists.
    with pytest.raises(NotFound):
        other.blob.get(f"{name}/secret")
    with pytest.raises(NotFound):
        other.blob.head(f"{name}/secret")
    assert list(other.blob.list(name).blobs) == []
    assert name not in other.queue.list(name).names
    with pytest.raises(NotFound):
        other.queue.receive(name)
    with pytest.raises(NotFound):
        other.queue.attributes(name)

    # Its own objects of the same names are separate ones.
    other.blob.put(f"{name}/secret", b"other's")
    other.queue.create(name)
    assert client.blob.get(f"{name}/secret").data == b"acme only"
    assert other.blob.get(f"{name}/secret").data == b"other's"
    [m] = client.queue.receive(name)
    assert m.body == b"acme job"
    assert other.queue.receive(name) == []


def test_admin_calls_need_the_admin_tenant(client):
    with pytest.raises(PermissionDenied, match="admin"):
        client.admin.list_tenants()
    with pytest.raises(PermissionDenied):
        client.admin.create_tenant("intruder")
    with pytest.raises(PermissionDenied):
        client.account.usage("other")


def test_admin_creates_a_tenant_that_can_then_call(admin, url, name):
    token = admin.admin.create_tenant(name, quotas={"max_queues": 3})
    assert name in [t.name for t in admin.admin.list_tenants()]
    with Client(url, token) as fresh:
        fresh.queue.create("q")
        assert fresh.account.info().tenant == name
    admin.admin.delete_tenant(name)
    with pytest.raises(Unauthenticated):
        with Client(url, token, timeout=3) as gone:
            gone.queue.list()


def test_usage_counts_calls_and_bytes(client, connect, name):
    fresh_name = f"u{name}"
    admin = connect("ops")
    token = admin.admin.create_tenant(fresh_name)
    with Client(client.url.url, token) as c:
        c.blob.put("k", b"x" * 1000)
        c.queue.create("q")
        c.queue.send("q", b"a", b"b")
        for m in c.queue.receive("q", 5):
            c.queue.ack("q", m.receipt)
        [usage] = c.account.usage()
    calls = {u.call: (u.count, u.errors) for u in usage.calls}
    assert calls["blob.PutBlob"] == (1, 0)
    assert calls["queue.SendMessages"] == (1, 0)
    assert usage.bytes_stored == 1000
    assert usage.bytes_in >= 1000
    assert (usage.messages_sent, usage.messages_received,
            usage.messages_acked) == (2, 2, 2)
    assert usage.queues == 1 and usage.blobs == 1
    [seen] = admin.account.usage(fresh_name)
    assert seen.bytes_stored == 1000
    admin.admin.delete_tenant(fresh_name)


def test_wrong_and_missing_tokens(url):
    with pytest.raises(Unauthenticated):
        with Client(url, "not-the-token-at-all", timeout=3) as c:
            c.queue.list()
    with pytest.raises(Unauthenticated, match="token"):
        with Client(url, "", timeout=3) as c:
            c.queue.list()


def test_kernel_info(client):
    info = client.account.info()
    assert info.tenant == "acme"
    assert {c.name for c in info.calls} >= {"queue.SendMessages", "blob.GetBlob"}
    assert any(e.startswith("grpc://") for e in info.endpoints)
    assert any(e.startswith("zmq+ipc://") for e in info.endpoints)
    assert info.hot_paths in ("pure", "compiled")


def test_rate_limit_answers_resource_exhausted(connect):
    import time

    from nubis.errors import ResourceExhausted

    slow = connect("slow")
    time.sleep(1.2)               # a full bucket, whatever ran before
    refused = 0
    for _ in range(12):
        try:
            slow.account.info()
        except ResourceExhausted as e:
            assert "5 calls per second" in str(e)
            refused += 1
    assert 5 <= 12 - refused <= 7     # the burst, and a refill in between
    time.sleep(1.2)
    assert slow.account.info().tenant == "slow"


def test_deleting_a_tenant_ends_its_processes_and_listeners(admin, url, name):
    import socket
    import time

    from nubis.v1 import spawn_pb2

    token = admin.admin.create_tenant(name, ports=["20120-20129"])
    with Client(url, token) as mine:
        port = next(p for p in range(20120, 20130) if _free(p))
        mine.listen.listen(port)
        reply = mine.spawn.spawn(
            "main", "import time\ndef main(args):\n    time.sleep(120)\n")
        deadline = time.monotonic() + 20
        while True:
            info = mine.spawn.wait(reply.pid, 0).process
            if info.state == spawn_pb2.PROCESS_STATE_RUNNING and info.os_pid:
                break
            assert time.monotonic() < deadline, info
            time.sleep(0.05)

    admin.admin.delete_tenant(name)

    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    deadline = time.monotonic() + 10
    while _alive(info.os_pid):
        assert time.monotonic() < deadline, "the process outlived its tenant"
        time.sleep(0.05)


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:    # gone, even between the two looks
        return False
