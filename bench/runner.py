"""Run the suite: start the servers, run every case, write the report.

The runner is the only process that sees the whole run. It starts the
servers a plan needs (`servers.Fleet`) and a pool of client processes
(`worker`), and for each case hands the case to one worker (or several,
in processes mode), waits until all are connected and warmed up, clears
the kernel's call statistics, says go, and merges what comes back. The
servers and the workers are stopped when the run ends, however it ends.
"""

import datetime
import json
import logging
import os
import platform
import select
import subprocess
import sys

from nubis.bench import memory as memory_case
from nubis.bench.display import Display
from nubis.bench.plan import KERNEL_STAT, PEER_SYSTEMS, Options, plan
from nubis.bench.report import (
    failed_row,
    kernel_stats,
    make_row,
    new_histogram,
    write_json,
)
from nubis.bench.servers import Fleet, peer_notes

log = logging.getLogger("nubis.bench")

READY_SECONDS = 120.0
GRACE_SECONDS = 120.0


class WorkerLost(RuntimeError):
    """A worker died or hung; its state is unknown, so it is replaced."""


class Worker:
    """A client process, driven one JSON line at a time."""

    def __init__(self, folder: str, index: int):
        self.log_path = os.path.join(folder, f"worker-{index}.log")
        with open(self.log_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nubis.bench.worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                text=True, start_new_session=True)

    def send(self, message) -> None:
        line = message if isinstance(message, str) else json.dumps(message)
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise WorkerLost(f"worker {self.proc.pid} gave no answer "
                               f"within {timeout:.0f} s: {self.tail()}")
        return json.loads(line)

    def tail(self) -> str:
        with open(self.log_path) as f:
            return f.read()[-2000:].strip() or "(no output)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class Pool:
    """Workers started on first need and kept for the run."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.workers: list[Worker] = []

    def take(self, n: int) -> list[Worker]:
        while len(self.workers) < n:
            worker = Worker(self.fleet.folder, len(self.workers))
            self.workers.append(worker)
            self.fleet.callback(worker.stop)
        return self.workers[:n]

    def drop_all(self) -> None:
        for worker in self.workers:
            worker.proc.kill()
            worker.stop()
        self.workers = []


def run(options: Options, quiet: bool = False) -> dict:
    """Run a whole benchmark and write its files; returns the report."""
    notes_by_peer = peer_notes() if options.peers else {
        p: f"{p} skipped (--no-peers)" for p in PEER_SYSTEMS}
    notes = [n for n in notes_by_peer.values() if n]
    started = datetime.datetime.now(datetime.timezone.utc)
    os.makedirs(options.out, exist_ok=True)

    with Fleet() as fleet:
        peers_ok = {p: n is None for p, n in notes_by_peer.items()}
        targets, meta = start_servers(fleet, peers_ok, notes)
        cases = plan(options, peers_ok)
        steps = len(cases) + (1 if options.memory_messages else 0)
        with Display(steps, quiet) as display:
            for note in notes:
                display.note(note)
            rows = run_cases(cases, Pool(fleet), targets, display)
            memory = None
            if options.memory_messages:
                memory = run_memory(fleet, options, targets, display)

    report = {
        "suite": "nubis bench",
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "finished": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
        "machine": meta, "options": options.as_dict(),
        "warmup": options.warmup_seconds(), "notes": notes,
        "rows": rows, "memory": memory,
    }
    return finish(report, options.out)


def start_servers(fleet: Fleet, peers_ok: dict, notes: list) -> tuple:
    """Start the kernel, the floors and the peers that can run."""
    import grpc
    import zmq

    kernel = fleet.kernel()
    targets = {"nubis": kernel, "pyzmq": fleet.zmq_echo(),
               "grpcio": fleet.grpc_echo()}
    meta = machine()
    meta.update(pyzmq=zmq.__version__, libzmq=zmq.zmq_version(),
                grpcio=grpc.__version__)
    from nubis.client import Client

    with Client(kernel["urls"]["zmq+ipc"], kernel["token"]) as c:
        meta["hot_paths"] = c.account.info().hot_paths
    for peer in PEER_SYSTEMS:
        if not peers_ok[peer]:
            continue
        try:
            targets[peer] = getattr(fleet, peer)()
            meta[peer] = targets[peer]["version"]
        except Exception as e:  # noqa: BLE001 - a peer is optional
            peers_ok[peer] = False
            notes.append(f"{peer} skipped: it did not start ({e})")
    return targets, meta


def machine() -> dict:
    from nubis.version import __version__

    return {"host": platform.node(), "cpus": os.cpu_count(),
            "platform": platform.platform(terse=True),
            "python": platform.python_version(), "nubis": __version__}


def run_cases(cases: list, pool: Pool, targets: dict, display) -> list:
    rows = []
    stats = None
    if any(c.system == "nubis" for c in cases):
        from nubis.client import Client

        kernel = targets["nubis"]
        stats = Client(kernel["urls"]["zmq+ipc"], kernel["token"])
    try:
        for case in cases:
            display.step(case.label())
            try:
                row = run_case(case, pool, _target(case, targets), stats)
            except WorkerLost as e:
                pool.drop_all()
                row = failed_row(case, str(e))
            except Exception as e:  # noqa: BLE001 - one case, not the run
                log.debug("case %s failed", case.label(), exc_info=True)
                row = failed_row(case, str(e))
            rows.append(row)
            display.note(summary(case, row))
            display.advance()
    finally:
        if stats is not None:
            stats.close()
    return rows


def _target(case, targets: dict) -> dict:
    found = targets[case.system]
    if case.system == "nubis":
        return {"url": found["urls"][case.transport], "token": found["token"]}
    if case.system == "pyzmq":
        return {"endpoint": found[case.transport]}
    if case.system == "grpcio":
        return {"address": found}
    return found


def run_case(case, pool: Pool, target: dict, stats) -> dict:
    """Run one case on as many workers as it needs; returns its row."""
    workers = pool.take(case.processes if case.mode == "processes" else 1)
    job = {"case": case.as_dict(), "target": target}
    for worker in workers:
        worker.send(job)
    answers = [w.read(READY_SECONDS + case.warmup) for w in workers]
    failed = [a for a in answers if not a.get("ready")]
    if failed:
        for worker, answer in zip(workers, answers, strict=True):
            if answer.get("ready"):
                worker.send("stop")
                worker.read(GRACE_SECONDS)
        raise RuntimeError(failed[0].get("error", "a worker failed"))

    key = KERNEL_STAT.get(case.name) if case.system == "nubis" else None
    if key:
        stats.account.call_stats(reset=True)
    for worker in workers:
        worker.send("go")
    results = [w.read(case.duration + GRACE_SECONDS) for w in workers]
    kernel = kernel_stats(stats.account.call_stats(reset=True), key) if key else None
    bad = [r for r in results if not r.get("ok")]
    if bad:
        raise RuntimeError(bad[0].get("error", "a worker failed"))

    hist = new_histogram()
    for result in results:
        hist.decode_and_add(result["hist"])
    return make_row(case, hist, results, kernel)


def summary(case, row: dict) -> str:
    if row.get("error"):
        return f"{case.label()}: failed: {row['error']}"
    kernel = row.get("kernel")
    inside = f", in-kernel p50 {kernel['p50_us']:.1f}" if kernel else ""
    return (f"{case.label()}: p50 {row['p50_us']:.1f} p99.9 "
            f"{row['p999_us']:.1f} max {row['max_us']:.0f} us{inside}, "
            f"{row['calls_per_s']:,.0f} calls/s")


def run_memory(fleet: Fleet, options: Options, targets: dict, display):
    display.step(f"memory: {options.memory_messages:,} queued 64 B messages")
    try:
        result = memory_case.measure(fleet, options.memory_messages,
                                     targets.get("redis"))
        display.note(f"memory: kernel {result['kernel']['per_message']:.0f} "
                     "B a message" + (
                         f", Redis {result['redis']['per_message']:.0f} B"
                         if result["redis"] else ""))
    except Exception as e:  # noqa: BLE001 - one case, not the run
        log.debug("the memory case failed", exc_info=True)
        result = {"messages": options.memory_messages, "error": str(e)}
        display.note(f"memory: failed: {e}")
    display.advance()
    return result


def finish(report: dict, out: str) -> dict:
    """Judge the goals and write results.json, results.md and the plots."""
    from nubis.bench.goals import evaluate
    from nubis.bench.plot import plot_all
    from nubis.bench.report import markdown

    report["goals"] = evaluate(report)
    report["plots"] = [os.path.basename(p)
                       for p in plot_all(report["rows"], out)]
    write_json(os.path.join(out, "results.json"), report)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(report))
    return report
