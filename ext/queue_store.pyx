# cython: language_level=3, auto_pickle=False
# cython: boundscheck=True, wraparound=True
"""The queue store in C: the twin of nubis.queue.store, call for call.

The rules, states and invariants are those of the pure twin's theory of
operation, kept to the letter: the same calls give the same ids, receipts,
order of delivery, errors and messages, under the same injected clocks.
What differs is how the structures are held (see queue_store.pxd): chains
linked through the messages instead of OrderedDicts, heaps of C structs
instead of heaps of tuples, C numbers instead of Python ones.

The value types (QueueSettings, QueueLimits, Received), the limits and the
checks of the cold paths (names, settings, the errors they raise) are the
pure twin's own, imported: a Received is the same type whichever store made
it, and an error message cannot drift between the twins. Numbers the caller
passes are checked as Python compares them, with a C fast path for an int.
"""

import time
from bisect import bisect_left, bisect_right, insort
from collections import deque

from cpython.long cimport PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF, PyObject
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.math cimport INFINITY

from nubis.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from nubis.queue.store import (
    _HEAP_SLACK,
    DEFAULT_PAGE_SIZE,
    MAX_BATCH,
    MAX_DELAY_MS,
    MAX_ID_CHARS,
    MAX_LEASE_MS,
    MAX_PAGE_SIZE,
    QueueLimits,
    QueueSettings,
    Received,
    _bad_delay,
    _bad_lease,
    _check_id,
    _check_name,
    _checked_settings,
    _too_big,
)

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object, int *) except? -1

cdef extern from *:
    """
    #include <time.h>
    /* time.monotonic() and time.time() read these clocks on Linux, and turn
       nanoseconds into seconds this way (_PyTime_AsSecondsDouble), so a
       store given those functions may read the clocks itself, to the bit. */
    #if defined(__linux__)
    #define NUBIS_OS_CLOCKS 1
    static double nubis_seconds(clockid_t clock) {
        struct timespec ts;
        long long ns;
        clock_gettime(clock, &ts);
        ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        if (ns % 1000000000LL == 0)
            return (double)(ns / 1000000000LL);
        return (double)ns / 1e9;
    }
    #else
    #define NUBIS_OS_CLOCKS 0
    static double nubis_seconds(clockid_t clock) { return 0.0; }
    #endif
    """
    ctypedef int clockid_t
    const bint NUBIS_OS_CLOCKS
    const clockid_t CLOCK_MONOTONIC
    const clockid_t CLOCK_REALTIME
    double nubis_seconds(clockid_t clock) noexcept nogil

# The pure twin's limits, as C numbers.
cdef long long _MAX_BATCH = MAX_BATCH
cdef long long _MAX_DELAY_MS = MAX_DELAY_MS
cdef long long _MAX_LEASE_MS = MAX_LEASE_MS
cdef Py_ssize_t _MAX_ID_CHARS = MAX_ID_CHARS
cdef Py_ssize_t _SLACK = _HEAP_SLACK

_round = round  # Python's rounding (half to even), not C's


cdef inline bint _within(object value, long long most) except -1:
    """0 <= value <= most as Python compares it; in C for an exact int."""
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(value):
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        return not overflow and 0 <= v <= most
    return 0 <= value <= most


cdef inline double _limit(object value) except? -1.0:
    """A limit as a C number; an int is read without making a float."""
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(value):
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if not overflow:
            return <double>v
    return value


cdef inline tuple _unpack(object items, Py_ssize_t n):
    """items as an n-tuple, or the error `a, b, ... = items` raises."""
    cdef tuple out
    if type(items) is tuple and PyTuple_GET_SIZE(items) == n:
        return <tuple>items
    try:
        out = tuple(items)
    except TypeError:
        raise TypeError(f"cannot unpack non-iterable {type(items).__name__} "
                        f"object") from None
    if len(out) < n:
        raise ValueError(
            f"not enough values to unpack (expected {n}, got {len(out)})")
    if len(out) > n:
        raise ValueError(f"too many values to unpack (expected {n})")
    return out


# -- heaps --------------------------------------------------------------------


cdef inline bint _before(const _Entry *a, const _Entry *b) noexcept nogil:
    return a.at < b.at or (a.at == b.at and a.seq < b.seq)


cdef class _Heap:

    def __dealloc__(self):
        self.clear()
        PyMem_Free(self.items)

    cdef int push(self, double at, unsigned long long seq,
                  _Message m) except -1:
        cdef _Entry entry
        cdef _Entry *items
        cdef Py_ssize_t i, parent, cap
        if self.n == self.cap:
            cap = 2 * self.cap if self.cap else 16
            items = <_Entry *>PyMem_Realloc(self.items, cap * sizeof(_Entry))
            if items is NULL:
                raise MemoryError("queue heap")
            self.items, self.cap = items, cap

        entry.at, entry.seq, entry.message = at, seq, <PyObject *>m
        Py_INCREF(m)
        items = self.items
        i = self.n
        self.n += 1
        while i:
            parent = (i - 1) >> 1
            if not _before(&entry, &items[parent]):
                break
            items[i] = items[parent]
            i = parent
        items[i] = entry
        return 0

    cdef _Message pop(self):
        """Take the top entry; the heap's reference passes to the caller."""
        cdef _Entry *items = self.items
        cdef PyObject *top = items[0].message
        cdef _Entry last
        cdef Py_ssize_t i = 0, child
        cdef Py_ssize_t n = self.n - 1
        cdef _Message m

        self.n = n
        if n:
            last = items[n]
            while True:
                child = 2 * i + 1
                if child >= n:
                    break
                if child + 1 < n and _before(&items[child + 1], &items[child]):
                    child += 1
                if not _before(&items[child], &last):
                    break
                items[i] = items[child]
                i = child
            items[i] = last
        if self.cap > 64 and n < self.cap >> 2:
            # Give back memory after a burst, as a shrinking list does.
            items = <_Entry *>PyMem_Realloc(self.items,
                                            (self.cap >> 1) * sizeof(_Entry))
            if items is not NULL:
                self.items, self.cap = items, self.cap >> 1
        m = <_Message>top
        Py_DECREF(m)
        return m

    cdef void clear(self) noexcept:
        cdef _Entry *items = self.items
        cdef Py_ssize_t i, n = self.n
        self.n = 0
        if self.cap > 64:
            self.items, self.cap = NULL, 0
        for i in range(n):
            Py_XDECREF(items[i].message)
        if items is not self.items:
            PyMem_Free(items)


cdef inline _Message _top(_Heap heap):
    return <_Message>heap.items[0].message


# -- chains: ready messages, groups, runnable groups, send order --------------


cdef class _Message:
    pass


cdef class _Chain:
    pass


cdef _Message _new_message(str id, object body, object group, double now,
                           long long wall_ms):
    cdef _Message m = _Message.__new__(_Message)
    m.id = id
    m.body = body
    m.size = len(body)
    m.group = group
    m.sent_at = now
    m.sent_unix_ms = wall_ms
    m.state = READY
    m.visible_at = 0.0
    m.receive_count = 0
    m.receipt = ""
    return m


cdef _Chain _new_chain(object name):
    cdef _Chain c = _Chain.__new__(_Chain)
    c.name = name
    c.count = 0
    c.runnable = False
    return c


cdef inline void _chain_append(_Chain c, _Message m) noexcept:
    m.prev = c.tail
    m.next = None
    if c.tail is None:
        c.head = m
    else:
        c.tail.next = m
    c.tail = m
    c.count += 1


cdef inline void _chain_remove(_Chain c, _Message m) noexcept:
    if m.prev is None:
        c.head = m.next
    else:
        m.prev.next = m.next
    if m.next is None:
        c.tail = m.prev
    else:
        m.next.prev = m.prev
    m.prev = m.next = None
    c.count -= 1


cdef inline void _run_add(_Queue q, _Chain g) noexcept:
    """Make a group runnable; one already runnable keeps its place."""
    if g.runnable:
        return
    g.runnable = True
    g.run_prev = q.run_tail
    g.run_next = None
    if q.run_tail is None:
        q.run_head = g
    else:
        q.run_tail.run_next = g
    q.run_tail = g


cdef inline void _run_remove(_Queue q, _Chain g) noexcept:
    if g.run_prev is None:
        q.run_head = g.run_next
    else:
        g.run_prev.run_next = g.run_next
    if g.run_next is None:
        q.run_tail = g.run_prev
    else:
        g.run_next.run_prev = g.run_prev
    g.run_prev = g.run_next = None
    g.runnable = False


cdef inline void _append_sent(_Queue q, _Message m) noexcept:
    m.older = q.newest
    m.newer = None
    if q.newest is None:
        q.oldest = m
    else:
        q.newest.newer = m
    q.newest = m
    q.n_messages += 1


cdef inline void _remove_sent(_Queue q, _Message m) noexcept:
    if m.older is None:
        q.oldest = m.newer
    else:
        m.older.newer = m.newer
    if m.newer is None:
        q.newest = m.older
    else:
        m.newer.older = m.older
    m.older = m.newer = None
    q.n_messages -= 1


cdef class _Queue:

    def __init__(self, str name, settings, str prefix, long long created_unix_ms):
        self.name = name
        self.settings = settings
        self.fifo = settings.fifo
        self.prefix = prefix
        self.created_unix_ms = created_unix_ms
        self.retention = settings.retention_ms / 1000
        self.lease = settings.default_lease_ms / 1000
        self.delay_ms = settings.default_delay_ms
        self.max_receives = settings.max_receive_count
        self.dead_letter = settings.dead_letter_queue
        self.dedup_window = settings.dedup_window_ms / 1000
        self.by_id = {}
        self.n_messages = 0
        self.ready = _new_chain("")
        self.groups = {}
        self.delayed = _Heap()
        self.n_delayed = 0
        self.lease_ends = _Heap()
        self.leases = {}
        self.bytes = 0
        self.due = INFINITY
        self.expire_at = INFINITY
        self.dedup = {}
        self.dedup_ends = deque()

    def __dealloc__(self):
        # Unlinked one by one, the chains free without deep recursion and
        # leave no cycle to the garbage collector.
        _unlink_all(self)


cdef void _unlink_all(_Queue q) noexcept:
    """Break every link of a queue's chains and mark its messages gone."""
    cdef _Message m = q.oldest, after
    cdef _Chain g, next_group
    while m is not None:
        after = m.newer
        m.older = m.newer = m.prev = m.next = None
        m.state = GONE
        m = after
    g = q.run_head
    while g is not None:
        next_group = g.run_next
        g.run_prev = g.run_next = None
        g = next_group
    q.oldest = q.newest = None
    q.run_head = q.run_tail = None
    q.n_messages = 0


# -- the store ----------------------------------------------------------------


cdef class QueueStore:
    """A tenant's queues: create, send, receive, ack, leases, dead letters."""

    def __init__(self, limits=None, clock=time.monotonic, wall=time.time):
        self._limits = limits if limits is not None else QueueLimits()
        self._clock = clock
        self._wall = wall
        self._os_clock = NUBIS_OS_CLOCKS and clock is time.monotonic
        self._os_wall = NUBIS_OS_CLOCKS and wall is time.time
        self._queues = {}
        self._names = []
        self._bytes = 0
        self._seq = 0
        self._incarnation = 0

    @property
    def limits(self):
        return self._limits

    @property
    def bytes_stored(self):
        """Message bytes held over all the queues.

        Messages past retention count until their queue is next used, or a
        send needs their room: a read here stays O(1).
        """
        return self._bytes

    @property
    def queue_count(self):
        return len(self._queues)

    def message_count(self):
        """Messages over all the queues, in every state, as of now."""
        cdef _Queue q
        cdef Py_ssize_t total = 0
        self._reclaim(self._now())
        for q in self._queues.values():
            total += q.n_messages
        return total

    # Queues.

    def create(self, name, settings):
        """Create a queue; False when one with equal settings exists."""
        _check_name(name)
        settings = _checked_settings(settings)
        dlq = settings.dead_letter_queue
        if dlq == name:
            raise InvalidArgument(
                f"queue {name!r} cannot be its own dead_letter_queue")

        old = self._queues.get(name)
        if old is not None:
            if (<_Queue>old).settings == settings:
                return False
            raise AlreadyExists(f"queue {name!r} exists with other settings")
        if dlq:
            _check_dead_letter_queue(self, dlq, settings.fifo)
        limit = self._limits.max_queues
        if len(self._queues) >= limit:
            raise ResourceExhausted(
                f"queue {name!r} would pass the limit of {limit} queues")

        self._incarnation += 1
        self._queues[name] = _Queue(name, settings, f"{self._incarnation:x}-",
                                    int(self._wall() * 1000))
        insort(self._names, name)
        return True

    def delete(self, name):
        """Delete a queue and every message in it."""
        cdef _Queue q = self._queue(name)
        cdef _Queue other
        for other in self._queues.values():
            if other.dead_letter == name:
                raise FailedPrecondition(
                    f"queue {name!r} is the dead_letter_queue of {other.name!r}")

        del self._queues[name]
        del self._names[bisect_left(self._names, name)]
        self._bytes -= q.bytes

    def names(self, prefix="", page_size=0, page_token=""):
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

    def attributes(self, name):
        """Settings and live counts of a queue."""
        cdef _Queue q = self._queue(name)
        cdef double now = self._now()
        cdef double oldest
        if now >= q.due:
            self._advance(q, now)

        oldest = q.oldest.sent_at if q.oldest is not None else now
        return {
            "name": q.name,
            "settings": q.settings.copy(),
            "depth": q.n_messages - len(q.leases) - q.n_delayed,
            "in_flight": len(q.leases),
            "delayed": q.n_delayed,
            "oldest_age_ms": _round((now - oldest) * 1000),
            "created_unix_ms": q.created_unix_ms,
            "bytes": q.bytes,
        }

    def purge(self, name):
        """Drop every message of a queue, leased or not; return how many."""
        cdef _Queue q = self._queue(name)
        cdef double now = self._now()
        cdef Py_ssize_t count
        if now >= q.due:
            self._advance(q, now)

        count = q.n_messages
        self._bytes -= q.bytes
        q.bytes = 0
        _unlink_all(q)
        q.by_id.clear()
        q.ready = _new_chain("")
        q.groups.clear()
        q.leases.clear()
        q.delayed.clear()
        q.lease_ends.clear()
        q.n_delayed = 0
        q.due = q.expire_at = INFINITY
        return count

    # Messages.

    def send(self, name, entries):
        """Append messages, all or none; return their ids in order.

        Each entry is (body, delay_ms, group, dedup_id); a delay of 0 takes
        the queue's default_delay_ms.
        """
        cdef _Queue q = self._queue(name)
        cdef Py_ssize_t n = len(entries)
        cdef double now, limit, delay
        cdef long long size = 0, wall_ms
        cdef Py_ssize_t length
        cdef list ids
        if not 0 < n <= _MAX_BATCH:
            raise InvalidArgument(
                f"a send takes 1 to {MAX_BATCH} messages, not {n}")
        now = self._now()
        if now >= q.due:
            self._advance(q, now)
        if q.fifo:
            return self._send_fifo(q, entries, now)

        if type(entries) is not list:
            entries = list(entries)
        limit = _limit(self._limits.max_message_bytes)
        for entry in <list>entries:
            body, delay_ms, group, dedup_id = _unpack(entry, 4)
            length = len(body)
            if length > limit:
                raise _too_big(body, self._limits.max_message_bytes)
            if not _within(delay_ms, _MAX_DELAY_MS):
                raise _bad_delay(delay_ms)
            if group or dedup_id:
                raise InvalidArgument(
                    f"group {group!r} and dedup_id {dedup_id!r} need a fifo "
                    f"queue; {q.name!r} is not one")
            size += length
        self._check_room(q, n, size, now)

        wall_ms = self._wall_ms()
        ids = []
        for entry in <list>entries:
            body, delay_ms, _, _ = _unpack(entry, 4)
            delay = delay_ms
            ids.append(self._add(q, body, "", delay or q.delay_ms, now, wall_ms))
        return ids

    cdef list _send_fifo(self, _Queue q, object entries, double now):
        cdef double limit = _limit(self._limits.max_message_bytes)
        cdef dict known = q.dedup
        cdef set batch = set()
        cdef long long size = 0
        cdef Py_ssize_t fresh = 0, length
        cdef long long wall_ms
        cdef double ends, delay
        cdef list ids

        _expire_dedup(q, now)
        if type(entries) is not list:
            entries = list(entries)
        for entry in <list>entries:
            body, delay_ms, group, dedup_id = _unpack(entry, 4)
            length = len(body)
            if length > limit:
                raise _too_big(body, self._limits.max_message_bytes)
            if not _within(delay_ms, _MAX_DELAY_MS):
                raise _bad_delay(delay_ms)
            if not group or len(group) > _MAX_ID_CHARS:
                _check_id("group", group, q.name)
            if dedup_id:
                if len(dedup_id) > _MAX_ID_CHARS:
                    _check_id("dedup_id", dedup_id, q.name)
                if dedup_id in known or dedup_id in batch:
                    continue
                batch.add(dedup_id)
            size += length
            fresh += 1
        self._check_room(q, fresh, size, now)

        wall_ms = self._wall_ms()
        ends = now + q.dedup_window
        ids = []
        for entry in <list>entries:
            body, delay_ms, group, dedup_id = _unpack(entry, 4)
            first = known.get(dedup_id) if dedup_id else None
            if first is not None:
                ids.append(first[1])
                continue
            delay = delay_ms
            mid = self._add(q, body, group, delay or q.delay_ms, now, wall_ms)
            if dedup_id:
                known[dedup_id] = (ends, mid)
                q.dedup_ends.append((ends, dedup_id))
            ids.append(mid)
        return ids

    cdef int _check_room(self, _Queue q, Py_ssize_t count, long long size,
                         double now) except -1:
        cdef Py_ssize_t held = q.n_messages
        if not count:
            return 0
        limits = self._limits
        if held + count > _limit(limits.max_depth):
            raise ResourceExhausted(
                f"queue {q.name!r} holds {held} messages; {count} more would "
                f"pass the limit of {limits.max_depth}")
        if self._bytes + size > _limit(limits.max_bytes):
            # Other queues may hold messages past retention not yet dropped.
            self._reclaim(now)
        if self._bytes + size > _limit(limits.max_bytes):
            raise ResourceExhausted(
                f"queues hold {self._bytes} bytes; {size} more would pass the "
                f"limit of {limits.max_bytes} bytes")
        return 0

    cdef str _add(self, _Queue q, object body, object group, double delay_ms,
                  double now, long long wall_ms):
        cdef unsigned long long seq
        cdef _Message m
        cdef double at
        self._seq += 1
        seq = self._seq
        m = _new_message(f"{q.prefix}{seq:x}", body, group, now, wall_ms)
        if q.oldest is None:
            q.expire_at = at = now + q.retention
            if at < q.due:
                q.due = at
        q.by_id[m.id] = m
        _append_sent(q, m)
        q.bytes += m.size
        self._bytes += m.size

        if delay_ms:
            m.state = DELAYED
            m.visible_at = at = now + delay_ms / 1000.0
            q.delayed.push(at, seq, m)
            q.n_delayed += 1
            if at < q.due:
                q.due = at
        elif q.fifo:
            _ready_in_group(q, m)
        else:
            _chain_append(q.ready, m)
        return m.id

    def receive(self, name, max_messages=1, lease_ms=0):
        """Lease up to max_messages visible messages; [] if none, at once.

        max_messages 0 means 1; lease_ms 0 takes the queue's default_lease_ms.
        """
        cdef _Queue q = self._queue(name)
        cdef double now, until, want
        cdef long long limit
        cdef list out
        cdef _Message m
        if not _within(max_messages, _MAX_BATCH):
            raise InvalidArgument(
                f"max_messages {max_messages} is out of range: 0 to {MAX_BATCH}")
        if not _within(lease_ms, _MAX_LEASE_MS):
            raise _bad_lease(lease_ms)
        now = self._now()
        if now >= q.due:
            self._advance(q, now)

        until = now + (<double>lease_ms / 1000.0 if lease_ms else q.lease)
        want = max_messages
        if not want:
            want = 1
        if q.fifo:
            return self._receive_fifo(q, want, until, now)
        out = []
        limit = q.max_receives
        while q.ready.head is not None and len(out) < want:
            m = q.ready.head
            _chain_remove(q.ready, m)
            if limit and m.receive_count >= limit:
                self._dead_letter(q, m, now)
            else:
                out.append(self._lease(q, m, until))
        return out

    cdef list _receive_fifo(self, _Queue q, double want, double until,
                            double now):
        cdef long long limit = q.max_receives
        cdef list out = []
        cdef _Chain g
        cdef _Message m
        while q.run_head is not None and len(out) < want:
            g = q.run_head
            _run_remove(q, g)
            while True:
                m = g.head
                if not limit or m.receive_count < limit:
                    out.append(self._lease(q, m, until))
                    break
                _chain_remove(g, m)
                self._dead_letter(q, m, now)
                if not g.count:
                    del q.groups[g.name]
                    break
        return out

    cdef object _lease(self, _Queue q, _Message m, double until):
        cdef long long count = m.receive_count + 1
        cdef str receipt = f"{m.id}.{count:x}"
        m.receive_count = count
        m.receipt = receipt
        m.state = LEASED
        m.visible_at = until
        self._seq += 1
        q.lease_ends.push(until, self._seq, m)
        if until < q.due:
            q.due = until
        q.leases[receipt] = m
        return Received(m.id, m.body, receipt, count, m.sent_unix_ms, m.group)

    cdef int _dead_letter(self, _Queue q, _Message m, double now) except -1:
        """Move a message, already out of its ready structure, to the DLQ."""
        cdef _Queue target
        _forget(self, q, m)
        # The move holds no more bytes, so it skips the quotas; the DLQ may
        # pass max_depth by the messages it receives this way.
        target = self._queues[q.dead_letter]
        self._add(target, m.body, m.group, 0, now, self._wall_ms())
        return 0

    def ack(self, name, receipts):
        """Delete leased messages by receipt; return the stale receipts."""
        cdef _Queue q = self._queue(name)
        cdef double now = self._now()
        cdef dict leases
        cdef list stale = []
        if now >= q.due:
            self._advance(q, now)

        leases = q.leases
        if type(receipts) is not list:
            receipts = list(receipts)
        for receipt in <list>receipts:
            m = leases.pop(receipt, None)
            if m is None:
                stale.append(receipt)
                continue
            if q.fifo:
                _drop_group_head(q, <_Message>m)
            _forget(self, q, <_Message>m)
        self._tidy_leases(q)
        return stale

    def change_lease(self, name, receipt, lease_ms):
        """Extend a lease to lease_ms from now, or end it now when 0."""
        cdef _Queue q = self._queue(name)
        cdef double now, until
        cdef _Message m
        if not _within(lease_ms, _MAX_LEASE_MS):
            raise _bad_lease(lease_ms)
        now = self._now()
        if now >= q.due:
            self._advance(q, now)

        m = q.leases.get(receipt)
        if m is None:
            raise FailedPrecondition(
                f"receipt {receipt!r} is stale: {_stale_reason(q, receipt)}")
        if not lease_ms:
            _unlease(q, m)
        else:
            m.visible_at = until = now + <double>lease_ms / 1000.0
            self._seq += 1
            q.lease_ends.push(until, self._seq, m)
            if until < q.due:
                q.due = until
        self._tidy_leases(q)

    def release_receipts(self, receipts):
        """End the leases of (queue, receipt) pairs now; skip stale ones."""
        cdef double now = self._now()
        cdef _Queue q
        cdef _Message m
        for pair in receipts:
            name, receipt = _unpack(pair, 2)
            q = self._queues.get(name)
            if q is None:
                continue
            if now >= q.due:
                self._advance(q, now)
            m = q.leases.get(receipt)
            if m is not None:
                _unlease(q, m)
                self._tidy_leases(q)

    def next_wakeup(self, name):
        """Clock time when a delay or lease next ends, None if none will."""
        cdef _Queue q = self._queue(name)
        cdef double now = self._now()
        cdef _Heap delayed, lease_ends
        if now >= q.due:
            self._advance(q, now)

        delayed, lease_ends = q.delayed, q.lease_ends
        while delayed.n and _top(delayed).state != DELAYED:
            delayed.pop()
        while lease_ends.n and not _live_lease(lease_ends):
            lease_ends.pop()
        if delayed.n and lease_ends.n:
            return min(delayed.items[0].at, lease_ends.items[0].at)
        if delayed.n:
            return delayed.items[0].at
        if lease_ends.n:
            return lease_ends.items[0].at
        return None

    # Time.

    cdef int _advance(self, _Queue q, double now) except -1:
        """Apply what fell due by `now`: ends of delays and leases, retention."""
        cdef _Heap delayed = q.delayed, lease_ends = q.lease_ends
        cdef _Message m
        while delayed.n and delayed.items[0].at <= now:
            m = delayed.pop()
            if m.state == DELAYED:
                q.n_delayed -= 1
                m.state = READY
                if q.fifo:
                    _ready_in_group(q, m)
                else:
                    _chain_append(q.ready, m)
        while lease_ends.n and lease_ends.items[0].at <= now:
            if _live_lease(lease_ends):
                _unlease(q, lease_ends.pop())
            else:
                lease_ends.pop()
        if q.expire_at <= now:
            self._drop_old(q, now)

        q.due = min(delayed.items[0].at if delayed.n else INFINITY,
                    lease_ends.items[0].at if lease_ends.n else INFINITY,
                    q.expire_at)
        return 0

    cdef int _drop_old(self, _Queue q, double now) except -1:
        cdef _Message m
        while q.oldest is not None:
            m = q.oldest
            if m.sent_at + q.retention > now:
                q.expire_at = m.sent_at + q.retention
                return 0
            _detach(q, m)
            _forget(self, q, m)
        q.expire_at = INFINITY
        return 0

    cdef int _reclaim(self, double now) except -1:
        cdef _Queue q
        for q in self._queues.values():
            if now >= q.due:
                self._advance(q, now)
        return 0

    cdef inline double _now(self) except? -1.0:
        if self._os_clock:
            return nubis_seconds(CLOCK_MONOTONIC)
        return self._clock()

    cdef inline long long _wall_ms(self) except? -1:
        """int(wall() * 1000), as the pure twin stamps messages."""
        if self._os_wall:
            return <long long>(nubis_seconds(CLOCK_REALTIME) * 1000)
        return <long long>(<double>self._wall() * 1000)

    cdef _Queue _queue(self, object name):
        q = self._queues.get(name)
        if q is None:
            _check_name(name)
            raise NotFound(f"queue {name!r} not found")
        return <_Queue>q

    cdef int _tidy_leases(self, _Queue q) except -1:
        """Rebuild the lease heap once stale entries outnumber live ones."""
        cdef _Heap heap = q.lease_ends
        cdef _Message m
        if heap.n <= 2 * len(q.leases) + _SLACK:
            return 0
        heap.clear()
        for m in q.leases.values():
            self._seq += 1
            heap.push(m.visible_at, self._seq, m)
        return 0

    # Snapshots.

    def __reduce__(self):
        """Pickle as plain data and the clocks, for the journal's snapshots."""
        return _load_queue_store, (_export_store(self),)


# Moves between states; each keeps the invariants of the pure twin.

cdef int _check_dead_letter_queue(QueueStore store, str dlq,
                                  bint fifo) except -1:
    target = store._queues.get(dlq)
    if target is None:
        raise FailedPrecondition(f"dead_letter_queue {dlq!r} does not exist")
    if (<_Queue>target).fifo != fifo:
        kind = "a fifo" if fifo else "a standard"
        raise FailedPrecondition(
            f"dead_letter_queue {dlq!r} must be {kind} queue too")
    return 0


cdef int _ready_in_group(_Queue q, _Message m) except -1:
    held = q.groups.get(m.group)
    if held is None:
        held = q.groups[m.group] = _new_chain(m.group)
        _run_add(q, <_Chain>held)
    _chain_append(<_Chain>held, m)
    return 0


cdef int _unlease(_Queue q, _Message m) except -1:
    del q.leases[m.receipt]
    m.state = READY
    if q.fifo:
        _run_add(q, <_Chain>q.groups[m.group])
    else:
        _chain_append(q.ready, m)
    return 0


cdef int _drop_group_head(_Queue q, _Message m) except -1:
    """Take a leased head out of its group, which becomes runnable again."""
    cdef _Chain held = q.groups[m.group]
    _chain_remove(held, m)
    if held.count:
        _run_add(q, held)
    else:
        del q.groups[m.group]
    return 0


cdef int _detach(_Queue q, _Message m) except -1:
    """Take a message out of the structure of its state."""
    cdef _Chain held
    if m.state == DELAYED:
        q.n_delayed -= 1
    elif m.state == LEASED:
        del q.leases[m.receipt]
        if q.fifo:
            _drop_group_head(q, m)
    elif q.fifo:
        held = q.groups[m.group]
        _chain_remove(held, m)
        if not held.count:
            del q.groups[m.group]
            _run_remove(q, held)
    else:
        _chain_remove(q.ready, m)
    return 0


cdef int _forget(QueueStore store, _Queue q, _Message m) except -1:
    """Drop a detached message from the queue and the byte counts."""
    del q.by_id[m.id]
    _remove_sent(q, m)
    q.bytes -= m.size
    store._bytes -= m.size
    m.state = GONE
    return 0


cdef inline bint _live_lease(_Heap heap) noexcept:
    """Whether the top entry of a lease heap is the current lease."""
    cdef _Message m = _top(heap)
    return m.state == LEASED and m.visible_at == heap.items[0].at


cdef int _expire_dedup(_Queue q, double now) except -1:
    ends, known = q.dedup_ends, q.dedup
    while ends and ends[0][0] <= now:
        at, dedup_id = ends.popleft()
        first = known.get(dedup_id)
        if first is not None and first[0] == at:
            del known[dedup_id]
    return 0


cdef str _stale_reason(_Queue q, object receipt):
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
    found = q.by_id.get(mid)
    if found is None:
        return "its message was acked, purged or dropped"
    if number < (<_Message>found).receive_count:
        return "its message was delivered again since"
    if number > (<_Message>found).receive_count:
        return f"it is not a receipt of queue {q.name!r}"
    return "its lease ended"


# -- snapshots ----------------------------------------------------------------
#
# A store pickles as plain data: tuples, lists, dicts, numbers, str and the
# bodies, plus its two clocks as given. _load_queue_store, the one name of
# this module a snapshot may hold, builds it again. Each queue lists its
# messages once: the live ones in send order, then those only a heap still
# holds; every structure names them by position in that list. The heaps
# keep their stale entries, as the pure twin's pickle does: how many there
# are decides when the lease heap is rebuilt, and so the ids that follow.


cdef tuple _export_store(QueueStore store):
    cdef list queues = []
    limits = store._limits
    for q in store._queues.values():
        queues.append(_export_queue(q))
    return (tuple([getattr(limits, f) for f in QueueLimits.__slots__]),
            store._clock, store._wall, store._bytes, store._seq,
            store._incarnation, queues)


def _load_queue_store(state):
    """A QueueStore from the state QueueStore.__reduce__ exports."""
    cdef QueueStore store
    cdef _Queue q
    limits, clock, wall, total, seq, incarnation, queues = state
    store = QueueStore(QueueLimits(*limits), clock, wall)

    for queue_state in queues:
        q = _load_queue(queue_state)
        store._queues[q.name] = q
    store._names = sorted(store._queues)
    store._bytes, store._seq, store._incarnation = total, seq, incarnation
    return store


cdef tuple _export_queue(_Queue q):
    cdef dict index = {}          # message -> its position in `table`
    cdef list table = [], groups = [], runnable = [], leases = []
    cdef _Message m = q.oldest
    cdef _Chain g = q.run_head
    cdef Py_ssize_t live
    while m is not None:
        _index(m, index, table)
        m = m.newer
    live = len(table)
    delayed = _export_heap(q.delayed, index, table)
    lease_ends = _export_heap(q.lease_ends, index, table)

    for name, chain in q.groups.items():
        groups.append((name, _export_chain(chain, index)))
    while g is not None:
        runnable.append(g.name)
        g = g.run_next
    for m in q.leases.values():
        leases.append(index[m])
    settings = tuple([getattr(q.settings, f) for f in QueueSettings.__slots__])
    return (q.name, settings, q.prefix, q.created_unix_ms, table, live,
            _export_chain(q.ready, index), groups, runnable, delayed,
            q.n_delayed, lease_ends, leases, q.bytes, q.due, q.expire_at,
            dict(q.dedup), list(q.dedup_ends))


cdef _Queue _load_queue(tuple state):
    cdef _Queue q
    cdef _Message m
    cdef _Chain g
    cdef list messages = []
    (name, settings, prefix, created_unix_ms, table, live, ready, groups,
     runnable, delayed, n_delayed, lease_ends, leases, size, due, expire_at,
     dedup, dedup_ends) = state
    q = _Queue(name, QueueSettings(*settings), prefix, created_unix_ms)
    for fields in table:
        messages.append(_load_message(fields))

    for m in messages[:live]:
        q.by_id[m.id] = m
        _append_sent(q, m)
    for i in ready:
        _chain_append(q.ready, messages[i])
    for group, members in groups:
        g = q.groups[group] = _new_chain(group)
        for i in members:
            _chain_append(g, messages[i])
    for group in runnable:
        _run_add(q, q.groups[group])
    # Pushed in array order, the entries pop in the order they did.
    for at, seq, i in delayed:
        q.delayed.push(at, seq, messages[i])
    for at, seq, i in lease_ends:
        q.lease_ends.push(at, seq, messages[i])
    for i in leases:
        m = messages[i]
        q.leases[m.receipt] = m

    q.n_delayed, q.bytes, q.due, q.expire_at = n_delayed, size, due, expire_at
    q.dedup, q.dedup_ends = dict(dedup), deque(dedup_ends)
    return q


cdef int _index(_Message m, dict index, list table) except -1:
    index[m] = len(table)
    table.append((m.id, m.body, m.size, m.group, m.sent_at, m.sent_unix_ms,
                  m.state, m.visible_at, m.receive_count, m.receipt))
    return 0


cdef _Message _load_message(tuple fields):
    cdef _Message m
    (id, body, size, group, sent_at, sent_unix_ms, state, visible_at,
     receive_count, receipt) = fields
    m = _new_message(id, body, group, sent_at, sent_unix_ms)
    m.size, m.state, m.visible_at = size, state, visible_at
    m.receive_count, m.receipt = receive_count, receipt
    return m


cdef list _export_heap(_Heap heap, dict index, list table):
    """The entries of a heap as (at, seq, message position), stale ones too."""
    cdef list out = []
    cdef _Message m
    cdef Py_ssize_t i
    for i in range(heap.n):
        m = <_Message>heap.items[i].message
        if m not in index:
            _index(m, index, table)
        out.append((heap.items[i].at, heap.items[i].seq, index[m]))
    return out


cdef list _export_chain(_Chain chain, dict index):
    cdef list out = []
    cdef _Message m = chain.head
    while m is not None:
        out.append(index[m])
        m = m.next
    return out
