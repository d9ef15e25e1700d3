"""The queue store: one tenant's message queues, in RAM.

Theory of operation. The store is sans-I/O and single-threaded: the kernel
calls it from its one event loop, so it takes no locks, never blocks, and
reads time only from the injected `clock` (monotonic seconds) and `wall`
(unix seconds), which makes it deterministic under a fake clock.

A live message is in exactly one state:

    send --> delayed --delay ends--> ready --receive--> leased --ack--> gone
             (or straight to ready)    ^                   |
                                       +----lease ends-----+
    ready --receive, after max_receive_count deliveries--> dead-letter queue
    any state --retention_ms after the send, or purge--> gone

- A lease ends when it expires, on change_lease(0), or on release_receipts.
  Delivery is at-least-once: a message leaves only by ack, retention, purge,
  or the move to its dead-letter queue, where it is a fresh message (new id,
  same body and group, receive_count 0, retention counted from the move).
- Every delivery makes a new receipt, "<message id>.<delivery number in
  hex>"; only the receipt of the current lease acks or changes it, and any
  other string is stale, whatever its form.
- Standard queues hand out the oldest ready message first; a message whose
  lease ends goes to the back. FIFO queues hand out a group's messages in
  the order they became ready (a delayed one joins its group when its delay
  ends), one lease at a time per group: while the head of a group is leased
  no other message of the group goes out, and a head whose lease ends is
  the head again. A repeated dedup_id within dedup_window_ms of its first
  send returns the first message id and stores nothing.
- Time is lazy. At the start of every operation on a queue, `_advance`
  applies what fell due since the last one: ended delays and expired leases
  make messages ready, and messages past retention are dropped. Two heaps
  (delays, lease ends) hold (time, tie, message) entries and are never
  searched: an entry whose message has moved on is stale and skipped when
  popped, and the lease heap is rebuilt once stale entries outnumber live
  ones. So every call is O(log n) amortised, and one with nothing due pays
  a single comparison against `due`.
- A failed call changes nothing it was asked to change: every check runs
  before the first change (time still advances).

Invariants of a queue:
- `messages` holds every live message, oldest send first; `bytes` is the
  sum of their body sizes and the store's `_bytes` the sum over queues.
- `leases` maps the receipt of each leased message, and nothing else, to it;
  `n_delayed` counts the delayed ones.
- Standard: `ready` holds exactly the ready messages, in delivery order.
- FIFO: `groups[g]` holds the ready and leased messages of group g in
  delivery order and is never empty; only its head may be leased; g is in
  `runnable` exactly when its head is ready.
- `due` is at most the earliest time in either heap and at most
  `expire_at`, itself at most the time the oldest message passes retention.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict, deque
from collections.abc import Callable
from heapq import heapify, heappop, heappush

from nubis.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

MAX_BATCH = 1000
MAX_DELAY_MS = 15 * 60 * 1000
MAX_LEASE_MS = 12 * 3600 * 1000
MAX_RETENTION_MS = 14 * 24 * 3600 * 1000
MAX_DEDUP_WINDOW_MS = 24 * 3600 * 1000
MAX_ID_CHARS = 128  # of a group or a dedup_id
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 1000

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,80}")
_INF = float("inf")

# Message states.
_DELAYED, _READY, _LEASED, _GONE = 0, 1, 2, 3

# A lease heap is rebuilt when it holds more than twice its live entries
# plus this many, so rebuilding costs O(1) amortised per stale entry.
_HEAP_SLACK = 64


class QueueSettings:
    """How a queue behaves; equal settings make create idempotent."""

    __slots__ = ("default_lease_ms", "max_receive_count", "dead_letter_queue",
                 "retention_ms", "fifo", "dedup_window_ms", "default_delay_ms")

    def __init__(self, default_lease_ms: int = 30_000, max_receive_count: int = 0,
                 dead_letter_queue: str = "",
                 retention_ms: int = 4 * 24 * 3600 * 1000, fifo: bool = False,
                 dedup_window_ms: int = 300_000, default_delay_ms: int = 0):
        self.default_lease_ms = default_lease_ms
        self.max_receive_count = max_receive_count
        self.dead_letter_queue = dead_letter_queue
        self.retention_ms = retention_ms
        self.fifo = fifo
        self.dedup_window_ms = dedup_window_ms
        self.default_delay_ms = default_delay_ms

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueueSettings):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"QueueSettings({fields})"

    def copy(self) -> QueueSettings:
        return QueueSettings(**{f: getattr(self, f) for f in self.__slots__})


_DEFAULTS = QueueSettings()

# Integer settings and their largest value; those in _ZERO_IS_DEFAULT read
# 0 as "the default", as the ABI says.
_INT_SETTINGS = {
    "default_lease_ms": MAX_LEASE_MS,
    "max_receive_count": 0xFFFF_FFFF,
    "retention_ms": MAX_RETENTION_MS,
    "dedup_window_ms": MAX_DEDUP_WINDOW_MS,
    "default_delay_ms": MAX_DELAY_MS,
}
_ZERO_IS_DEFAULT = ("default_lease_ms", "retention_ms", "dedup_window_ms")


class QueueLimits:
    """What one tenant may hold in queues; a breach is RESOURCE_EXHAUSTED."""

    __slots__ = ("max_queues", "max_depth", "max_message_bytes", "max_bytes")

    def __init__(self, max_queues: int = 1000, max_depth: int = 1_000_000,
                 max_message_bytes: int = 256 * 1024, max_bytes: int = 1 << 30):
        self.max_queues = max_queues
        self.max_depth = max_depth  # messages per queue, in every state
        self.max_message_bytes = max_message_bytes
        self.max_bytes = max_bytes  # message bytes over all the queues

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)}" for f in self.__slots__)
        return f"QueueLimits({fields})"


class Received:
    """One delivery of a message, as a receive returns it."""

    __slots__ = ("message_id", "body", "receipt", "receive_count",
                 "sent_unix_ms", "group")

    def __init__(self, message_id: str, body: bytes, receipt: str,
                 receive_count: int, sent_unix_ms: int, group: str):
        self.message_id = message_id
        self.body = body
        self.receipt = receipt
        self.receive_count = receive_count
        self.sent_unix_ms = sent_unix_ms
        self.group = group

    def __repr__(self) -> str:
        return (f"<Received {self.message_id} receipt={self.receipt} "
                f"count={self.receive_count} {len(self.body)} bytes>")


class _Message:
    __slots__ = ("id", "body", "group", "sent_at", "sent_unix_ms", "state",
                 "visible_at", "receive_count", "receipt")

    def __init__(self, id: str, body: bytes, group: str, sent_at: float,
                 sent_unix_ms: int):
        self.id = id
        self.body = body
        self.group = group
        self.sent_at = sent_at  # clock seconds, for retention and age
        self.sent_unix_ms = sent_unix_ms
        self.state = _READY
        self.visible_at = 0.0  # end of the delay or of the lease
        self.receive_count = 0
        self.receipt = ""  # of the current or last lease


class _Queue:
    __slots__ = ("name", "settings", "fifo", "prefix", "created_unix_ms",
                 "retention", "lease", "delay_ms", "max_receives",
                 "dead_letter", "dedup_window", "messages", "ready", "groups",
                 "runnable", "delayed", "n_delayed", "lease_ends", "leases",
                 "bytes", "due", "expire_at", "dedup", "dedup_ends")

    def __init__(self, name: str, settings: QueueSettings, prefix: str,
                 created_unix_ms: int):
        self.name = name
        self.settings = settings
        self.fifo = settings.fifo
        self.prefix = prefix  # of message ids: the queue's incarnation
        self.created_unix_ms = created_unix_ms
        self.retention = settings.retention_ms / 1000
        self.lease = settings.default_lease_ms / 1000
        self.delay_ms = settings.default_delay_ms
        self.max_receives = settings.max_receive_count
        self.dead_letter = settings.dead_letter_queue
        self.dedup_window = settings.dedup_window_ms / 1000
        self.messages: OrderedDict[str, _Message] = OrderedDict()
        self.ready: OrderedDict[str, _Message] = OrderedDict()
        self.groups: dict[str, OrderedDict[str, _Message]] = {}
        self.runnable: OrderedDict[str, OrderedDict[str, _Message]] = (
            OrderedDict())
        self.delayed: list = []  # heap of (visible_at, seq, message)
        self.n_delayed = 0
        self.lease_ends: list = []  # heap of (visible_at, seq, message)
        self.leases: dict[str, _Message] = {}
        self.bytes = 0
        self.due = _INF
        self.expire_at = _INF
        self.dedup: dict[str, tuple[float, str]] = {}  # id -> (ends, msg id)
        self.dedup_ends: deque[tuple[float, str]] = deque()


class QueueStore:
    """A tenant's queues: create, send, receive, ack, leases, dead letters."""

    __slots__ = ("_limits", "_clock", "_wall", "_queues", "_names", "_bytes",
                 "_seq", "_incarnation")

    def __init__(self, limits: QueueLimits | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self._limits = limits if limits is not None else QueueLimits()
        self._clock = clock
        self._wall = wall
        self._queues: dict[str, _Queue] = {}
        self._names: list[str] = []  # sorted
        self._bytes = 0
        self._seq = 0  # message ids and heap ties; never reused
        self._incarnation = 0

    @property
    def limits(self) -> QueueLimits:
        return self._limits

    @property
    def bytes_stored(self) -> int:
        """Message bytes held over all the queues.

        Messages past retention count until their queue is next used, or a
        send needs their room: a read here stays O(1).
        """
        return self._bytes

    @property
    def queue_count(self) -> int:
        return len(self._queues)

    def message_count(self) -> int:
        """Messages over all the queues, in every state, as of now."""
        self._reclaim(self._clock())
        return sum(len(q.messages) for q in self._queues.values())

    # Queues.

    def create(self, name: str, settings: QueueSettings) -> bool:
        """Create a queue; False when one with equal settings exists."""
        _check_name(name)
        settings = _checked_settings(settings)
        dlq = settings.dead_letter_queue
        if dlq == name:
            raise InvalidArgument(
                f"queue {name!r} cannot be its own dead_letter_queue")

        old = self._queues.get(name)
        if old is not None:
            if old.settings == settings:
                return False
            raise AlreadyExists(f"queue {name!r} exists with other settings")
        if dlq:
            self._check_dead_letter_queue(dlq, settings.fifo)
        limit = self._limits.max_queues
        if len(self._queues) >= limit:
            raise ResourceExhausted(
                f"queue {name!r} would pass the limit of {limit} queues")

        self._incarnation += 1
        self._queues[name] = _Queue(name, settings, f"{self._incarnation:x}-",
                                    int(self._wall() * 1000))
        insort(self._names, name)
        return True

    def _check_dead_letter_queue(self, dlq: str, fifo: bool) -> None:
        target = self._queues.get(dlq)
        if target is None:
            raise FailedPrecondition(f"dead_letter_queue {dlq!r} does not exist")
        if target.fifo != fifo:
            kind = "a fifo" if fifo else "a standard"
            raise FailedPrecondition(
                f"dead_letter_queue {dlq!r} must be {kind} queue too")

    def delete(self, name: str) -> None:
        """Delete a queue and every message in it."""
        q = self._queue(name)
        for other in self._queues.values():
            if other.dead_letter == name:
                raise FailedPrecondition(
                    f"queue {name!r} is the dead_letter_queue of {other.name!r}")

        del self._queues[name]
        del self._names[bisect_left(self._names, name)]
        self._bytes -= q.bytes

    def names(self, prefix: str = "", page_size: int = 0,
              page_token: str = "") -> tuple[list[str], str]:
        """A page of queue names in order, and the token of the next page.

        The token is "" after the last page; page_size 0 means 1000.
        """
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size {page_size} is out of range: 0 to {MAX_PAGE_SIZE}")
        size = page_size or DEFAULT_PAGE_SIZE
        names = self._names
        i = bisect_left(names, prefix)
        if page_token:
            i = max(i, bisect_right(names, page_token))

        end = min(len(names), i + size)
        page = []
        while i < end and names[i].startswith(prefix):
            page.append(names[i])
            i += 1
        more = i < len(names) and names[i].startswith(prefix) and page
        return page, page[-1] if more else ""

    def attributes(self, name: str) -> dict:
        """Settings and live counts of a queue."""
        q = self._queue(name)
        now = self._clock()
        if now >= q.due:
            self._advance(q, now)

        messages = q.messages
        oldest = next(iter(messages.values())).sent_at if messages else now
        return {
            "name": q.name,
            "settings": q.settings.copy(),
            "depth": len(messages) - len(q.leases) - q.n_delayed,
            "in_flight": len(q.leases),
            "delayed": q.n_delayed,
            "oldest_age_ms": round((now - oldest) * 1000),
            "created_unix_ms": q.created_unix_ms,
            "bytes": q.bytes,
        }

    def purge(self, name: str) -> int:
        """Drop every message of a queue, leased or not; return how many."""
        q = self._queue(name)
        now = self._clock()
        if now >= q.due:
            self._advance(q, now)

        count = len(q.messages)
        self._bytes -= q.bytes
        q.bytes = 0
        for m in q.messages.values():
            m.state = _GONE
        for held in (q.messages, q.ready, q.groups, q.runnable, q.leases):
            held.clear()
        q.delayed = []
        q.lease_ends = []
        q.n_delayed = 0
        q.due = q.expire_at = _INF
        return count

    # Messages.

    def send(self, name: str, entries: list[tuple[bytes, int, str, str]]
             ) -> list[str]:
        """Append messages, all or none; return their ids in order.

        Each entry is (body, delay_ms, group, dedup_id); a delay of 0 takes
        the queue's default_delay_ms.
        """
        q = self._queue(name)
        n = len(entries)
        if not 0 < n <= MAX_BATCH:
            raise InvalidArgument(
                f"a send takes 1 to {MAX_BATCH} messages, not {n}")
        now = self._clock()
        if now >= q.due:
            self._advance(q, now)
        if q.fifo:
            return self._send_fifo(q, entries, now)

        limit = self._limits.max_message_bytes
        size = 0
        for body, delay_ms, group, dedup_id in entries:
            if len(body) > limit:
                raise _too_big(body, limit)
            if not 0 <= delay_ms <= MAX_DELAY_MS:
                raise _bad_delay(delay_ms)
            if group or dedup_id:
                raise InvalidArgument(
                    f"group {group!r} and dedup_id {dedup_id!r} need a fifo "
                    f"queue; {q.name!r} is not one")
            size += len(body)
        self._check_room(q, n, size, now)

        wall_ms = int(self._wall() * 1000)
        default = q.delay_ms
        add = self._add
        return [add(q, body, "", delay_ms or default, now, wall_ms)
                for body, delay_ms, _, _ in entries]

    def _send_fifo(self, q: _Queue, entries: list, now: float) -> list[str]:
        limit = self._limits.max_message_bytes
        _expire_dedup(q, now)
        known = q.dedup
        batch = set()
        size = fresh = 0
        for body, delay_ms, group, dedup_id in entries:
            if len(body) > limit:
                raise _too_big(body, limit)
            if not 0 <= delay_ms <= MAX_DELAY_MS:
                raise _bad_delay(delay_ms)
            _check_id("group", group, q.name)
            if dedup_id:
                _check_id("dedup_id", dedup_id, q.name)
                if dedup_id in known or dedup_id in batch:
                    continue
                batch.add(dedup_id)
            size += len(body)
            fresh += 1
        self._check_room(q, fresh, size, now)

        wall_ms = int(self._wall() * 1000)
        ends = now + q.dedup_window
        ids = []
        for body, delay_ms, group, dedup_id in entries:
            first = known.get(dedup_id) if dedup_id else None
            if first is not None:
                ids.append(first[1])
                continue
            mid = self._add(q, body, group, delay_ms or q.delay_ms, now, wall_ms)
            if dedup_id:
                known[dedup_id] = (ends, mid)
                q.dedup_ends.append((ends, dedup_id))
            ids.append(mid)
        return ids

    def _check_room(self, q: _Queue, count: int, size: int, now: float) -> None:
        if not count:
            return
        limits = self._limits
        held = len(q.messages)
        if held + count > limits.max_depth:
            raise ResourceExhausted(
                f"queue {q.name!r} holds {held} messages; {count} more would "
                f"pass the limit of {limits.max_depth}")
        if self._bytes + size > limits.max_bytes:
            # Other queues may hold messages past retention not yet dropped.
            self._reclaim(now)
        if self._bytes + size > limits.max_bytes:
            raise ResourceExhausted(
                f"queues hold {self._bytes} bytes; {size} more would pass the "
                f"limit of {limits.max_bytes} bytes")

    def _add(self, q: _Queue, body: bytes, group: str, delay_ms: int,
             now: float, wall_ms: int) -> str:
        seq = self._seq = self._seq + 1
        m = _Message(f"{q.prefix}{seq:x}", body, group, now, wall_ms)
        messages = q.messages
        if not messages:
            q.expire_at = at = now + q.retention
            if at < q.due:
                q.due = at
        messages[m.id] = m
        size = len(body)
        q.bytes += size
        self._bytes += size

        if delay_ms:
            m.state = _DELAYED
            m.visible_at = at = now + delay_ms / 1000
            heappush(q.delayed, (at, seq, m))
            q.n_delayed += 1
            if at < q.due:
                q.due = at
        elif q.fifo:
            _ready_in_group(q, m)
        else:
            q.ready[m.id] = m
        return m.id

    def receive(self, name: str, max_messages: int = 1,
                lease_ms: int = 0) -> list[Received]:
        """Lease up to max_messages visible messages; [] if none, at once.

        max_messages 0 means 1; lease_ms 0 takes the queue's default_lease_ms.
        """
        q = self._queue(name)
        if not 0 <= max_messages <= MAX_BATCH:
            raise InvalidArgument(
                f"max_messages {max_messages} is out of range: 0 to {MAX_BATCH}")
        if not 0 <= lease_ms <= MAX_LEASE_MS:
            raise _bad_lease(lease_ms)
        now = self._clock()
        if now >= q.due:
            self._advance(q, now)

        until = now + (lease_ms / 1000 if lease_ms else q.lease)
        if q.fifo:
            return self._receive_fifo(q, max_messages or 1, until, now)
        ready = q.ready
        out: list[Received] = []
        if not ready:
            return out
        want = max_messages or 1
        limit = q.max_receives
        while ready and len(out) < want:
            m = ready.popitem(last=False)[1]
            if limit and m.receive_count >= limit:
                self._dead_letter(q, m, now)
            else:
                out.append(self._lease(q, m, until))
        return out

    def _receive_fifo(self, q: _Queue, want: int, until: float,
                      now: float) -> list[Received]:
        runnable = q.runnable
        limit = q.max_receives
        out: list[Received] = []
        while runnable and len(out) < want:
            group, held = runnable.popitem(last=False)
            while True:
                m = next(iter(held.values()))
                if not limit or m.receive_count < limit:
                    out.append(self._lease(q, m, until))
                    break
                del held[m.id]
                self._dead_letter(q, m, now)
                if not held:
                    del q.groups[group]
                    break
        return out

    def _lease(self, q: _Queue, m: _Message, until: float) -> Received:
        count = m.receive_count = m.receive_count + 1
        receipt = m.receipt = f"{m.id}.{count:x}"
        m.state = _LEASED
        m.visible_at = until
        seq = self._seq = self._seq + 1
        heappush(q.lease_ends, (until, seq, m))
        if until < q.due:
            q.due = until
        q.leases[receipt] = m
        return Received(m.id, m.body, receipt, count, m.sent_unix_ms, m.group)

    def _dead_letter(self, q: _Queue, m: _Message, now: float) -> None:
        """Move a message, already out of its ready structure, to the DLQ."""
        _forget(self, q, m)
        # The move holds no more bytes, so it skips the quotas; the DLQ may
        # pass max_depth by the messages it receives this way.
        target = self._queues[q.dead_letter]
        self._add(target, m.body, m.group, 0, now, int(self._wall() * 1000))

    def ack(self, name: str, receipts: list[str]) -> list[str]:
        """Delete leased messages by receipt; return the stale receipts."""
        q = self._queue(name)
        now = self._clock()
        if now >= q.due:
            self._advance(q, now)

        leases = q.leases
        stale = []
        for receipt in receipts:
            m = leases.pop(receipt, None)
            if m is None:
                stale.append(receipt)
                continue
            if q.fifo:
                _drop_group_head(q, m)
            _forget(self, q, m)
        _tidy_leases(self, q)
        return stale

    def change_lease(self, name: str, receipt: str, lease_ms: int) -> None:
        """Extend a lease to lease_ms from now, or end it now when 0."""
        q = self._queue(name)
        if not 0 <= lease_ms <= MAX_LEASE_MS:
            raise _bad_lease(lease_ms)
        now = self._clock()
        if now >= q.due:
            self._advance(q, now)

        m = q.leases.get(receipt)
        if m is None:
            raise FailedPrecondition(
                f"receipt {receipt!r} is stale: {_stale_reason(q, receipt)}")
        if not lease_ms:
            _unlease(q, m)
        else:
            m.visible_at = until = now + lease_ms / 1000
            seq = self._seq = self._seq + 1
            heappush(q.lease_ends, (until, seq, m))
            if until < q.due:
                q.due = until
        _tidy_leases(self, q)

    def release_receipts(self, receipts: list[tuple[str, str]]) -> None:
        """End the leases of (queue, receipt) pairs now; skip stale ones."""
        now = self._clock()
        for name, receipt in receipts:
            q = self._queues.get(name)
            if q is None:
                continue
            if now >= q.due:
                self._advance(q, now)
            m = q.leases.get(receipt)
            if m is not None:
                _unlease(q, m)
                _tidy_leases(self, q)

    def next_wakeup(self, name: str) -> float | None:
        """Clock time when a delay or lease next ends, None if none will."""
        q = self._queue(name)
        now = self._clock()
        if now >= q.due:
            self._advance(q, now)

        delayed, lease_ends = q.delayed, q.lease_ends
        while delayed and delayed[0][2].state != _DELAYED:
            heappop(delayed)
        while lease_ends and not _live_lease(lease_ends[0]):
            heappop(lease_ends)
        times = [h[0][0] for h in (delayed, lease_ends) if h]
        return min(times) if times else None

    # Time.

    def _advance(self, q: _Queue, now: float) -> None:
        """Apply what fell due by `now`: ends of delays and leases, retention."""
        delayed, lease_ends = q.delayed, q.lease_ends
        while delayed and delayed[0][0] <= now:
            m = heappop(delayed)[2]
            if m.state == _DELAYED:
                q.n_delayed -= 1
                m.state = _READY
                if q.fifo:
                    _ready_in_group(q, m)
                else:
                    q.ready[m.id] = m
        while lease_ends and lease_ends[0][0] <= now:
            entry = heappop(lease_ends)
            if _live_lease(entry):
                _unlease(q, entry[2])
        if q.expire_at <= now:
            self._drop_old(q, now)

        q.due = min(delayed[0][0] if delayed else _INF,
                    lease_ends[0][0] if lease_ends else _INF, q.expire_at)

    def _drop_old(self, q: _Queue, now: float) -> None:
        messages = q.messages
        while messages:
            m = next(iter(messages.values()))
            if m.sent_at + q.retention > now:
                q.expire_at = m.sent_at + q.retention
                return
            _detach(q, m)
            _forget(self, q, m)
        q.expire_at = _INF

    def _reclaim(self, now: float) -> None:
        for q in self._queues.values():
            if now >= q.due:
                self._advance(q, now)

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            _check_name(name)
            raise NotFound(f"queue {name!r} not found")
        return q


# Moves between states; each keeps the invariants of the module docstring.

def _ready_in_group(q: _Queue, m: _Message) -> None:
    held = q.groups.get(m.group)
    if held is None:
        held = q.groups[m.group] = OrderedDict()
        q.runnable[m.group] = held
    held[m.id] = m


def _unlease(q: _Queue, m: _Message) -> None:
    del q.leases[m.receipt]
    m.state = _READY
    if q.fifo:
        q.runnable[m.group] = q.groups[m.group]
    else:
        q.ready[m.id] = m


def _drop_group_head(q: _Queue, m: _Message) -> None:
    """Take a leased head out of its group, which becomes runnable again."""
    held = q.groups[m.group]
    del held[m.id]
    if held:
        q.runnable[m.group] = held
    else:
        del q.groups[m.group]


def _detach(q: _Queue, m: _Message) -> None:
    """Take a message out of the structure of its state."""
    if m.state == _DELAYED:
        q.n_delayed -= 1
    elif m.state == _LEASED:
        del q.leases[m.receipt]
        if q.fifo:
            _drop_group_head(q, m)
    elif q.fifo:
        held = q.groups[m.group]
        del held[m.id]
        if not held:
            del q.groups[m.group]
            del q.runnable[m.group]
    else:
        del q.ready[m.id]


def _forget(store: QueueStore, q: _Queue, m: _Message) -> None:
    """Drop a detached message from the queue and the byte counts."""
    del q.messages[m.id]
    size = len(m.body)
    q.bytes -= size
    store._bytes -= size
    m.state = _GONE


def _live_lease(entry: tuple) -> bool:
    m = entry[2]
    return m.state == _LEASED and m.visible_at == entry[0]


def _tidy_leases(store: QueueStore, q: _Queue) -> None:
    """Rebuild the lease heap once stale entries outnumber live ones."""
    if len(q.lease_ends) <= 2 * len(q.leases) + _HEAP_SLACK:
        return
    entries = []
    for m in q.leases.values():
        seq = store._seq = store._seq + 1
        entries.append((m.visible_at, seq, m))
    heapify(entries)
    q.lease_ends = entries


def _expire_dedup(q: _Queue, now: float) -> None:
    ends, known = q.dedup_ends, q.dedup
    while ends and ends[0][0] <= now:
        at, dedup_id = ends.popleft()
        first = known.get(dedup_id)
        if first is not None and first[0] == at:
            del known[dedup_id]


def _stale_reason(q: _Queue, receipt: object) -> str:
    """Why a receipt holds no lease; only on the error path."""
    if not isinstance(receipt, str):
        return "it is not a string"
    mid, _, delivery = receipt.rpartition(".")
    try:
        number = int(delivery, 16)
    except ValueError:
        number = -1
    if not mid.startswith(q.prefix) or number < 1 or delivery != f"{number:x}":
        return f"it is not a receipt of queue {q.name!r}"
    m = q.messages.get(mid)
    if m is None:
        return "its message was acked, purged or dropped"
    if number < m.receive_count:
        return "its message was delivered again since"
    if number > m.receive_count:
        return f"it is not a receipt of queue {q.name!r}"
    return "its lease ended"


# Checks.

def _check_name(name: object) -> None:
    if type(name) is not str or not _NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"queue name {name!r} is invalid: use 1 to 80 characters of "
            f"A-Z, a-z, 0-9, '_', '.' and '-'")


def _checked_settings(settings: object) -> QueueSettings:
    """A valid copy of the settings, with zeros read as the ABI says."""
    if not isinstance(settings, QueueSettings):
        raise InvalidArgument(
            f"settings must be QueueSettings, not {type(settings).__name__}")
    out = settings.copy()
    for field, most in _INT_SETTINGS.items():
        value = getattr(settings, field)
        if type(value) is not int or not 0 <= value <= most:
            raise InvalidArgument(
                f"{field} {value!r} is out of range: 0 to {most}")
        if not value and field in _ZERO_IS_DEFAULT:
            setattr(out, field, getattr(_DEFAULTS, field))
    if type(settings.fifo) is not bool:
        raise InvalidArgument(f"fifo {settings.fifo!r} is not a bool")

    dlq = settings.dead_letter_queue
    if dlq:
        if type(dlq) is not str or not _NAME_RE.fullmatch(dlq):
            raise InvalidArgument(
                f"dead_letter_queue {dlq!r} is not a valid queue name")
    elif dlq != "":
        raise InvalidArgument(f"dead_letter_queue {dlq!r} is not a string")
    elif settings.max_receive_count:
        raise InvalidArgument(
            f"max_receive_count {settings.max_receive_count} needs a "
            f"dead_letter_queue")
    return out


def _check_id(what: str, value: str, queue: str) -> None:
    if not value:
        raise InvalidArgument(f"fifo queue {queue!r} needs a {what} on every "
                              f"message")
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(f"{what} {value[:40]!r}... is longer than "
                              f"{MAX_ID_CHARS} characters")


def _too_big(body: bytes, limit: int) -> ResourceExhausted:
    return ResourceExhausted(f"message of {len(body)} bytes is over the limit "
                             f"of {limit} bytes")


def _bad_delay(delay_ms: int) -> InvalidArgument:
    return InvalidArgument(
        f"delay_ms {delay_ms} is out of range: 0 to {MAX_DELAY_MS}")


def _bad_lease(lease_ms: int) -> InvalidArgument:
    return InvalidArgument(
        f"lease_ms {lease_ms} is out of range: 0 to {MAX_LEASE_MS}")
