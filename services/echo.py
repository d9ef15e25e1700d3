"""A line echo daemon: every complete line a peer sends comes back to it.

Run it as a supervised cloud process, restarted when it fails:

    nubis listen run nubis.services.echo --port 20001 --processes 2

`main(args)` takes "PORT [MODE]" (MODE handoff, the default, or relay).
"""

import asyncio

from nubis.services import listen

MAX_LINE = 64 << 10


class LineEcho(asyncio.Protocol):
    """Echo each line; a line longer than MAX_LINE closes the connection."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.partial = b""

    def data_received(self, data: bytes) -> None:
        data = self.partial + data if self.partial else data
        end = data.rfind(b"\n") + 1
        if end:
            self.transport.write(data[:end])
        self.partial = data[end:]
        if len(self.partial) > MAX_LINE:
            self.transport.close()

    def eof_received(self) -> None:
        if self.partial:
            self.transport.write(self.partial)
        self.transport.close()


def main(args: bytes) -> None:
    port, _, mode = args.decode().partition(" ")
    listen.run(LineEcho, int(port), mode=mode.strip() or "handoff")
