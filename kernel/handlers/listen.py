"""LISTEN calls. The ABI is whole; this kernel does not own ports yet, so each
call answers UNIMPLEMENTED, a standard status clients can test for."""

from nubis.calls import handler
from nubis.errors import Unimplemented

CALLS = ("Listen", "Unlisten", "AttachListener", "RelayWrite", "ListListeners")


def _unimplemented(kernel, tenant, req, body):
    raise Unimplemented(
        f"{type(req).__name__.removesuffix('Request')}: "
        "listeners are not available in this kernel version")


for _name in CALLS:
    handler(_name)(_unimplemented)
