"""SPAWN benchmarks: warm and cold cloud processes against local baselines.

    python -m nubis.bench.spawn [--rounds 300] [--throughput 2000] [--json]

Three figures, each against its baseline in the same run:

- spawn and wait of an empty function on a warm worker, through the kernel
  (zmq+ipc), against a `concurrent.futures.ProcessPoolExecutor` submit and
  result of the same function (local, no isolation at all);
- a cold start (a fresh sandboxed worker forked by the zygote: new source,
  so no warm worker can take it) against `python -c pass` as a subprocess;
- empty cloud processes per second with many in flight on one asyncio
  connection.

The kernel runs as a subprocess with SPAWN on; latencies go into
HdrHistograms and are reported as p50/p99/p99.9 in microseconds.
"""

import argparse
import asyncio
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from hdrh.histogram import HdrHistogram

TOKEN = "nubis-bench-spawn-token-0123456789"
EMPTY = "def main(args):\n    return b''\n"

KERNEL = """
import logging, sys
from nubis import config, server
logging.basicConfig(level=logging.WARNING)
server.run(config.load(sys.argv[1]))
"""


def _empty(_=None):
    return b""


def histogram() -> HdrHistogram:
    return HdrHistogram(1, 60_000_000_000, 3)


def summary(h: HdrHistogram) -> dict:
    return {"count": h.get_total_count(),
            "p50_us": h.get_value_at_percentile(50) / 1e3,
            "p99_us": h.get_value_at_percentile(99) / 1e3,
            "p999_us": h.get_value_at_percentile(99.9) / 1e3}


class Kernel:
    """A kernel subprocess with SPAWN on, in a scratch folder."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="nubis-bs-")
        self.url = f"zmq+ipc://{self.folder}/kernel.sock"
        config = os.path.join(self.folder, "nubis.toml")
        with open(config, "w") as f:
            f.write(f'[kernel]\nzmq = ["ipc://{self.folder}/kernel.sock"]\n'
                    f'grpc = ""\n[tenants.bench]\ntoken = "{TOKEN}"\n'
                    f'[tenants.bench.quotas]\nmax_processes = 100000\n')
        self.log = open(os.path.join(self.folder, "kernel.log"), "w")
        self.proc = subprocess.Popen([sys.executable, "-c", KERNEL, config],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(f"{self.folder}/kernel.sock"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the kernel did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def ready(client, timeout: float = 60.0) -> None:
    """Wait until the kernel's zygote serves SPAWN."""
    from nubis.errors import Unavailable

    deadline = time.monotonic() + timeout
    while True:
        try:
            client.spawn.warm_pool("main", EMPTY, count=2)
            return
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def warm(client, rounds: int) -> dict:
    """Spawn and wait on warm workers; returns the summary and warm share."""
    ready(client)
    time.sleep(1.0)
    h, warm_starts = histogram(), 0
    for _ in range(rounds):
        started = time.perf_counter_ns()
        reply = client.spawn.spawn("main", EMPTY)
        client.spawn.wait(reply.pid, 30)
        h.record_value(time.perf_counter_ns() - started)
        warm_starts += reply.warm
    return {**summary(h), "warm_share": warm_starts / rounds}


def pool(rounds: int) -> dict:
    h = histogram()
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as executor:
        executor.submit(_empty).result()
        for _ in range(rounds):
            started = time.perf_counter_ns()
            executor.submit(_empty).result()
            h.record_value(time.perf_counter_ns() - started)
    return summary(h)


def cold(client, rounds: int) -> dict:
    """Each spawn has new source, so it must fork a fresh worker."""
    h = histogram()
    for i in range(rounds):
        source = f"{EMPTY}# cold start {i} {time.time_ns()}\n"
        started = time.perf_counter_ns()
        reply = client.spawn.spawn("main", source)
        client.spawn.wait(reply.pid, 30)
        h.record_value(time.perf_counter_ns() - started)
    return summary(h)


def python_pass(rounds: int) -> dict:
    h = histogram()
    for _ in range(rounds):
        started = time.perf_counter_ns()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        h.record_value(time.perf_counter_ns() - started)
    return summary(h)


async def throughput(url: str, count: int, in_flight: int) -> dict:
    """Empty cloud processes per second, `in_flight` at a time."""
    from nubis.client import AsyncClient

    async with AsyncClient(url, TOKEN, timeout=120) as client:
        await client.spawn.warm_pool("main", EMPTY, count=4)
        await asyncio.sleep(1.0)
        gate = asyncio.Semaphore(in_flight)

        async def one():
            async with gate:
                reply = await client.spawn.spawn("main", EMPTY)
                await client.spawn.wait(reply.pid, 60)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.perf_counter() - started
    return {"processes": count, "in_flight": in_flight,
            "seconds": elapsed, "per_second": count / elapsed}


def run(rounds: int = 300, cold_rounds: int = 40, count: int = 2000,
        in_flight: int = 64) -> dict:
    from nubis.client import Client

    kernel = Kernel()
    try:
        with Client(kernel.url, TOKEN, timeout=60) as client:
            results = {"warm": warm(client, rounds), "pool": pool(rounds),
                       "cold": cold(client, cold_rounds),
                       "python_pass": python_pass(cold_rounds)}
        results["throughput"] = asyncio.run(throughput(kernel.url, count,
                                                       in_flight))
    finally:
        kernel.stop()
    results["ratios"] = {
        "warm_vs_pool_p50": results["warm"]["p50_us"] / results["pool"]["p50_us"],
        "cold_vs_python_p50": (results["cold"]["p50_us"]
                               / results["python_pass"]["p50_us"]),
    }
    return results


def report(r: dict) -> str:
    rows = [("warm spawn+wait (kernel)", r["warm"]),
            ("ProcessPoolExecutor submit+result", r["pool"]),
            ("cold spawn+wait (fresh sandboxed worker)", r["cold"]),
            ("python -c pass (subprocess)", r["python_pass"])]
    lines = ["| case | p50 us | p99 us | p99.9 us | n |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {s['p50_us']:.0f} | {s['p99_us']:.0f} | "
              f"{s['p999_us']:.0f} | {s['count']} |" for name, s in rows]
    t, ratios = r["throughput"], r["ratios"]
    lines += [
        "",
        f"- warm spawn+wait p50 / pool p50: {ratios['warm_vs_pool_p50']:.2f}x "
        f"(goal: below 1x); warm share {r['warm']['warm_share']:.0%}",
        f"- cold start p50 / python -c pass p50: "
        f"{ratios['cold_vs_python_p50']:.2f}x (goal: at most 0.25x)",
        f"- throughput: {t['per_second']:.0f} empty processes/s with "
        f"{t['in_flight']} in flight (goal: at least 2000/s)",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nubis.bench.spawn",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--cold-rounds", type=int, default=40)
    parser.add_argument("--throughput", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.rounds, args.cold_rounds, args.throughput, args.in_flight)
    print(json.dumps(results, indent=2) if args.json else report(results))


if __name__ == "__main__":
    main()
