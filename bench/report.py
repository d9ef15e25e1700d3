"""Rows of results, the ratios between them, and the JSON and Markdown.

A row is a plain dict (so the JSON file is the rows themselves): the case,
the merged HdrHistogram's percentiles in microseconds, calls per second
over the timed wall clock, and for kernel calls the kernel's own service
time for the same calls (request read to reply handed to the transport,
from GetCallStats). Ratios divide a kernel call by the floor of its
transport or by its peer op, with the same payload and the same mode,
depth, processes and rate.
"""

import json

from hdrh.histogram import HdrHistogram

from nubis.bench.loops import FIGURES, HIGHEST_NS, LOWEST_NS
from nubis.bench.plan import (
    CALLS,
    FLOOR_OF,
    MODES,
    NATS_PEER,
    REDIS_PEER,
    TRANSPORTS,
    format_size,
    mode_label,
)

PERCENTILES = (("p50_us", 50.0), ("p90_us", 90.0), ("p99_us", 99.0),
               ("p999_us", 99.9))
CURVE_POINTS = 48
COMPARE = ("mode", "depth", "processes", "rate", "payload")


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_NS, HIGHEST_NS, FIGURES)


def make_row(case, hist: HdrHistogram, results: list, kernel) -> dict:
    """The row of a case from its merged histogram and worker results."""
    row = _case_fields(case)
    count = sum(r["count"] for r in results)
    row.update(
        count=count,
        errors=sum(r["errors"] for r in results),
        first_error=next((r["first_error"] for r in results
                          if r["first_error"]), ""),
        calls_per_s=calls_per_s(results),
        max_us=hist.get_max_value() / 1e3,
        mean_us=hist.get_mean_value() / 1e3,
        curve=curve(hist),
        hist=hist.encode().decode("ascii"),
        kernel=kernel,
        error=None,
    )
    for field, p in PERCENTILES:
        row[field] = hist.get_value_at_percentile(p) / 1e3
    return row


def calls_per_s(results: list) -> float:
    """Completed calls per second of the timed wall clock.

    A closed loop's untimed refills (`prep`) are taken off its wall time,
    as they hold no call in flight; each process adds its own rate.
    """
    rate = 0.0
    for r in results:
        busy = r["wall_s"] - r.get("prep_s", 0.0)
        rate += r["count"] / busy if busy > 0 else 0.0
    return rate


def failed_row(case, error: str) -> dict:
    row = _case_fields(case)
    row.update(count=0, errors=0, error=error, kernel=None, curve=[])
    return row


def _case_fields(case) -> dict:
    return {"system": case.system, "call": case.name, "kind": case.op.kind,
            "transport": case.transport, "payload": case.payload,
            "mode": case.mode, "depth": case.depth,
            "processes": case.processes, "rate": case.rate,
            "duration": case.duration, "label": mode_label(case)}


def curve(hist: HdrHistogram) -> list:
    """[percentile, us] pairs from p50 to p99.99, even on a log(1/(1-p)) axis."""
    points = []
    for i in range(CURVE_POINTS):
        x = 2 * (5000 ** (i / (CURVE_POINTS - 1)))
        p = 100.0 * (1.0 - 1.0 / x)
        points.append([round(p, 4), hist.get_value_at_percentile(p) / 1e3])
    return points


def kernel_stats(stats: list, key: str) -> dict | None:
    """The in-kernel histogram of one call from a GetCallStats reply."""
    for s in stats:
        if s.call == key:
            return {"count": s.count, "p50_us": s.p50_us, "p90_us": s.p90_us,
                    "p99_us": s.p99_us, "p999_us": s.p999_us,
                    "max_us": s.max_us}
    return None


# -- matching -------------------------------------------------------------------

def find(rows: list, system: str, call: str, like: dict,
         transport: str | None = None) -> dict | None:
    """The measured row of an op in the same conditions as `like`."""
    for row in rows:
        if (row["system"] == system and row["call"] == call
                and row.get("p50_us") is not None
                and (transport is None or row["transport"] == transport)
                and all(row[k] == like[k] for k in COMPARE)):
            return row
    return None


def floor_of(rows: list, row: dict) -> dict | None:
    system = FLOOR_OF.get(row["transport"])
    return system and find(rows, system, "echo", row, row["transport"])


def redis_of(rows: list, row: dict) -> dict | None:
    op = REDIS_PEER.get(row["call"])
    return op and find(rows, "redis", op, row)


def nats_of(rows: list, row: dict) -> dict | None:
    return find(rows, "nats", NATS_PEER, row)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return a / b


def share(row: dict) -> float | None:
    """In-kernel p50 as a fraction of the end-to-end p50."""
    kernel = row.get("kernel")
    return ratio(kernel and kernel["p50_us"], row.get("p50_us"))


# -- output ---------------------------------------------------------------------

def write_json(path: str, report: dict) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)
        f.write("\n")


KINDS = ("floor", "call", "peer")
HEAD = ("system", "call", "transport", "payload", "mode", "p50", "p90", "p99",
        "p99.9", "max", "calls/s", "in-kernel p50", "share", "x floor p50",
        "x floor p99.9", "x Redis", "x NATS")


def sort_rows(rows: list) -> list:
    """Mode, payload, then floors, kernel calls (in table order), peers."""
    calls = {name: i for i, name in enumerate(CALLS)}
    transports = {name: i for i, name in enumerate(TRANSPORTS)}
    return sorted(rows, key=lambda r: (
        MODES.index(r["mode"]), r["payload"], KINDS.index(r["kind"]),
        r["system"], calls.get(r["call"], 0), r["call"],
        transports.get(r["transport"], 0)))


def table(rows: list) -> str:
    """The Markdown table: one line per call, transport, payload and mode."""
    lines = ["| " + " | ".join(HEAD) + " |",
             "|" + "|".join("---" if i < 5 else "---:"
                            for i in range(len(HEAD))) + "|"]
    for row in sort_rows(rows):
        lines.append("| " + " | ".join(_cells(rows, row)) + " |")
    return "\n".join(lines)


def _cells(rows: list, row: dict) -> list:
    head = [row["system"], row["call"], row["transport"],
            format_size(row["payload"]), row["label"]]
    if row.get("error"):
        return head + [f"failed: {row['error']}"] + [""] * (len(HEAD) - 6)
    kernel = row.get("kernel")
    floor = floor_of(rows, row) if row["system"] == "nubis" else None
    redis = redis_of(rows, row) if row["system"] == "nubis" else None
    nats = nats_of(rows, row) if row["system"] == "nubis" else None
    return head + [
        *(_us(row[f]) for f, _ in PERCENTILES), _us(row["max_us"]),
        f"{row['calls_per_s']:,.0f}",
        _us(kernel["p50_us"]) if kernel else "",
        _pct(share(row)),
        _x(ratio(row["p50_us"], floor and floor["p50_us"])),
        _x(ratio(row["p999_us"], floor and floor["p999_us"])),
        _x(ratio(row["p50_us"], redis and redis["p50_us"])),
        _x(ratio(row["p50_us"], nats and nats["p50_us"])),
    ]


def _us(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def markdown(report: dict) -> str:
    """The whole Markdown report: context, notes, table, memory, goals."""
    from nubis.bench.goals import goals_markdown

    meta, options = report["machine"], report["options"]
    parts = [
        "# Nubis latency benchmark",
        "",
        f"{report['started']} on {meta['host']}: {meta['cpus']} CPUs, "
        f"{meta['platform']}, Python {meta['python']}, nubis "
        f"{meta['nubis']} (hot paths: {meta.get('hot_paths', '?')}), pyzmq "
        f"{meta['pyzmq']} (libzmq {meta['libzmq']}), grpcio {meta['grpcio']}"
        + "".join(f", {k} {meta[k]}" for k in ("redis", "nats") if meta.get(k))
        + ".",
        "",
        f"Each case ran {options['duration']:g} s after "
        f"{report['warmup']:g} s of warm-up. Latencies are microseconds from "
        "an HdrHistogram of every call, measured by the client; calls/s is "
        "completed calls over the timed wall clock (in a closed loop, less "
        "the untimed refills of queues). In-kernel p50 is the "
        "kernel's own service time for the same calls (from the request read "
        "to the reply handed to the transport), and share is its fraction "
        "of the end-to-end p50. x floor "
        "divides by the bare echo of the same transport, payload and mode "
        "(pyzmq for zmq, grpcio for grpc); x Redis and x NATS divide the "
        "p50 by the peer's comparable op (GET for blob get and head, SET for "
        "put, LPUSH for queue send, RPOP for receive; NATS request/reply for "
        "all).",
    ]
    if report["notes"]:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    parts += ["", "## Latency", "", table(report["rows"])]
    if report.get("memory"):
        parts += ["", "## Memory", "", memory_markdown(report["memory"])]
    parts += ["", "## Goals", "", goals_markdown(report["goals"]), ""]
    return "\n".join(parts)


def memory_markdown(memory: dict) -> str:
    if memory.get("error"):
        return f"The memory case failed: {memory['error']}"
    k, r = memory["kernel"], memory.get("redis")
    lines = [f"{memory['messages']:,} queued messages of {memory['payload']} B:",
             "",
             f"- kernel RSS growth: {k['growth'] / 2**20:,.1f} MiB, "
             f"{k['per_message']:.0f} B a message (sent at "
             f"{k['messages_per_s']:,.0f} messages/s in batches of 1000)"]
    if r:
        lines.append(f"- Redis used_memory growth: {r['growth'] / 2**20:,.1f} "
                     f"MiB, {r['per_message']:.0f} B a message (RSS growth "
                     f"{r['rss_growth'] / 2**20:,.1f} MiB)")
        lines.append(f"- kernel / Redis: {memory['ratio']:.2f}x")
    return "\n".join(lines)
