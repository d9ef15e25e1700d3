"""Nubis: a minimal cloud operating system kernel.

Tenants make four cloud calls (LISTEN, SPAWN, QUEUE, BLOB) over gRPC or
ZeroMQ. Programs use the client library in `nubis.client`; the kernel itself
is started with `nubis kernel`.
"""

from nubis.version import ABI, __version__

__all__ = ["ABI", "__version__"]
