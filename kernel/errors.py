"""The status codes of cloud calls and the exceptions that carry them.

Both transports use gRPC's status codes: a handler raises one of these, the
transport sends the code and message, and the client raises the same class.
"""

import enum


class Code(enum.IntEnum):
    """gRPC status codes, by their wire numbers."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class NubisError(Exception):
    """A cloud call failed; `code` says how, the message says what."""

    code = Code.UNKNOWN

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class Cancelled(NubisError):
    code = Code.CANCELLED


class Unknown(NubisError):
    code = Code.UNKNOWN


class InvalidArgument(NubisError):
    code = Code.INVALID_ARGUMENT


class DeadlineExceeded(NubisError):
    code = Code.DEADLINE_EXCEEDED


class NotFound(NubisError):
    code = Code.NOT_FOUND


class AlreadyExists(NubisError):
    code = Code.ALREADY_EXISTS


class PermissionDenied(NubisError):
    code = Code.PERMISSION_DENIED


class ResourceExhausted(NubisError):
    code = Code.RESOURCE_EXHAUSTED


class FailedPrecondition(NubisError):
    code = Code.FAILED_PRECONDITION


class Aborted(NubisError):
    code = Code.ABORTED


class OutOfRange(NubisError):
    code = Code.OUT_OF_RANGE


class Unimplemented(NubisError):
    code = Code.UNIMPLEMENTED


class Internal(NubisError):
    code = Code.INTERNAL


class Unavailable(NubisError):
    code = Code.UNAVAILABLE


class DataLoss(NubisError):
    code = Code.DATA_LOSS


class Unauthenticated(NubisError):
    code = Code.UNAUTHENTICATED


_BY_CODE = {
    cls.code: cls
    for cls in (
        Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound,
        AlreadyExists, PermissionDenied, ResourceExhausted, FailedPrecondition,
        Aborted, OutOfRange, Unimplemented, Internal, Unavailable, DataLoss,
        Unauthenticated,
    )
}


def error_for(code: int, message: str) -> NubisError:
    """The exception for a status code received from the wire."""
    try:
        cls = _BY_CODE[Code(code)]
    except (ValueError, KeyError):
        return Unknown(f"status {code}: {message}")
    return cls(message)
