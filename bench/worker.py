"""A client process of the suite: runs the cases the runner hands it.

    python -m nubis.bench.worker

The runner keeps a few of these alive for the whole run and talks to each
over its stdin and stdout, one JSON object a line:

    runner -> {"case": {...}, "target": {...}}
    worker -> {"ready": true}           connected, set up and warmed up
    runner -> go                        (or anything else: give up)
    worker -> {"ok": true, "count": ..., "hist": "<HdrHistogram, base64>"}

A failure at any step answers {"ok": false, "error": "..."} instead. The
closed loop uses the blocking client where the system has one; every other
loop runs on uvloop, with one event loop for the life of the process.
"""

import asyncio
import gc
import json
import logging
import os
import sys

from nubis.bench import clients, loops
from nubis.bench.ops import OPS, drive, drive_async
from nubis.bench.plan import Case

log = logging.getLogger("nubis.bench.worker")

PREFILL_MAX_BYTES = 512 << 20
PREFILL_MARGIN = 1.2


class Stopped(Exception):
    """The runner called the case off before it started."""


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="worker %(process)d: %(levelname)s %(message)s")
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    jobs = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        jobs += 1
        job = json.loads(line)
        try:
            result = run_job(job, f"{os.getpid()}-{jobs}", loop)
        except Stopped:
            result = {"ok": False, "error": "stopped before it started"}
        except Exception as e:  # noqa: BLE001 - reported to the runner
            log.exception("case %s failed", job.get("case"))
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        _say(result)
    return 0


def run_job(job: dict, tag: str, loop) -> dict:
    case = Case(**job["case"])
    if case.mode in ("closed", "processes") and case.op.blocking:
        sample = run_blocking(case, job["target"], tag)
    else:
        sample = loop.run_until_complete(run_async(case, job["target"], tag))
    return {
        "ok": True,
        "count": len(sample.ns),
        "errors": sample.errors,
        "first_error": sample.first_error,
        "wall_s": sample.wall_ns / 1e9,
        "prep_s": sample.prep_ns / 1e9,
        "hist": sample.histogram().encode().decode("ascii"),
    }


def run_blocking(case: Case, target: dict, tag: str) -> loops.Sample:
    conn = clients.connect(case.system, target)
    try:
        op = OPS[(case.system, case.name)](conn, case.payload, tag)
        drive(op.setup())
        try:
            loops.closed(op, case.warmup)
            _ready_then_go()
            return loops.closed(op, case.duration)
        finally:
            gc.unfreeze()
            _quietly(drive, op.teardown())
    finally:
        clients.close(conn)


async def run_async(case: Case, target: dict, tag: str) -> loops.Sample:
    conn = await clients.connect_async(case.system, target)
    try:
        make = OPS[(case.system, case.name)]
        width = case.depth if case.mode == "pipelined" else 1
        ops = [make(conn, case.payload, f"{tag}-{i}") for i in range(width)]
        for op in ops:
            await drive_async(op.setup())
        try:
            return await _measure(case, ops)
        finally:
            gc.unfreeze()
            for op in ops:
                await _quietly_async(op.teardown())
    finally:
        await clients.close_async(conn)


async def _measure(case: Case, ops: list) -> loops.Sample:
    if case.mode != "open":
        await loops.pipelined(ops, case.warmup)
        _ready_then_go()
        return await loops.pipelined(ops, case.duration)

    op = ops[0]
    count = int(case.rate * (case.warmup + case.duration) * PREFILL_MARGIN)
    await drive_async(op.prefill(min(count, PREFILL_MAX_BYTES // case.payload)))
    await loops.open_loop(op, case.rate, case.warmup)
    _ready_then_go()
    return await loops.open_loop(op, case.rate, case.duration)


def _ready_then_go() -> None:
    # Objects made during setup are frozen out of the collector's way, so a
    # full collection in the timed interval costs what the loop itself adds.
    gc.collect()
    gc.freeze()
    _say({"ready": True})
    if sys.stdin.readline().strip() != "go":
        raise Stopped


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _quietly(run, gen) -> None:
    try:
        run(gen)
    except Exception as e:  # noqa: BLE001 - the measurement already stands
        log.warning("teardown failed: %s", e)


async def _quietly_async(gen) -> None:
    try:
        await drive_async(gen)
    except Exception as e:  # noqa: BLE001 - the measurement already stands
        log.warning("teardown failed: %s", e)


if __name__ == "__main__":
    sys.exit(main())
