# The types of ext/blob_store.pyx, twin of nubis.blob.store.
#
# The pure twin indexes keys with sortedcontainers' SortedList; here the
# index is the same idea in C (sorted chunks of keys and the last key of
# each), walked by position when listing instead of through iterators.
# A BlobStore pickles as plain data; its index is rebuilt on load.

cimport cython


@cython.final
cdef class _Keys:
    # Sorted lists of keys, each non-empty and at most 2 * LOAD long; every
    # key of a chunk is above every key of the chunk before.
    cdef list chunks
    # The last (greatest) key of each chunk, so maxes[i] == chunks[i][-1].
    cdef list maxes
    # Keys in all the chunks.
    cdef Py_ssize_t count

    cdef int add(self, object key) except -1
    cdef int remove(self, object key) except -1
    cdef void clear(self) noexcept
    # The position (chunk, index) of the first key above `lo`, or at it
    # when `inclusive`; chunk == len(chunks) when there is none.
    cdef Py_ssize_t find(self, object lo, bint inclusive,
                         Py_ssize_t *index) except -1


cdef class BlobStore:
    # What the tenant may store (a BlobLimits, read at each check).
    cdef object _limits
    # The unix clock in seconds: a callable, injected.
    cdef object _wall
    # Key -> Blob, and the same keys sorted.
    cdef dict _blobs
    cdef _Keys _keys
    # Sum of the sizes of the stored blobs.
    cdef long long _bytes

    cdef tuple _list_from(self, object lo, bint inclusive, str prefix,
                          str delimiter, Py_ssize_t limit)
