"""The goals a run is judged by, as one table of ratios and their bars.

Each goal measures one or more named ratios from the rows of a run and
holds when every one of them is on the right side of its bar. The bars are
the goals of the project's latency issue, stated once, here.
A goal whose rows were not part of the run (a flag left them out, or a
peer was missing) is reported as not measured, never as met.
"""

from dataclasses import dataclass
from typing import Callable

from nubis.bench.report import find, floor_of, nats_of, ratio, redis_of, share

HEADLINE = ("blob.get", "queue.send")
SMALL = 4096


@dataclass(frozen=True)
class Goal:
    key: str
    text: str
    bar: float
    at_most: bool                       # True: value <= bar; else value >= bar
    measure: Callable[[dict], list]     # report -> [(name, value or None)]
    unit: str = "x"


def _headline(report: dict) -> list:
    """The 64 B closed-loop zmq+ipc rows of blob.get and queue.send."""
    like = {"mode": "closed", "depth": 1, "processes": 1, "rate": 0.0,
            "payload": 64}
    return [(call, find(report["rows"], "nubis", call, like, "zmq+ipc"))
            for call in HEADLINE]


def _vs(pick, field: str = "p50_us"):
    def measure(report: dict) -> list:
        out = []
        for call, row in _headline(report):
            other = row and pick(report["rows"], row)
            out.append((call, ratio(row and row[field], other and other[field])))
        return out
    return measure


def _kernel_share(report: dict) -> list:
    return [(f"{r['call']} {r['transport']} {r['payload']} B", share(r))
            for r in _nubis(report, mode="closed")
            if r["payload"] <= SMALL and r.get("kernel")]


def _grpc(report: dict) -> list:
    return [(f"{r['call']} {r['payload']} B",
             ratio(r["p50_us"], (floor_of(report["rows"], r) or {}).get("p50_us")))
            for r in _nubis(report, mode="closed") if r["transport"] == "grpc"]


def _pipelined(report: dict) -> list:
    out = []
    for r in _nubis(report, mode="pipelined"):
        like = dict(r, mode="closed", depth=1, processes=1, rate=0.0)
        closed = find(report["rows"], "nubis", r["call"], like, r["transport"])
        out.append((f"{r['call']} {r['transport']} x{r['depth']}",
                    ratio(r["calls_per_s"], closed and closed["calls_per_s"])))
    return out


def _memory(report: dict) -> list:
    memory = report.get("memory") or {}
    return [(f"{memory.get('messages', 0):,} messages", memory.get("ratio"))]


def _nubis(report: dict, mode: str) -> list:
    return [r for r in report["rows"] if r["system"] == "nubis"
            and r["mode"] == mode and r.get("p50_us") is not None]


GOALS = (
    Goal("floor-p50", "blob.get and queue.send, 64 B over zmq+ipc, closed "
         "loop: p50 vs the bare pyzmq echo", 1.25, True, _vs(floor_of)),
    Goal("floor-p999", "the same calls: p99.9 vs the bare pyzmq echo", 2.0,
         True, _vs(floor_of, "p999_us")),
    Goal("redis-p50", "the same calls: p50 faster than Redis (GET for "
         "blob.get, LPUSH for queue.send) through redis-py", 1.0, True,
         _vs(redis_of)),
    Goal("nats-p50", "the same calls: p50 faster than NATS request/reply "
         "through nats-py", 1.0, True, _vs(nats_of)),
    Goal("kernel-share", "in-kernel service time as a share of the "
         "end-to-end p50, every call up to 4 KiB, closed loop", 0.10, True,
         _kernel_share, "%"),
    Goal("grpc-p50", "calls over gRPC, closed loop: p50 vs the bare grpcio "
         "echo", 1.3, True, _grpc),
    Goal("pipelined", "pipelined calls/s vs closed-loop calls/s, same call, "
         "transport and payload", 3.0, False, _pipelined),
    Goal("memory", "queued 64 B messages (a million by default): kernel RSS "
         "growth vs Redis used_memory growth", 2.0, True, _memory),
)


def evaluate(report: dict) -> list:
    """Each goal with its measured values and whether it is met."""
    out = []
    for goal in GOALS:
        measured = goal.measure(report)
        values = [(name, v) for name, v in measured if v is not None]
        if not values:
            status = "not measured"
        elif all(_holds(goal.at_most, goal.bar, v) for _, v in values):
            status = "met"
        else:
            status = "not met"
        out.append({"key": goal.key, "goal": goal.text, "bar": goal.bar,
                    "at_most": goal.at_most, "unit": goal.unit,
                    "status": status, "values": values,
                    "missing": [name for name, v in measured if v is None]})
    return out


def _holds(at_most: bool, bar: float, value: float) -> bool:
    return value <= bar if at_most else value >= bar


def goals_markdown(goals: list) -> str:
    lines = []
    for g in goals:
        bar = ("at most " if g["at_most"] else "at least ") + _fmt(g["bar"], g)
        missing = ("; not measured: " + ", ".join(g["missing"])
                   if g["values"] and g["missing"] else "")
        lines.append(f"- **{g['status']}**: {g['goal']} (bar: {bar})"
                     + (f": {_values(g)}{missing}" if g["values"] else "."))
    return "\n".join(lines)


def _values(goal: dict) -> str:
    """Every value, or for a long list the worst one and the count."""
    values = goal["values"]
    if len(values) <= 4:
        return ", ".join(f"{name} {_fmt(v, goal)}" for name, v in values)
    worst = (max if goal["at_most"] else min)(values, key=lambda nv: nv[1])
    missed = sum(not _holds(goal["at_most"], goal["bar"], v) for _, v in values)
    return (f"worst {worst[0]} {_fmt(worst[1], goal)}; {missed} of "
            f"{len(values)} miss the bar")


def _fmt(value: float, goal: dict) -> str:
    return f"{100 * value:.0f}%" if goal["unit"] == "%" else f"{value:.2f}x"
