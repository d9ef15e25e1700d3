"""The HTTP daemon's limits and the canned responses it answers on its own."""

import time
from dataclasses import dataclass, fields


@dataclass
class Limits:
    """What one daemon process accepts; the defaults suit a small web app."""

    max_header_bytes: int = 64 << 10   # request line and headers: else 431
    max_body_bytes: int = 16 << 20     # a request body: else 413
    request_timeout: float = 30.0      # the app's answer, whole: else 504
    header_timeout: float = 10.0       # a started request's head: else 408
    keepalive_timeout: float = 5.0     # an idle kept-alive connection: closed
    max_inflight: int = 256            # requests in the app at once: else 503
    drain_seconds: float = 10.0        # shutdown: in-flight requests finish
    access_log: bool = True            # a line per request on nubis.http.access

    @classmethod
    def from_dict(cls, values: dict) -> "Limits":
        """Limits from a dict of option names; unknown names are an error."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown HTTP limit(s) {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        out = cls()
        for name, value in values.items():
            kind = type(getattr(out, name))
            try:
                value = kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"HTTP limit {name} must be a {kind.__name__}, "
                                 f"got {value!r}") from None
            if kind is not bool and value <= 0:
                raise ValueError(f"HTTP limit {name} must be positive, got {value}")
            setattr(out, name, value)
        return out


REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted",
    204: "No Content", 206: "Partial Content", 301: "Moved Permanently",
    302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    411: "Length Required", 412: "Precondition Failed",
    413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}

_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode()
                 for code, reason in REASONS.items()}


def status_line(code: int) -> bytes:
    line = _STATUS_LINES.get(code)
    if line is None:
        line = f"HTTP/1.1 {code} {REASONS.get(code, 'Status')}\r\n".encode()
    return line


_date = [0, b""]


def date_header() -> bytes:
    """The Date header line, formatted once a second."""
    now = int(time.time())
    if now != _date[0]:
        stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
        _date[:] = now, b"date: " + stamp.encode() + b"\r\n"
    return _date[1]


def canned(code: int, message: str, *, close: bool = True,
           extra: bytes = b"") -> bytes:
    """A whole plain-text response the daemon sends without the app."""
    body = f"{code} {REASONS.get(code, '')}: {message}\n".encode()
    return b"".join((
        status_line(code), date_header(),
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n" if close else b"", extra, b"\r\n", body))
