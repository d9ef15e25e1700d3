"""The call table: one row per cloud call, from which both transports are built.

The ABI (`nubis.abi`) says what each call is on the wire; this table adds
how the kernel serves it: the handler and its flags. A handler is registered
with `@handler("SendMessages", ...)` next to its code in `nubis.handlers`, and
`build()` checks that every call of the ABI has exactly one, so a call cannot
exist on one transport and not the other, or in the ABI and not the kernel.

Every handler has the same shape::

    def handle(kernel, tenant, request, body) -> reply

`body` is the bulk content of a call whose ABI says `content_in` (a blob
put), assembled by the transport from its chunks, else None. The reply is the
response message, or for a `content_out` call a `(response, content)` pair
whose content the transport sends in chunks. A handler that must wait (a long
poll) returns an awaitable of the same; the handler of an `events` call
returns an async iterator of response messages.
"""

from dataclasses import dataclass
from typing import Callable

from nubis import abi


@dataclass(frozen=True, slots=True)
class Call:
    """One row of the call table."""

    id: int
    key: str
    method: abi.Method
    handler: Callable
    admin: bool = False     # only the admin tenant may make it


_registered: dict[str, dict] = {}


def handler(name: str, **flags) -> Callable:
    """Register the decorated function as the handler of ABI method `name`."""
    if name not in abi.BY_NAME:
        raise KeyError(f"no cloud call named {name!r} in the ABI")

    def register(fn: Callable) -> Callable:
        if name in _registered:
            raise RuntimeError(f"two handlers for cloud call {name!r}")
        _registered[name] = dict(handler=fn, **flags)
        return fn

    return register


def build() -> dict[int, Call]:
    """The call table by wire id; every ABI method must have a handler."""
    from nubis import handlers  # noqa: F401 - registers the handlers

    missing = [m.name for m in abi.METHODS if m.name not in _registered]
    if missing:
        raise RuntimeError(f"cloud calls without a handler: {missing}")
    table = {}
    for m in abi.METHODS:
        row = _registered[m.name]
        table[m.id] = Call(id=m.id, key=m.key, method=m, **row)
    return table
