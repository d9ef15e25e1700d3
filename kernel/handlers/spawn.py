"""SPAWN calls. The ABI is whole; this kernel does not run cloud processes yet,
so each call answers UNIMPLEMENTED, a standard status clients can test for."""

from nubis.calls import handler
from nubis.errors import Unimplemented

CALLS = ("Spawn", "WaitProcess", "KillProcess", "ListProcesses",
         "ReadProcessLogs", "SetWarmPool")


def _unimplemented(kernel, tenant, req, body):
    raise Unimplemented(
        f"{type(req).__name__.removesuffix('Request')}: "
        "cloud processes are not available in this kernel version")


for _name in CALLS:
    handler(_name)(_unimplemented)
