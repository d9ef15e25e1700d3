"""What one timed operation does, for every system the suite measures.

Theory of operation. An op is written once for the blocking and the
asyncio clients alike, in the sans-I/O manner:

- `call` is the timed operation: a callable that makes the call (blocking)
  or returns its awaitable (asyncio). It is all that runs between the two
  clock reads, so it stays a bare client method where it can.
- `after(result)` takes the call's result, outside the timed interval, and
  does no I/O.
- `setup`, `prep`, `prefill` and `teardown` are generators that yield
  client calls; `drive` (blocking) or `drive_async` runs them, sending each
  result back in. `prep` runs before every call and keeps the state a call
  needs (messages to receive, receipts to ack) within one batch, so memory
  stays bounded and the timed calls are all alike.

Each op owns its queue, key, list or stream (named by its tag), so the ops
of several coroutines or processes never take each other's messages.
"""

from functools import partial

from nubis.bench.echo import GRPC_METHOD


def drive(gen) -> None:
    """Run a generator of blocking calls: each yielded value is a result."""
    value = None
    try:
        while True:
            value = gen.send(value)
    except StopIteration:
        pass


async def drive_async(gen) -> None:
    """Run a generator of awaitables, sending back what each one gives."""
    value = None
    try:
        while True:
            value = await gen.send(value)
    except StopIteration:
        pass


def batch_for(payload: int) -> int:
    """Messages per untimed refill: at most 1000, and at most 4 MiB."""
    return max(1, min(1000, (4 << 20) // payload))


class Op:
    """The base: one payload, one batch size, nothing to prepare."""

    call = None
    after = None
    prep = None

    def __init__(self, conn, payload: int, tag: str):
        self.conn = conn
        self.body = b"n" * payload
        self.batch = batch_for(payload)
        self.tag = tag

    def setup(self):
        yield from ()

    def prefill(self, count: int):
        """Stock `count` calls' worth of state ahead (open loop only)."""
        yield from ()

    def teardown(self):
        yield from ()


# -- the kernel, through nubis.client -----------------------------------------

class _Blob(Op):
    def __init__(self, conn, payload, tag):
        super().__init__(conn, payload, tag)
        self.key = f"bench/{tag}"

    def setup(self):
        yield self.conn.blob.put(self.key, self.body)

    def teardown(self):
        yield self.conn.blob.delete(self.key)


class BlobPut(_Blob):
    def setup(self):
        self.call = partial(self.conn.blob.put, self.key, self.body)
        yield from ()


class BlobGet(_Blob):
    def setup(self):
        yield from super().setup()
        self.call = partial(self.conn.blob.get, self.key)


class BlobHead(_Blob):
    def setup(self):
        yield from super().setup()
        self.call = partial(self.conn.blob.head, self.key)


class _Queue(Op):
    def __init__(self, conn, payload, tag):
        super().__init__(conn, payload, tag)
        self.queue = f"bench-{tag}"
        self.stock = 0         # messages sent and not yet received
        self.got = []          # received messages not yet acked

    def setup(self):
        yield self.conn.queue.create(self.queue, lease=600)

    def teardown(self):
        yield self.conn.queue.delete(self.queue)

    def refill(self, count: int):
        while count > 0:
            n = min(count, self.batch)
            yield self.conn.queue.send(self.queue, *[self.body] * n)
            self.stock += n
            count -= n


class QueueSend(_Queue):
    def setup(self):
        yield from super().setup()
        self.call = partial(self.conn.queue.send, self.queue, self.body)

    def after(self, ids):
        self.stock += 1

    def prep(self):
        if self.stock >= self.batch:
            self.stock = 0
            yield self.conn.queue.purge(self.queue)


class QueueReceive(_Queue):
    def setup(self):
        yield from super().setup()
        self.call = partial(self.conn.queue.receive, self.queue)

    def after(self, messages):
        self.got += messages
        self.stock -= 1

    def prep(self):
        if len(self.got) >= self.batch:
            receipts = [m.receipt for m in self.got]
            self.got = []
            yield self.conn.queue.ack(self.queue, *receipts)
        if self.stock <= 0:
            yield from self.refill(self.batch)

    def prefill(self, count):
        yield from self.refill(count)


class QueueAck(_Queue):
    def setup(self):
        yield from super().setup()
        self.receipts = []
        self.call = self.ack

    def ack(self):
        return self.conn.queue.ack(self.queue, self.receipts.pop())

    def prep(self):
        if not self.receipts:
            yield from self.lease(self.batch)

    def prefill(self, count):
        while count > 0:
            n = min(count, self.batch)
            yield from self.lease(n)
            count -= n

    def lease(self, count: int):
        yield from self.refill(count)
        got = yield self.conn.queue.receive(self.queue, count)
        self.receipts += [m.receipt for m in got]


# -- the floors ----------------------------------------------------------------

class Echo(Op):
    """A bare echo: pyzmq (conn.echo) or grpcio (a unary multi-callable)."""

    def setup(self):
        echo = getattr(self.conn, "echo", None) or self.conn.unary_unary(
            GRPC_METHOD)
        self.call = partial(echo, self.body)
        yield from ()


# -- Redis, through redis-py with hiredis -----------------------------------------

class _Redis(Op):
    def __init__(self, conn, payload, tag):
        super().__init__(conn, payload, tag)
        self.key = f"bench:{tag}"
        self.stock = 0

    def teardown(self):
        yield self.conn.delete(self.key)


class RedisSet(_Redis):
    def setup(self):
        self.call = partial(self.conn.set, self.key, self.body)
        yield from ()


class RedisGet(_Redis):
    def setup(self):
        yield self.conn.set(self.key, self.body)
        self.call = partial(self.conn.get, self.key)


class RedisLpush(_Redis):
    def setup(self):
        self.call = partial(self.conn.lpush, self.key, self.body)
        yield from ()

    def after(self, length):
        self.stock = length

    def prep(self):
        if self.stock >= self.batch:
            self.stock = 0
            yield self.conn.delete(self.key)


class RedisRpop(_Redis):
    def setup(self):
        self.call = partial(self.conn.rpop, self.key)
        yield from ()

    def after(self, value):
        self.stock -= 1

    def prep(self):
        if self.stock <= 0:
            yield self.conn.lpush(self.key, *[self.body] * self.batch)
            self.stock = self.batch


# -- NATS, through nats-py --------------------------------------------------------

class NatsRequest(Op):
    """Core NATS request/reply through a responder process."""

    def setup(self):
        nc, subject = self.conn
        self.call = partial(nc.request, subject, self.body, timeout=10)
        yield from ()


class _Stream(Op):
    """A JetStream work queue in memory, one stream per op."""

    def __init__(self, conn, payload, tag):
        super().__init__(conn, payload, tag)
        self.nc = conn[0]
        self.js = self.nc.jetstream()
        self.stream = "BENCH" + tag.replace("-", "_")
        self.subject = f"nubis.bench.jobs.{tag}"
        self.msgs = []
        self.stock = 0

    def setup(self):
        from nats.js.api import RetentionPolicy, StorageType

        yield self.js.add_stream(name=self.stream, subjects=[self.subject],
                                 retention=RetentionPolicy.WORK_QUEUE,
                                 storage=StorageType.MEMORY)
        self.sub = yield self.js.pull_subscribe(self.subject, durable="bench")

    def teardown(self):
        yield self.js.delete_stream(self.stream)

    def refill(self, count: int):
        for _ in range(count):
            yield self.nc.publish(self.subject, self.body)
        yield self.nc.flush()
        self.stock += count


class JsPublish(_Stream):
    def setup(self):
        yield from super().setup()
        self.call = partial(self.js.publish, self.subject, self.body)

    def after(self, ack):
        self.stock += 1

    def prep(self):
        if self.stock >= self.batch:
            self.stock = 0
            yield self.js.purge_stream(self.stream)


class JsFetch(_Stream):
    def setup(self):
        yield from super().setup()
        self.call = partial(self.sub.fetch, 1, timeout=10)

    def after(self, msgs):
        self.msgs += msgs
        self.stock -= 1

    def prep(self):
        if len(self.msgs) >= self.batch:
            for msg in self.msgs:
                yield msg.ack()
            self.msgs = []
        if self.stock <= 0:
            yield from self.refill(self.batch)


class JsAck(_Stream):
    def setup(self):
        yield from super().setup()
        self.call = self.ack

    def ack(self):
        return self.msgs.pop().ack_sync(timeout=10)

    def prep(self):
        if not self.msgs:
            yield from self.refill(self.batch)
            got = yield self.sub.fetch(self.batch, timeout=10)
            self.msgs += got


OPS = {
    ("nubis", "blob.put"): BlobPut,
    ("nubis", "blob.get"): BlobGet,
    ("nubis", "blob.head"): BlobHead,
    ("nubis", "queue.send"): QueueSend,
    ("nubis", "queue.receive"): QueueReceive,
    ("nubis", "queue.ack"): QueueAck,
    ("pyzmq", "echo"): Echo,
    ("grpcio", "echo"): Echo,
    ("redis", "SET"): RedisSet,
    ("redis", "GET"): RedisGet,
    ("redis", "LPUSH"): RedisLpush,
    ("redis", "RPOP"): RedisRpop,
    ("nats", "request"): NatsRequest,
    ("nats", "js.publish"): JsPublish,
    ("nats", "js.fetch"): JsFetch,
    ("nats", "js.ack"): JsAck,
}
