"""What the ZeroMQ server does to every call: read a request, frame a reply.

`parse_request` takes a REQUEST or OPEN message apart: the call-table row
of its call id, its request message parsed, and its size on the wire; it
raises the NubisError the wire answers with otherwise. `reply_frames` makes
the message of a whole reply without content. This module is the
pure-Python twin of the compiled `ext/dispatch.pyx`.
"""

from google.protobuf.message import DecodeError

from nubis.errors import InvalidArgument, Unimplemented
from nubis.transport.frames import REPLY, encode_header


def parse_request(calls: dict, call_id: int, frames: list, streamed: bool):
    """(call, request, size) of a message [peer, header, request, content...].

    `size` counts the request frame and the content frames; `streamed` is
    True for an OPEN message, whose content follows in DATA messages.
    """
    call = calls.get(call_id)
    if call is None:
        raise Unimplemented(f"unknown call id {call_id}")
    if len(frames) < 3:
        raise InvalidArgument(f"{call.key}: missing the request message frame")
    method = call.method
    try:
        request = method.request.FromString(frames[2])
    except DecodeError as e:
        raise InvalidArgument(f"{call.key}: request is not a valid "
                              f"{method.request.__name__}: {e}") from None
    if (len(frames) > 3 or streamed) and not method.content_in:
        raise InvalidArgument(f"{call.key} takes no content")
    size = len(frames[2]) if len(frames) == 3 else sum(map(len, frames[2:]))
    return call, request, size


def reply_frames(peer, request_id: int, response) -> list:
    """[peer, REPLY header, serialized response]: a whole reply, no content."""
    return [peer, encode_header(REPLY, 0, request_id), response.SerializeToString()]


# The compiled twin takes over where it is built, unless NUBIS_PURE=1; the
# pure functions stay reachable under these names for tests and benchmarks.
from nubis import _hot  # noqa: E402 - the twin is picked once all is defined

pure_parse_request, pure_reply_frames = parse_request, reply_frames
_ext = _hot.compiled("dispatch")
if _ext is not None:
    parse_request = _ext.parse_request
    reply_frames = _ext.reply_frames
