"""A worker: what a forked child runs once it is inside the sandbox.

It reads an init frame (the executable's source, its client's endpoint and
token), runs the module once, says ready, then serves run frames one at a
time until its channel closes: each calls the entry function with the
argument bytes and answers with the result bytes or the error and its
traceback. The module gets a global `client`, a `nubis.client.Client` bound
to the tenant, which connects on first use; the token never appears in the
function's arguments. The same object is `nubis.client.current()`.
"""

import asyncio
import inspect
import os
import sys
import traceback
import types

from nubis.proc import channel

MODULE = "cloud_main"


class LazyClient:
    """A client of the kernel's worker endpoint, opened on first use."""

    def __init__(self, url: str, token: str):
        self._args = (url, token)
        self._client = None

    def _open(self):
        if self._client is None:
            from nubis.client import Client

            self._client = Client(*self._args)
        return self._client

    def __getattr__(self, name: str):
        return getattr(self._open(), name)


def _error(exc: BaseException) -> dict:
    try:
        text = "".join(traceback.format_exception(exc))
    except MemoryError:
        text = ""
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": text}


def _as_bytes(value) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"entry returned {type(value).__name__}; return bytes, "
                    "str or None")


def _run(module, header: dict, args: bytes) -> tuple[dict, bytes]:
    saved = dict(os.environ)
    os.environ.update(header.get("env") or {})
    try:
        func = getattr(module, header["entry"], None)
        if not callable(func):
            raise NameError(f"entry {header['entry']!r} is not a function")
        result = func(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return {"op": "result", "ok": True}, _as_bytes(result)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code == 0:
            return {"op": "result", "ok": True}, b""
        return {"op": "result", "ok": False, "exit_code": code, **_error(e)}, b""
    except BaseException as e:
        return {"op": "result", "ok": False, "exit_code": 1, **_error(e)}, b""
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def serve(sock) -> int:
    """Serve the channel until it closes; returns the exit status."""
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    frame = channel.recv(sock)
    if frame is None:
        return 0
    init, source = frame
    module = types.ModuleType(MODULE)
    module.__file__ = f"<{init['name']}>"
    module.client = LazyClient(init["url"], init["token"])
    sys.modules[MODULE] = module
    import nubis.client

    nubis.client._current = module.client
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    except BaseException as e:
        _flush()
        channel.send(sock, {"op": "init_error", **_error(e)})
        return 1
    _flush()
    channel.send(sock, {"op": "ready"})

    while (frame := channel.recv(sock)) is not None:
        header, payload = _run(module, *frame)
        _flush()
        channel.send(sock, header, payload)
    return 0
