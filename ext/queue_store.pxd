# The types of ext/queue_store.pyx, twin of nubis.queue.store.
#
# The pure twin keeps its queue structures in OrderedDicts and heaps of
# tuples. Here the same structures are C-level: messages carry their own
# links (an intrusive doubly linked list per structure), and the two heaps
# are arrays of C structs. Every link is a strong reference; a message is
# unlinked whenever it leaves a structure, and a queue unlinks everything
# it still holds when it is freed, so no cycle outlives its queue.
#
# The inner types never pickle on their own: a QueueStore pickles as plain
# data naming its messages by position (see "snapshots" in the .pyx).

cimport cython
from cpython.ref cimport PyObject


cdef enum:
    # Message states, as in the pure twin.
    DELAYED = 0
    READY = 1
    LEASED = 2
    GONE = 3


@cython.final
cdef class _Message:
    # "<queue prefix><sequence number in hex>", unique in the store.
    cdef str id
    # The body as sent; never copied.
    cdef object body
    # len(body) at the send; what the byte counts add and take away.
    cdef Py_ssize_t size
    # FIFO group; "" on a standard queue.
    cdef object group
    # Clock seconds of the send (retention and age) and wall milliseconds
    # of it (what a Received reports).
    cdef double sent_at
    cdef long long sent_unix_ms
    # DELAYED, READY, LEASED or GONE.
    cdef int state
    # End of the delay or of the current lease, in clock seconds.
    cdef double visible_at
    # Deliveries so far; the number in the current receipt.
    cdef long long receive_count
    # Receipt of the current or last lease; "" before the first.
    cdef str receipt
    # Neighbours in the queue's send order (every live message).
    cdef _Message older
    cdef _Message newer
    # Neighbours in the chain holding the message when it is ready (the
    # ready chain of a standard queue) or ready or leased (its group's
    # chain in a FIFO queue); None elsewhere.
    cdef _Message prev
    cdef _Message next


@cython.final
cdef class _Chain:
    # A list of messages in delivery order, linked through prev and next:
    # the ready messages of a standard queue, or one group of a FIFO queue
    # (its ready and leased messages; only the head may be leased).
    cdef _Message head
    cdef _Message tail
    cdef Py_ssize_t count
    # The group's name; "" for a ready chain.
    cdef object name
    # Neighbours in the queue's runnable list, and whether the chain is in
    # it: exactly when it is a group whose head is ready.
    cdef _Chain run_prev
    cdef _Chain run_next
    cdef bint runnable


ctypedef struct _Entry:
    # When the delay or lease ends, in clock seconds.
    double at
    # Tie-break from the store's sequence: equal times pop in push order.
    unsigned long long seq
    # The message, a reference owned by the heap.
    PyObject *message


@cython.final
cdef class _Heap:
    # A binary min-heap of entries ordered by (at, seq), as heapq orders
    # the pure twin's (at, seq, message) tuples. Entries are never
    # searched: one whose message has moved on is stale, and is skipped
    # when it reaches the top.
    cdef _Entry *items
    cdef Py_ssize_t n
    cdef Py_ssize_t cap

    cdef int push(self, double at, unsigned long long seq,
                  _Message m) except -1
    cdef _Message pop(self)
    cdef void clear(self) noexcept


@cython.final
cdef class _Queue:
    # The queue's name and settings (a QueueSettings, checked and copied).
    cdef str name
    cdef object settings
    cdef bint fifo
    # Prefix of message ids: the queue's incarnation, so that a queue
    # deleted and made again never repeats an id.
    cdef str prefix
    cdef long long created_unix_ms
    # The settings in the units the store uses: seconds, or counts.
    cdef double retention
    cdef double lease
    cdef double dedup_window
    cdef long long delay_ms
    cdef long long max_receives
    cdef str dead_letter
    # Every live message by id (receipt checks look messages up here),
    # and the same messages in send order: oldest, newest, their count.
    cdef dict by_id
    cdef _Message oldest
    cdef _Message newest
    cdef Py_ssize_t n_messages
    # Standard queues: the ready messages in delivery order.
    cdef _Chain ready
    # FIFO queues: group name -> its chain, never empty; and the chains
    # whose head is ready, in the order they became so.
    cdef dict groups
    cdef _Chain run_head
    cdef _Chain run_tail
    # Delays: a heap of their ends, and how many messages are delayed.
    cdef _Heap delayed
    cdef Py_ssize_t n_delayed
    # Leases: a heap of their ends, and the receipt of each leased
    # message (and nothing else) -> the message, in the order leased.
    cdef _Heap lease_ends
    cdef dict leases
    # Body bytes of the live messages.
    cdef long long bytes
    # Nothing falls due before `due`; the oldest message passes retention
    # at `expire_at`. Both are +inf when nothing will.
    cdef double due
    cdef double expire_at
    # FIFO dedup: dedup_id -> (window end, message id), and the
    # (window end, dedup_id) pairs in the order they were made.
    cdef dict dedup
    cdef object dedup_ends


cdef class QueueStore:
    # What the tenant may hold (a QueueLimits, read at each check).
    cdef object _limits
    # Monotonic and unix clocks in seconds: callables, injected; and
    # whether they are time.monotonic and time.time on a system where the
    # store reads the same clocks without calling them.
    cdef object _clock
    cdef object _wall
    cdef bint _os_clock
    cdef bint _os_wall
    # Queue name -> _Queue, and the names sorted, for listing.
    cdef dict _queues
    cdef list _names
    # Body bytes over all the queues.
    cdef long long _bytes
    # Message ids and heap ties; never reused.
    cdef unsigned long long _seq
    # Queues made so far; the prefix of the next queue's ids.
    cdef unsigned long long _incarnation

    cdef double _now(self) except? -1.0
    cdef long long _wall_ms(self) except? -1
    cdef _Queue _queue(self, object name)
    cdef int _advance(self, _Queue q, double now) except -1
    cdef int _drop_old(self, _Queue q, double now) except -1
    cdef int _reclaim(self, double now) except -1
    cdef list _send_fifo(self, _Queue q, object entries, double now)
    cdef int _check_room(self, _Queue q, Py_ssize_t count, long long size,
                         double now) except -1
    cdef str _add(self, _Queue q, object body, object group, double delay_ms,
                  double now, long long wall_ms)
    cdef list _receive_fifo(self, _Queue q, double want, double until,
                            double now)
    cdef object _lease(self, _Queue q, _Message m, double until)
    cdef int _dead_letter(self, _Queue q, _Message m, double now) except -1
    cdef int _tidy_leases(self, _Queue q) except -1
