"""The load generators: closed loop, pipelined, and open loop.

Every loop reads the clock right before and right after the timed call and
appends the difference, in nanoseconds, to an array; recording into an
HdrHistogram (about 1.5 us a value in Python) happens after the run, never
inside the timed interval. `prep` and `after` run between timed calls.

The open loop offers calls at a fixed rate whatever the replies do, and
measures each from its intended send time, not from when it was sent: a
stall of the system under test (or of this client) shows up as the
latency of every call it delayed, so there is no coordinated omission.
"""

import asyncio
import time
from array import array

from hdrh.histogram import HdrHistogram

from nubis.bench.ops import drive, drive_async

LOWEST_NS = 1
HIGHEST_NS = 60_000_000_000
FIGURES = 3
MAX_ERRORS = 100
OPEN_MAX_IN_FLIGHT = 10_000
OPEN_PREP_EVERY = 100


class Sample:
    """The latencies of one loop, its errors and its wall time."""

    def __init__(self):
        self.ns = array("q")
        self.errors = 0
        self.first_error = ""
        self.wall_ns = 0
        self.prep_ns = 0       # closed loop: wall time spent in `prep`

    def failed(self, e: BaseException) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{type(e).__name__}: {e}"

    def check(self) -> None:
        """Give up when over MAX_ERRORS calls, and a tenth of them, failed."""
        if self.errors >= MAX_ERRORS and self.errors * 10 > len(self.ns):
            raise RuntimeError(f"{self.errors} calls failed, the first with "
                               f"{self.first_error}")

    def histogram(self) -> HdrHistogram:
        hist = HdrHistogram(LOWEST_NS, HIGHEST_NS, FIGURES)
        record = hist.record_value
        for value in self.ns:
            record(min(max(value, LOWEST_NS), HIGHEST_NS))
        return hist


def closed(op, seconds: float) -> Sample:
    """One call in flight on a blocking client, back to back."""
    sample = Sample()
    append, now = sample.ns.append, time.perf_counter_ns
    call, prep, after = op.call, op.prep, op.after
    start = now()
    stop = start + int(seconds * 1e9)
    while True:
        if prep is not None:
            t0 = now()
            drive(prep())
            sample.prep_ns += now() - t0
        try:
            t0 = now()
            result = call()
            t1 = now()
        except Exception as e:  # noqa: BLE001 - counted, the loop goes on
            sample.failed(e)
            sample.check()
            t1 = now()
        else:
            append(t1 - t0)
            if after is not None:
                after(result)
        if t1 >= stop:
            break
    sample.wall_ns = now() - start
    return sample


async def pipelined(ops: list, seconds: float) -> Sample:
    """One coroutine per op on a shared connection: len(ops) in flight."""
    sample = Sample()
    stop = time.perf_counter_ns() + int(seconds * 1e9)

    async def worker(op):
        append, now = sample.ns.append, time.perf_counter_ns
        call, prep, after = op.call, op.prep, op.after
        while True:
            if prep is not None:
                await drive_async(prep())
            try:
                t0 = now()
                result = await call()
                t1 = now()
            except Exception as e:  # noqa: BLE001 - counted, the loop goes on
                sample.failed(e)
                sample.check()
                t1 = now()
            else:
                append(t1 - t0)
                if after is not None:
                    after(result)
            if t1 >= stop:
                return

    start = time.perf_counter_ns()
    await asyncio.gather(*(worker(op) for op in ops))
    sample.wall_ns = time.perf_counter_ns() - start
    return sample


async def open_loop(op, rate: float, seconds: float) -> Sample:
    """Offer `rate` calls per second for `seconds`, latency from intent.

    The schedule sleeps while the next send is over a millisecond away and
    yields to the loop (so replies are read) while it is closer. `prep`
    runs in the background, one at a time, every OPEN_PREP_EVERY calls.
    """
    sample = Sample()
    now = time.perf_counter_ns
    interval = 1e9 / rate
    total = max(1, int(rate * seconds))
    pending = set()
    prep_task = None

    async def one(intended):
        try:
            result = await op.call()
        except Exception as e:  # noqa: BLE001 - counted, the loop goes on
            sample.failed(e)
            return
        sample.ns.append(now() - intended)
        if op.after is not None:
            op.after(result)

    start = now() + 1_000_000
    for i in range(total):
        intended = start + int(i * interval)
        while True:
            ahead = intended - now()
            if ahead > 1_500_000:
                await asyncio.sleep((ahead - 1_000_000) / 1e9)
            elif ahead > 0 or len(pending) >= OPEN_MAX_IN_FLIGHT:
                await asyncio.sleep(0)
            else:
                break
        task = asyncio.ensure_future(one(intended))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if i % OPEN_PREP_EVERY == 0:
            sample.check()
            if op.prep is not None and (prep_task is None or prep_task.done()):
                prep_task = asyncio.ensure_future(drive_async(op.prep()))
    if pending:
        await asyncio.wait(pending)
    if prep_task is not None:
        await prep_task
    sample.wall_ns = now() - start
    sample.check()
    return sample
