# cython: language_level=3
"""Every call's request and reply in C: the twin of nubis.transport.dispatch.

Same calls, same results, same errors. The call table is read as a dict
and the frames by index; the request is parsed by its protobuf class, so a
bad one fails with the very message the pure twin gives. The REPLY header
is written in place; a request id that is not an int in 0 to 2**64 - 1 is
handed to the frames module, which fails with the pure twin's error.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_CheckExact
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.long cimport PyLong_Check

from nubis._ext.frames cimport HEADER_BYTES, write_header

from google.protobuf.message import DecodeError

from nubis.errors import InvalidArgument, Unimplemented
from nubis.transport.frames import encode_header

cdef extern from "Python.h":
    # Without Cython's error check: a failure means "not in range", and the
    # slow path then raises the error the pure twin raises.
    unsigned long long _as_u64 "PyLong_AsUnsignedLongLong" (object) noexcept

assert REPLY_KIND == 16


def parse_request(calls, call_id, frames, streamed):
    """(call, request, size) of a message [peer, header, request, content...]."""
    cdef Py_ssize_t n, i, size
    cdef object call, method, message, request

    if PyDict_CheckExact(calls):
        call = (<dict>calls).get(call_id)
    else:
        call = calls.get(call_id)
    if call is None:
        raise Unimplemented(f"unknown call id {call_id}")
    n = len(frames)
    if n < 3:
        raise InvalidArgument(f"{call.key}: missing the request message frame")
    method = call.method
    message = method.request
    try:
        request = message.FromString(frames[2])
    except DecodeError as e:
        raise InvalidArgument(f"{call.key}: request is not a valid "
                              f"{message.__name__}: {e}") from None
    if (n > 3 or streamed) and not method.content_in:
        raise InvalidArgument(f"{call.key} takes no content")
    size = 0
    for i in range(2, n):
        size += len(frames[i])
    return call, request, size


def reply_frames(peer, request_id, response):
    """[peer, REPLY header, serialized response]: a whole reply, no content."""
    cdef unsigned long long r = <unsigned long long>-1
    cdef bytes head

    if PyLong_Check(request_id):
        r = _as_u64(request_id)
        if r == <unsigned long long>-1 and PyErr_Occurred():
            PyErr_Clear()
    if r == <unsigned long long>-1:
        # Out of range, not an int, or 2**64 - 1: checked slowly, exactly.
        head = encode_header(REPLY_KIND, 0, request_id)
    else:
        head = PyBytes_FromStringAndSize(NULL, HEADER_BYTES)
        write_header(<unsigned char *>PyBytes_AS_STRING(head), 1, REPLY_KIND, 0, r)
    return [peer, head, response.SerializeToString()]
