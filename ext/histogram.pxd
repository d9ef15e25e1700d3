# The fields of ext/histogram.pyx, twin of nubis.histogram.

from libc.stdint cimport int64_t, uint64_t

cdef enum:
    # The layout of the pure twin: SUB_BITS bits below the leading one,
    # exponents 0 to MAX_EXP, so (MAX_EXP + 1) * 2**SUB_BITS buckets.
    SUB_BITS = 5
    SUB = 32
    MAX_EXP = 48
    SIZE = 1568


cdef class Histogram:
    # Values recorded per bucket; bucket i holds the values whose index
    # (see record) is i.
    cdef uint64_t _counts[SIZE]
    # Values recorded since the last reset: the sum of _counts.
    cdef readonly uint64_t total
    # The largest value recorded, clamped as record clamps it; 0 if none.
    cdef readonly int64_t max

    # Record one value, already a C integer: what record() does after
    # converting its argument, for callers in C.
    cdef void add(self, int64_t value) noexcept nogil
