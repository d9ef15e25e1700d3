"""The gRPC transport, end to end: a real kernel, real grpcio clients.

The kernel runs in-process on an event loop of its own thread, as it runs in
production, once on asyncio and once on uvloop; the tests talk to it over
TCP with plain grpcio channels and with nubis.client.grpc.
"""

import asyncio
import hashlib
import logging
import os
import threading
import time

import grpc
import pytest
import uvloop
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from nubis import abi
from nubis.client.grpc import AsyncGrpcConnection, GrpcConnection
from nubis.config import KernelConfig, TenantConfig
from nubis.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from nubis.server import Server
from nubis.tenants import Quotas
from nubis.transport.grpc_server import GrpcServer
from nubis.v1 import blob_pb2, listen_pb2, queue_pb2

TOKEN = "acme-token-123"
OTHER_TOKEN = "other-token-456"
TINY_TOKEN = "tiny-token-789"
MiB = 1 << 20
LIST_QUEUES = abi.BY_NAME["ListQueues"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def config() -> KernelConfig:
    return KernelConfig(zmq=[], grpc="127.0.0.1:0", tenants=[
        TenantConfig(name="acme", token=TOKEN),
        TenantConfig(name="other", token=OTHER_TOKEN),
        TenantConfig(name="tiny", token=TINY_TOKEN,
                     quotas=Quotas(max_blob_bytes=MiB)),
    ])


class Running:
    """A kernel serving on the event loop of a background thread."""

    def __init__(self, loop_name: str):
        self.loop = LOOPS[loop_name]()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server(config())
        self.run(self.server.start())
        self.grpc = self.server.transports[0]
        self.kernel = self.server.kernel
        self.bound = self.grpc.bound

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module", params=sorted(LOOPS))
def kernel(request):
    running = Running(request.param)
    yield running
    running.stop()


@pytest.fixture
def conn(kernel):
    with GrpcConnection(kernel.bound, TOKEN) as c:
        yield c


def raw_call(kernel, method, payload: bytes, metadata=(), **options):
    """A unary call with hand-made bytes and metadata, no nubis code."""
    opts = [(f"grpc.{k}", v) for k, v in options.items()]
    with grpc.insecure_channel(kernel.bound, options=opts) as channel:
        return channel.unary_unary(method.path)(payload, metadata=metadata,
                                                timeout=10)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


# -- the server's own services ----------------------------------------------


def test_health_serving_for_kernel_and_services(kernel):
    with grpc.insecure_channel(kernel.bound) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "nubis.v1.QueueService", "nubis.v1.BlobService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service),
                               timeout=5)
            assert reply.status == SERVING, service


def test_reflection_lists_services(kernel):
    with grpc.insecure_channel(kernel.bound) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert set(abi.SERVICE_NAMES) <= services
        assert {"grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection"} <= services
        pool = descriptor_pool.DescriptorPool(db)
        blob = pool.FindServiceByName("nubis.v1.BlobService")
        assert "PutBlob" in [m.name for m in blob.methods]


def test_health_not_serving_on_stop():
    running = Running("asyncio")
    channel = grpc.insecure_channel(running.bound)
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="nubis.v1.BlobService"), timeout=20)
    try:
        assert next(watch).status == SERVING
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        assert next(watch).status == NOT_SERVING
        stopper.join(20)
    finally:
        watch.cancel()
        channel.close()


def test_port_in_use_is_an_error(kernel):
    second = GrpcServer(kernel.kernel, kernel.bound)
    with pytest.raises(OSError, match="cannot bind gRPC address"):
        kernel.run(second.start())


# -- tokens ------------------------------------------------------------------


@pytest.mark.parametrize("metadata, words", [
    ((), "missing"),
    ((("authorization", "Bearer wrong-token-000"),), "invalid token"),
    ((("authorization", "Basic " + TOKEN),), "malformed"),
    ((("authorization", "Bearer"),), "malformed"),
    ((("authorization", TOKEN),), "malformed"),
    ((("authorization", "Bearer " + TOKEN), ("authorization", "Bearer x")),
     "more than one"),
])
def test_bad_token_is_unauthenticated(kernel, metadata, words):
    request = queue_pb2.ListQueuesRequest().SerializeToString()
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(kernel, LIST_QUEUES, request, metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert words in caught.value.details()


def test_wrong_token_raises_typed_error(kernel):
    with GrpcConnection(kernel.bound, "not-a-token-at-all") as c:
        with pytest.raises(Unauthenticated, match="invalid token"):
            c.call(LIST_QUEUES, queue_pb2.ListQueuesRequest())


def test_put_with_wrong_token_is_refused_before_content(kernel):
    with GrpcConnection(kernel.bound, "not-a-token-at-all") as c:
        with pytest.raises(Unauthenticated):
            c.call(abi.BY_NAME["PutBlob"], blob_pb2.PutBlobRequest(key="k"),
                   os.urandom(3 * MiB))


# -- bad input ---------------------------------------------------------------


def test_oversized_message_is_refused_and_server_serves_on(kernel, conn):
    request = queue_pb2.SendMessagesRequest(queue="q", messages=[
        queue_pb2.MessageEntry(body=bytes(9 * MiB))])
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(kernel, abi.BY_NAME["SendMessages"], request.SerializeToString(),
                 (("authorization", "Bearer " + TOKEN),),
                 max_send_message_length=-1)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    reply, _ = conn.call(LIST_QUEUES, queue_pb2.ListQueuesRequest())
    assert isinstance(reply, queue_pb2.ListQueuesResponse)


def test_oversized_chunk_stores_nothing(kernel, conn):
    key = unique("cut")
    with GrpcConnection(kernel.bound, TOKEN, max_message_bytes=64 * MiB,
                        chunk_bytes=9 * MiB) as big:
        with pytest.raises(ResourceExhausted):
            big.call(abi.BY_NAME["PutBlob"], blob_pb2.PutBlobRequest(key=key),
                     bytes(20 * MiB))
    with pytest.raises(NotFound):
        conn.call(abi.BY_NAME["HeadBlob"], blob_pb2.HeadBlobRequest(key=key))


def test_malformed_request_is_invalid_argument(kernel):
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(kernel, LIST_QUEUES, b"\xff\xff\xff",
                 (("authorization", "Bearer " + TOKEN),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ListQueuesRequest" in caught.value.details()


def test_blob_over_tenant_quota_names_size_and_limit(kernel):
    with GrpcConnection(kernel.bound, TINY_TOKEN) as c:
        with pytest.raises(ResourceExhausted, match=f"limit of {MiB}") as caught:
            c.call(abi.BY_NAME["PutBlob"], blob_pb2.PutBlobRequest(key="big"),
                   bytes(2 * MiB))
    assert str(2 * MiB) in caught.value.message


def test_short_stream_is_refused(kernel, conn):
    request = blob_pb2.PutBlobRequest(key=unique("short"), size=100)
    with pytest.raises(InvalidArgument, match="not the 100 declared"):
        conn.call(abi.BY_NAME["PutBlob"], request, b"x" * 50)


def test_unexpected_error_is_internal_and_logged(kernel, conn, monkeypatch,
                                                 caplog):
    def broken(*args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(kernel.kernel, "invoke", broken)
    with caplog.at_level(logging.ERROR, logger="nubis.grpc"):
        with pytest.raises(Internal, match="see the kernel log"):
            conn.call(LIST_QUEUES, queue_pb2.ListQueuesRequest())
    assert any(r.name == "nubis.grpc" and r.exc_info for r in caplog.records)

    monkeypatch.undo()
    conn.call(LIST_QUEUES, queue_pb2.ListQueuesRequest())


# -- the cloud calls ---------------------------------------------------------


def test_blob_put_get_20_mib(conn):
    content = os.urandom(20 * MiB)
    key = unique("big")
    put, _ = conn.call(abi.BY_NAME["PutBlob"], blob_pb2.PutBlobRequest(key=key),
                       content)
    assert put.info.etag == hashlib.sha256(content).hexdigest()
    assert put.info.size == len(content)

    got, data = conn.call(abi.BY_NAME["GetBlob"], blob_pb2.GetBlobRequest(key=key))
    assert got.info.etag == put.info.etag
    assert not got.data
    assert hashlib.sha256(data).hexdigest() == put.info.etag


def test_blob_ranged_get(conn):
    content = os.urandom(3 * MiB + 17)
    key = unique("ranged")
    conn.call(abi.BY_NAME["PutBlob"], blob_pb2.PutBlobRequest(key=key), content)
    request = blob_pb2.GetBlobRequest(key=key, offset=MiB - 5, length=2 * MiB)
    got, data = conn.call(abi.BY_NAME["GetBlob"], request)
    assert data == content[MiB - 5:3 * MiB - 5]
    assert got.info.size == len(content)

    empty = blob_pb2.PutBlobRequest(key=unique("empty"))
    conn.call(abi.BY_NAME["PutBlob"], empty, b"")
    _, data = conn.call(abi.BY_NAME["GetBlob"], blob_pb2.GetBlobRequest(key=empty.key))
    assert data == b""


def test_blobs_are_per_tenant(kernel, conn):
    key = unique("mine")
    conn.call(abi.BY_NAME["PutBlob"], blob_pb2.PutBlobRequest(key=key), b"acme's")
    with GrpcConnection(kernel.bound, OTHER_TOKEN) as other:
        with pytest.raises(NotFound):
            other.call(abi.BY_NAME["GetBlob"], blob_pb2.GetBlobRequest(key=key))


def test_queue_round_trip(conn):
    name = unique("jobs")
    created, _ = conn.call(abi.BY_NAME["CreateQueue"],
                           queue_pb2.CreateQueueRequest(name=name))
    assert created.created
    conn.call(abi.BY_NAME["SendMessages"], queue_pb2.SendMessagesRequest(
        queue=name, messages=[queue_pb2.MessageEntry(body=b"job 1")]))

    got, _ = conn.call(abi.BY_NAME["ReceiveMessages"],
                       queue_pb2.ReceiveMessagesRequest(queue=name))
    [message] = got.messages
    assert message.body == b"job 1"
    acked, _ = conn.call(abi.BY_NAME["AckMessages"], queue_pb2.AckMessagesRequest(
        queue=name, receipts=[message.receipt]))
    assert not acked.stale_receipts


def test_long_poll_is_woken_by_a_send(kernel, conn):
    name = unique("poll")
    conn.call(abi.BY_NAME["CreateQueue"], queue_pb2.CreateQueueRequest(name=name))
    got = {}

    def receive():
        with GrpcConnection(kernel.bound, TOKEN) as c:
            started = time.monotonic()
            got["reply"], _ = c.call(
                abi.BY_NAME["ReceiveMessages"],
                queue_pb2.ReceiveMessagesRequest(queue=name, wait_ms=15_000),
                timeout=20)
            got["seconds"] = time.monotonic() - started

    waiter = threading.Thread(target=receive)
    waiter.start()
    time.sleep(0.3)
    conn.call(abi.BY_NAME["SendMessages"], queue_pb2.SendMessagesRequest(
        queue=name, messages=[queue_pb2.MessageEntry(body=b"wake up")]))
    waiter.join(20)

    assert [m.body for m in got["reply"].messages] == [b"wake up"]
    assert got["seconds"] < 10


def test_deadline_cancels_the_long_poll(kernel, conn):
    name = unique("late")
    conn.call(abi.BY_NAME["CreateQueue"], queue_pb2.CreateQueueRequest(name=name))
    with pytest.raises(DeadlineExceeded):
        conn.call(abi.BY_NAME["ReceiveMessages"],
                  queue_pb2.ReceiveMessagesRequest(queue=name, wait_ms=10_000),
                  timeout=0.3)
    deadline = time.monotonic() + 5
    while ("acme", name) in kernel.kernel.queue_waiters:
        assert time.monotonic() < deadline, "the long poll was not cancelled"
        time.sleep(0.05)


def test_listen_errors_arrive_as_their_status(conn):
    with pytest.raises(InvalidArgument, match="port 0 "):
        conn.call(abi.BY_NAME["Listen"], listen_pb2.ListenRequest())
    with pytest.raises(NotFound, match="port 0 "):
        list(conn.events(abi.BY_NAME["AttachListener"],
                         listen_pb2.AttachListenerRequest()))


def test_events_stream_then_error(kernel, conn, monkeypatch):
    async def events():
        for i in range(3):
            yield listen_pb2.ConnectionEvent(connection_id=i)
        raise NotFound("port 80 is not listened on")

    monkeypatch.setattr(kernel.kernel, "invoke", lambda *args: events())
    got = []
    with pytest.raises(NotFound, match="port 80"):
        for event in conn.events(abi.BY_NAME["AttachListener"],
                                 listen_pb2.AttachListenerRequest(port=80)):
            got.append(event.connection_id)
    assert got == [0, 1, 2]


def test_events_stream_closed_by_the_client(kernel, conn, monkeypatch):
    closed = threading.Event()

    async def endless():
        try:
            for i in range(1_000_000):
                yield listen_pb2.ConnectionEvent(connection_id=i)
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    finished = []
    finish = kernel.kernel.finish
    monkeypatch.setattr(kernel.kernel, "invoke", lambda *args: endless())
    monkeypatch.setattr(kernel.kernel, "finish", lambda call, *args: (
        finished.append(call.key), finish(call, *args)))
    stream = conn.events(abi.BY_NAME["AttachListener"],
                         listen_pb2.AttachListenerRequest(port=80))
    assert [next(stream).connection_id for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert closed.wait(5), "the handler's event stream was not closed"
    time.sleep(0.1)
    assert finished == ["listen.AttachListener"]


def test_each_call_is_accounted_once(kernel):
    tenant = kernel.kernel.tenants.by_name["other"]
    before = {k: list(v) for k, v in tenant.usage.calls.items()}
    bytes_in, bytes_out = tenant.usage.bytes_in, tenant.usage.bytes_out
    with GrpcConnection(kernel.bound, OTHER_TOKEN) as c:
        c.call(abi.BY_NAME["PutBlob"], blob_pb2.PutBlobRequest(key="a"), b"x" * 100)
        c.call(abi.BY_NAME["GetBlob"], blob_pb2.GetBlobRequest(key="a"))
        with pytest.raises(NotFound):
            c.call(abi.BY_NAME["GetBlob"], blob_pb2.GetBlobRequest(key="nope"))

    def counts(key):
        return [a - b for a, b in zip(tenant.usage.calls[key],
                                      before.get(key, [0, 0]), strict=True)]

    assert counts("blob.PutBlob") == [1, 0]
    assert counts("blob.GetBlob") == [2, 1]
    assert tenant.usage.bytes_in - bytes_in > 100
    assert tenant.usage.bytes_out - bytes_out > 100


def test_unreachable_kernel_is_unavailable():
    with GrpcConnection("127.0.0.1:1", TOKEN) as c:
        with pytest.raises(Unavailable, match="cannot reach the kernel"):
            c.call(LIST_QUEUES, queue_pb2.ListQueuesRequest(), timeout=5)


def test_async_connection(kernel):
    async def main():
        async with AsyncGrpcConnection(kernel.bound, TOKEN) as c:
            key = unique("async")
            content = os.urandom(2 * MiB + 1)
            put, _ = await c.call(abi.BY_NAME["PutBlob"],
                                  blob_pb2.PutBlobRequest(key=key), content)
            _, data = await c.call(abi.BY_NAME["GetBlob"],
                                   blob_pb2.GetBlobRequest(key=key))
            assert data == content
            reply, _ = await c.call(LIST_QUEUES, queue_pb2.ListQueuesRequest())
            assert isinstance(reply, queue_pb2.ListQueuesResponse)
            with pytest.raises(NotFound):
                async for _ in c.events(abi.BY_NAME["AttachListener"],
                                        listen_pb2.AttachListenerRequest()):
                    pass

    asyncio.run(main())
