"""HTTP/1.1 in user space: an ASGI server on a LISTEN port.

    from nubis.services import http

    async def app(scope, receive, send):           # any ASGI app: Starlette,
        await send({"type": "http.response.start",  # FastAPI, ...
                    "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello"})

    def main(args):                                 # a cloud process's entry
        http.run(app, 8080)

`run` serves until the kernel ends the listener or SIGTERM/SIGINT (then it
drains); `serve` is the coroutine. `nubis http deploy` runs an app as N
supervised daemon processes on one port (nubis.services.http.deploy), each
behind a keeper that answers 502 for it if it dies
(nubis.services.http.keeper). `WSGIAdapter` runs a WSGI app.
"""

import asyncio
import logging
import signal

from nubis.services import listen
from nubis.services.http import daemon, deploy, keeper  # noqa: F401 - preloaded
from nubis.services.http.asgi import Lifespan
from nubis.services.http.limits import Limits
from nubis.services.http.protocol import HttpProtocol, HttpServer
from nubis.services.http.wsgi import WSGIAdapter

log = logging.getLogger("nubis.http")

__all__ = ["HttpProtocol", "HttpServer", "Limits", "WSGIAdapter", "run", "serve"]


async def serve(app, port: int, *, limits: Limits | None = None,
                mode: str = "handoff", tracker=None, client=None,
                ready=None, signals: bool = True) -> None:
    """Serve the ASGI `app` on the LISTEN `port` until the kernel ends the
    listener or (with `signals`) SIGTERM or SIGINT; then drain and return."""
    lifespan = Lifespan(app)
    await lifespan.startup()
    server = HttpServer(app, limits, tracker, lifespan.state)
    loop = asyncio.get_running_loop()
    attached = loop.create_task(listen.serve(
        server.protocol, port, mode=mode, client=client, ready=ready))
    stop = loop.create_future()
    if signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _set, stop)
    try:
        await asyncio.wait([attached, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not attached.done():
            attached.cancel()        # detach: the kernel gives us no more
        log.info("http: port %d: draining %d request(s)", port, server.inflight)
        await server.drain()
        await lifespan.shutdown()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    if attached.done() and not attached.cancelled():
        attached.result()            # the kernel's reason, if it gave one


def run(app, port: int, **options) -> None:
    """Run `serve` on uvloop when it is installed, else on asyncio."""
    try:
        import uvloop
    except ImportError:
        uvloop = None
    main = serve(app, port, **options)
    if uvloop is not None:
        return uvloop.run(main)
    return asyncio.run(main)


def _set(future) -> None:
    if not future.done():
        future.set_result(None)
