# cython: language_level=3
"""The ZeroMQ wire's frame header in C: the twin of nubis.transport.frames.

Same calls, same results, same errors. The fast paths take exact ranges of
Python ints and buffers of exactly 12 bytes; anything else (an int out of
range, a float, a buffer of the wrong shape) is handed to the struct module
the pure twin uses, so that it fails with the very same exception.
"""

from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBuffer_Release,
    PyObject_CheckBuffer,
    PyObject_GetBuffer,
)
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.long cimport PyLong_Check

import struct

cdef extern from "Python.h":
    # Without Cython's error check: a failure means "not in range", and the
    # caller then lets struct raise the error the pure twin raises.
    unsigned long long _as_u64 "PyLong_AsUnsignedLongLong" (object) noexcept

VERSION = 1
HEADER_SIZE = HEADER_BYTES

cdef object _HEADER = struct.Struct("!BBHQ")
cdef object _pack = _HEADER.pack
cdef object _unpack = _HEADER.unpack


cdef void write_header(unsigned char *out, unsigned int version,
                       unsigned int kind, unsigned int code,
                       unsigned long long request_id) noexcept nogil:
    cdef int i
    out[0] = <unsigned char>version
    out[1] = <unsigned char>kind
    out[2] = <unsigned char>(code >> 8)
    out[3] = <unsigned char>code
    for i in range(8):
        out[11 - i] = <unsigned char>(request_id >> (8 * i))


cdef tuple read_header(const unsigned char *p):
    cdef unsigned long long rid = 0
    cdef int i
    for i in range(4, 12):
        rid = (rid << 8) | p[i]
    return (p[0], p[1], (p[2] << 8) | p[3], rid)


cdef inline unsigned long long _u64(object value):
    """The value of an int in 0 to 2**64 - 1; 2**64 - 1 also on any failure.

    The caller treats 2**64 - 1 as "check again slowly": the one valid
    value that takes this path pays a second conversion, which is exact.
    """
    cdef unsigned long long v
    if not PyLong_Check(value):
        return <unsigned long long>-1
    v = _as_u64(value)
    if v == <unsigned long long>-1 and PyErr_Occurred():
        PyErr_Clear()
    return v


def encode_header(kind, code, request_id):
    cdef unsigned long long k = _u64(kind)
    cdef unsigned long long c = _u64(code)
    cdef unsigned long long r = _u64(request_id)
    cdef bytes out

    if k > 0xFF or c > 0xFFFF or r == <unsigned long long>-1:
        return _pack(VERSION, kind, code, request_id)
    out = PyBytes_FromStringAndSize(NULL, HEADER_BYTES)
    write_header(<unsigned char *>PyBytes_AS_STRING(out), 1, <unsigned int>k,
                 <unsigned int>c, r)
    return out


def decode_header(frame):
    """(version, kind, code, request id) of a header frame."""
    cdef Py_buffer view
    cdef Py_ssize_t n

    if PyBytes_CheckExact(frame):
        n = PyBytes_GET_SIZE(frame)
        if n != HEADER_BYTES:
            raise ValueError(f"header frame is {n} bytes, not {HEADER_SIZE}")
        return read_header(<const unsigned char *>PyBytes_AS_STRING(frame))

    # A memoryview or a zmq Frame: read its buffer in place. The length
    # check uses len() as the pure twin does, and any buffer that is not
    # 12 plain bytes goes to struct for the same error.
    n = len(frame)
    if n != HEADER_BYTES:
        raise ValueError(f"header frame is {n} bytes, not {HEADER_SIZE}")
    if not PyObject_CheckBuffer(frame):
        return _unpack(frame)
    PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
    try:
        if view.len != HEADER_BYTES:
            return _unpack(frame)
        return read_header(<const unsigned char *>view.buf)
    finally:
        PyBuffer_Release(&view)
