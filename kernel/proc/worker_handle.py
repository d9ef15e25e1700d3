"""One worker as the kernel sees it: its channel, output pipes and exit.

A worker is STARTING (forked, running the module), then IDLE or BUSY, then
DEAD. It is DEAD when the zygote reports its exit, and only then: its
channel closing is a hint (the worker is killed, and the report follows).
A worker that breaks the channel protocol is killed at once. Its output is
handed to `sink` (the log of the process it last ran), and a finished
attempt drains the pipes first, so output written before the result is
never attributed to the next process.
"""

import asyncio
import logging
import os
import signal
from dataclasses import dataclass

from nubis.proc import channel, usage

log = logging.getLogger("nubis.proc")

STARTING, IDLE, BUSY, DEAD = "starting", "idle", "busy", "dead"
_DIED, _TIMEOUT = object(), object()
STDOUT, STDERR = 1, 2


@dataclass
class Outcome:
    """How one attempt (or one worker start) ended."""

    ok: bool
    result: bytes = b""
    error: str = ""
    traceback: str = ""
    exit_code: int = 0
    died: bool = False


def death_of(status: int, limits: dict) -> Outcome:
    """The outcome of a worker that exited with wait status `status`."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        error = f"worker killed by {name}"
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL
                                     and limits.get("cpu_seconds")):
            error += f" (cpu limit {limits.get('cpu_seconds')} s?)"
        return Outcome(False, error=error, exit_code=-sig, died=True)
    code = os.WEXITSTATUS(status)
    return Outcome(False, error=f"worker exited with status {code}",
                   exit_code=code, died=True)


class Worker:
    def __init__(self, wid: int, key: tuple, tenant, limits: dict,
                 max_payload: int):
        loop = asyncio.get_running_loop()
        self.wid = wid
        self.key = key
        self.tenant = tenant
        self.limits = limits
        self.max_payload = max_payload
        self.state = STARTING
        self.os_pid = 0
        self.forked = loop.create_future()
        self.dead = loop.create_future()
        self.frames: asyncio.Queue = asyncio.Queue()
        self.proc = None            # the process of the running attempt
        self.sink = None            # where output goes: (stream, bytes) -> None
        self.idle_since = 0.0
        self.one_shot = bool(limits.get("cpu_seconds"))
        self.charged = [0.0, 0.0]   # CPU seconds already accounted
        self.final = None           # (user, system, maxrss) from wait4
        self.token = ""
        self.view = None
        self.scratch = ""
        self.reader = self.writer = None
        self.pipes: dict[int, int] = {}     # fd -> stream
        self._reader_task = None

    def __repr__(self) -> str:
        return f"<Worker {self.wid} {self.tenant.name} pid={self.os_pid}>"

    # -- start ---------------------------------------------------------------

    async def connect(self, chan, out_fd: int, err_fd: int) -> None:
        loop = asyncio.get_running_loop()
        self.reader, self.writer = await asyncio.open_unix_connection(sock=chan)
        self._reader_task = loop.create_task(self._read())
        for fd, stream in ((out_fd, STDOUT), (err_fd, STDERR)):
            os.set_blocking(fd, False)
            self.pipes[fd] = stream
            loop.add_reader(fd, self._on_output, fd)

    async def boot(self, init: dict, source: bytes) -> Outcome | None:
        """Wait until the module ran; None when ready, else how it failed."""
        done, _ = await asyncio.wait({self.forked, self.dead},
                                     return_when=asyncio.FIRST_COMPLETED)
        if self.dead.done():
            return self.dead.result()
        if not await self._send(init, source):
            return await self._death()
        frame = await self._next(None)
        if frame is _DIED:
            return self.dead.result()
        header, _ = frame
        if header.get("op") == "ready":
            self.state = IDLE
            return None
        if header.get("op") == "init_error":
            return Outcome(False, error=str(header.get("error", "")),
                           traceback=str(header.get("traceback", "")),
                           exit_code=1)
        return self._broken("expected ready")

    # -- one attempt ---------------------------------------------------------

    async def run(self, entry: str, args: bytes, env: dict,
                  timeout: float | None) -> Outcome:
        self.state = BUSY
        if not await self._send({"op": "run", "entry": entry, "env": env}, args):
            return await self._death()
        frame = await self._next(timeout)
        if frame is _TIMEOUT:
            self.kill(signal.SIGKILL)
            death = await self.dead
            return Outcome(False, error=f"timed out after {timeout:g} s",
                           exit_code=death.exit_code, died=True)
        if frame is _DIED:
            return self.dead.result()
        header, payload = frame
        if header.get("op") != "result":
            return self._broken("expected a result")
        self.drain_output()
        return Outcome(ok=bool(header.get("ok")), result=payload,
                       error=str(header.get("error", "")),
                       traceback=str(header.get("traceback", "")),
                       exit_code=_int(header.get("exit_code", 0)))

    async def _send(self, header: dict, payload: bytes) -> bool:
        try:
            self.writer.write(channel.encode(header, payload))
            await self.writer.drain()
            return True
        except (ConnectionError, OSError):
            return False

    async def _next(self, timeout):
        get = asyncio.ensure_future(self.frames.get())
        done, _ = await asyncio.wait({get, self.dead}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            frame = get.result()
            if frame is None:
                await self._death()
                return _DIED
            return frame
        get.cancel()
        return _DIED if self.dead.done() else _TIMEOUT

    async def _death(self) -> Outcome:
        """Kill the worker (whose channel is gone) and wait for its report."""
        self.kill(signal.SIGKILL)
        return await self.dead

    def _broken(self, what: str) -> Outcome:
        log.info("worker %d of %s broke its channel (%s); killed", self.wid,
                 self.tenant.name, what)
        self.kill(signal.SIGKILL)
        return Outcome(False, error=f"worker broke its channel ({what})",
                       exit_code=-signal.SIGKILL, died=True)

    async def _read(self) -> None:
        try:
            while True:
                frame = await channel.read(self.reader, self.max_payload)
                if frame is None:
                    break
                self.frames.put_nowait(frame)
        except (channel.ChannelError, OSError) as e:
            log.info("worker %d of %s: %s; killed", self.wid, self.tenant.name, e)
            self.kill(signal.SIGKILL)
        self.frames.put_nowait(None)

    # -- output, signals, exit ---------------------------------------------

    def _on_output(self, fd: int) -> None:
        self._read_output(fd)

    def drain_output(self) -> None:
        for fd in list(self.pipes):
            for _ in range(64):
                if fd not in self.pipes or not self._read_output(fd):
                    break

    def _read_output(self, fd: int) -> bool:
        """Read one chunk of a worker's output; False when there is none now."""
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._close_pipe(fd)
            return False
        if self.sink is not None:
            self.sink(self.pipes[fd], data)
        return True

    def _close_pipe(self, fd: int) -> None:
        asyncio.get_running_loop().remove_reader(fd)
        self.pipes.pop(fd, None)
        os.close(fd)

    def kill(self, sig: int) -> None:
        """Signal the worker's process group (its own children too)."""
        if not self.os_pid or self.dead.done():
            return
        try:
            os.killpg(self.os_pid, sig)
        except OSError:
            try:
                os.kill(self.os_pid, sig)
            except OSError:
                pass

    def retire(self) -> None:
        """Ask an idle worker to exit: it sees its channel close."""
        if self.writer is not None and not self.writer.is_closing():
            self.writer.close()

    def on_forked(self, pid: int) -> None:
        self.os_pid = pid
        if not self.forked.done():
            self.forked.set_result(pid)

    def on_exit(self, status: int, user: float, system: float,
                maxrss: int) -> None:
        self.kill(signal.SIGKILL)    # orphans left in its process group
        self.final = (user, system, maxrss)
        self.drain_output()
        for fd in list(self.pipes):
            self._close_pipe(fd)
        self.state = DEAD
        if self.writer is not None:
            self.writer.close()
        if not self.dead.done():
            self.dead.set_result(death_of(status, self.limits))

    def on_fork_failed(self, error: str) -> None:
        for fd in list(self.pipes):
            self._close_pipe(fd)
        self.state = DEAD
        if self.writer is not None:
            self.writer.close()
        if not self.dead.done():
            self.dead.set_result(Outcome(False, error=f"cannot fork: {error}",
                                         exit_code=-1, died=True))

    # -- accounting ----------------------------------------------------------

    def take_usage(self) -> tuple[float, float, int]:
        """CPU seconds used since last taken, and peak resident bytes."""
        if self.final is not None:
            user, system, peak = self.final
        else:
            user, system = usage.cpu_seconds(self.os_pid)
            peak = usage.peak_memory(self.os_pid)
        du = max(0.0, user - self.charged[0])
        ds = max(0.0, system - self.charged[1])
        self.charged = [max(user, self.charged[0]), max(system, self.charged[1])]
        return du, ds, peak


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1
