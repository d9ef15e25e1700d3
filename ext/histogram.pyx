# cython: language_level=3
"""The latency histogram in C: the twin of nubis.histogram.

Same buckets, same percentiles; the counts live in a C array of uint64
instead of a list of Python ints, so a record is a few instructions once
its argument is a C integer.
"""

from libc.math cimport isinf, isnan
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object, int *) except? -1

# The largest value kept: 2**(MAX_EXP + SUB_BITS) - 1; greater ones count
# as this, as in the pure twin.
cdef int64_t _CLAMP = (<int64_t>1 << (MAX_EXP + SUB_BITS)) - 1


cdef extern from *:
    # GCC and Clang; the count of leading zero bits of a non-zero value.
    int __builtin_clzll(unsigned long long) nogil


cdef inline int _bit_length(uint64_t v) noexcept nogil:
    return 64 - __builtin_clzll(v) if v else 0


cdef class Histogram:
    """A log-linear histogram of nanosecond values, with percentiles."""

    def __cinit__(self):
        memset(self._counts, 0, sizeof(self._counts))

    def record(self, value):
        cdef int overflow = 0
        cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow > 0:
            v = _CLAMP
        elif overflow < 0:
            v = 0
        self.add(v)

    cdef void add(self, int64_t value) noexcept nogil:
        cdef int e
        cdef int index
        if value < SUB:
            index = <int>value if value > 0 else 0
        else:
            e = _bit_length(<uint64_t>value) - SUB_BITS
            if e > MAX_EXP:
                e = MAX_EXP
                value = _CLAMP
            index = (e << SUB_BITS) | <int>((value >> (e - 1)) & (SUB - 1))
        self._counts[index] += 1
        self.total += 1
        if value > self.max:
            self.max = value

    def percentile(self, double p):
        """Upper bound of the bucket holding the p-th percentile value."""
        cdef double exact
        cdef long long rank
        cdef uint64_t seen = 0
        cdef int index

        if not self.total:
            return 0
        exact = p / 100.0 * <double>self.total + 0.5
        if isnan(exact) or isinf(exact):
            int(exact)  # the ValueError or OverflowError of the pure twin
        if exact >= <double>self.total + 1:
            return self.max  # past every count, as the pure loop ends
        rank = <long long>exact if exact >= 1 else 1
        for index in range(SIZE):
            seen += self._counts[index]
            if seen >= <uint64_t>rank:
                return min(_upper(index), self.max)
        return self.max

    def reset(self):
        memset(self._counts, 0, sizeof(self._counts))
        self.total = 0
        self.max = 0

    @property
    def counts(self):
        """A copy of the counts per bucket, as the pure twin's list."""
        return [self._counts[i] for i in range(SIZE)]


cdef int64_t _upper(int index) noexcept nogil:
    cdef int e = index // SUB
    cdef int64_t m = index % SUB
    if e == 0:
        return m
    return ((SUB | m) << (e - 1)) + ((<int64_t>1) << (e - 1)) - 1
