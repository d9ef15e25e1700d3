"""The console's ASGI app: the page, and its JSON at /api/state."""

import asyncio
import json
import logging

from nubis.services.console.page import PAGE
from nubis.services.console.state import Gatherer

log = logging.getLogger("nubis.console")

_HTML = [(b"content-type", b"text/html; charset=utf-8"),
         (b"cache-control", b"no-store")]
_JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


class Console:
    """GET / (the page), GET /api/state (a snapshot), GET /healthz."""

    def __init__(self, connect=None):
        self._connect = connect
        self._gatherer = None
        self._lock = None

    async def gatherer(self) -> Gatherer:
        if self._gatherer is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._gatherer is None:
                    connect = self._connect
                    if connect is None:
                        from nubis.services.listen import connect
                    self._gatherer = Gatherer(await connect())
        return self._gatherer

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method not in ("GET", "HEAD"):
            await _reply(send, 405, b"read-only: GET or HEAD\n", _TEXT
                         + [(b"allow", b"GET, HEAD")])
        elif path == "/":
            await _reply(send, 200, PAGE, _HTML)
        elif path == "/api/state":
            await self._state(send)
        elif path == "/healthz":
            await _reply(send, 200, b"ok\n", _TEXT)
        else:
            await _reply(send, 404, b"not found\n", _TEXT)

    async def _state(self, send) -> None:
        try:
            snapshot = await (await self.gatherer()).snapshot()
        except Exception as e:
            log.warning("console: cannot read the kernel: %s", e)
            body = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
            await _reply(send, 503, body, _JSON)
            return
        await _reply(send, 200, json.dumps(snapshot).encode(), _JSON)


async def _reply(send, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


app = Console()
