"""Kernel URLs: one string picks the transport and the address.

    zmq+ipc:///run/nubis/kernel.sock    ZeroMQ over a unix socket (fastest)
    zmq+tcp://127.0.0.1:7701            ZeroMQ over TCP (PLAIN, or CURVE
                                        when given the kernel's public key)
    grpc://127.0.0.1:7700               gRPC (HTTP/2)
    grpcs://kernel.example:7700         gRPC over TLS
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from nubis.errors import InvalidArgument

SCHEMES = ("zmq+ipc", "zmq+tcp", "grpc", "grpcs")


@dataclass(frozen=True)
class KernelUrl:
    transport: str   # "zmq" or "grpc"
    address: str     # a ZeroMQ endpoint, or host:port for gRPC
    url: str
    tls: bool = False  # grpcs: gRPC over TLS


def parse(url: str) -> KernelUrl:
    """Split a kernel URL; INVALID_ARGUMENT names what is wrong with it."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidArgument(f"bad kernel URL {url!r}: expected SCHEME://ADDRESS "
                              f"with a scheme of {', '.join(SCHEMES)}")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "zmq+ipc":
        if not rest.startswith("/") or rest == "/":
            raise InvalidArgument(f"bad kernel URL {url!r}: zmq+ipc needs an "
                                  "absolute socket path, as zmq+ipc:///path")
        return KernelUrl("zmq", f"ipc://{rest}", url)
    if scheme in ("zmq+tcp", "grpc", "grpcs"):
        host, port = _host_port(url, rest)
        if scheme.startswith("grpc"):
            return KernelUrl("grpc", f"{host}:{port}", url, scheme == "grpcs")
        return KernelUrl("zmq", f"tcp://{host}:{port}", url)
    raise InvalidArgument(f"bad kernel URL {url!r}: unknown scheme {scheme!r}; "
                          f"use one of {', '.join(SCHEMES)}")


def _host_port(url: str, rest: str) -> tuple[str, int]:
    parts = urlsplit("//" + rest)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidArgument(f"bad kernel URL {url!r}: expected only host:port")
    try:
        port = parts.port
    except ValueError:
        raise InvalidArgument(f"bad kernel URL {url!r}: bad port") from None
    if not parts.hostname or port is None:
        raise InvalidArgument(f"bad kernel URL {url!r}: expected host:port")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return host, port
