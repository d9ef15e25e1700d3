"""What the journal costs: queue send latency and throughput per fsync policy,
and how long a kernel takes to replay a journal of a million records.

- Latency: one client sends one message at a time over ZeroMQ tcp; p50 and
  p99.9 per policy, and each as a ratio to `none` measured in the same run.
- Throughput: 64 sends in flight on one AsyncClient; sends a second under
  `always` as a ratio to `none` (group commit is what keeps it close).
- Replay: a journal of N records (sends, receives and acks) is written
  in-process, then replayed into a fresh kernel state and timed.

Run: python -m nubis.bench.journal_cost [--sends 20000] [--records 1000000];
it prints JSON.
"""

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from types import SimpleNamespace

from nubis.bench.crash import TOKEN, Kernel
from nubis.client import AsyncClient, Client
from nubis.clock import KernelClock
from nubis.journal import Journal
from nubis.queue import QueueSettings
from nubis.tenants import TenantRegistry

POLICIES = ("none", "everysec", "always")


def _percentile(values: list, p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def _latency(url: str, sends: int) -> dict:
    times = []
    with Client(url, TOKEN) as c:
        c.queue.create("cost")
        for _ in range(min(1000, sends // 10)):        # warm up
            c.queue.send("cost", b"x" * 64)
        for _ in range(sends):
            t = time.perf_counter_ns()
            c.queue.send("cost", b"x" * 64)
            times.append(time.perf_counter_ns() - t)
        c.queue.purge("cost")
    return {"p50_us": _percentile(times, 50) / 1e3,
            "p999_us": _percentile(times, 99.9) / 1e3}


async def _throughput(url: str, seconds: float, depth: int = 64) -> float:
    async with AsyncClient(url, TOKEN) as c:
        await c.queue.create("flight")
        done = 0
        stop = time.monotonic() + seconds

        async def sender():
            nonlocal done
            while time.monotonic() < stop:
                await c.queue.send("flight", b"x" * 64)
                done += 1
        started = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(depth)))
        rate = done / (time.monotonic() - started)
        await c.queue.purge("flight")
    return rate


def policies(sends: int, seconds: float) -> dict:
    """Latency and throughput of each policy, with ratios to none."""
    out = {}
    for policy in POLICIES:
        folder = tempfile.mkdtemp(prefix="nubis-cost-")
        kernel = Kernel(folder, policy)
        kernel.start()
        try:
            row = _latency(kernel.urls[0], sends)
            row["sends_per_second_64_in_flight"] = round(asyncio.run(
                _throughput(kernel.urls[0], seconds)))
        finally:
            kernel.stop()
            shutil.rmtree(folder, ignore_errors=True)
        out[policy] = row
    base = out["none"]
    for row in out.values():
        row["p50_ratio"] = round(row["p50_us"] / base["p50_us"], 2)
        row["p999_ratio"] = round(row["p999_us"] / base["p999_us"], 2)
        row["throughput_ratio"] = round(
            row["sends_per_second_64_in_flight"]
            / base["sends_per_second_64_in_flight"], 3)
    return out


def _state(folder: str):
    clock = KernelClock()
    registry = TenantRegistry(clock.now)
    registry.add("bench", TOKEN)
    journal = Journal(folder, "everysec", clock, 0)
    kernel = SimpleNamespace(tenants=registry, clock=clock)
    journal.open(kernel)
    return kernel, journal


def replay(records: int) -> dict:
    """Write a journal of about `records` records, then time its replay."""
    folder = tempfile.mkdtemp(prefix="nubis-replay-")
    try:
        kernel, journal = _state(folder)
        queues = kernel.tenants.by_name["bench"].queues
        queues.create("r", QueueSettings())
        while journal.seq < records:
            queues.send("r", [(b"m" * 64, 0, "", "")] * 8)
            got = queues.receive("r", 8)
            queues.ack("r", [m.receipt for m in got])
            if len(journal._buffer) > 10_000:
                journal.flush()
        journal.flush()
        size = sum(os.path.getsize(os.path.join(folder, n))
                   for n in os.listdir(folder))
        started = time.perf_counter()
        _, again = _state(folder)
        seconds = time.perf_counter() - started
        return {"records": again.replayed, "bytes": size,
                "seconds": round(seconds, 2),
                "records_per_second": round(again.replayed / seconds)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m nubis.bench.journal_cost",
                                description=__doc__.split("\n")[0])
    p.add_argument("--sends", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--records", type=int, default=1_000_000)
    a = p.parse_args(argv)
    report = {"policies": policies(a.sends, a.seconds),
              "replay": replay(a.records)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
