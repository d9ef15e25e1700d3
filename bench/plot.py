"""Percentile curves: one PNG per call, payload and mode.

The x axis is the percentile on a log scale of 1/(1 - p), from p50 to
p99.99, where the tail gets room; the y axis is microseconds, on a log
scale when the lines span more than a decade. Each plot holds the call on
every transport, the floors, and the peer ops it is compared with.
"""

import logging
import os

from nubis.bench.plan import NATS_PEER, REDIS_PEER, format_size

log = logging.getLogger("nubis.bench.plot")

TICKS = (50, 90, 99, 99.9, 99.99)
JETSTREAM = {"queue.send": "js.publish", "queue.receive": "js.fetch",
             "queue.ack": "js.ack"}


def plot_all(rows: list, folder: str) -> list[str]:
    """Write the PNGs; returns their paths ([] without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        log.warning("plots skipped: matplotlib is missing; install it with "
                    "pip install matplotlib (or 'nubis[bench]')")
        return []
    matplotlib.use("Agg")

    groups = {}
    for row in rows:
        if row["system"] == "nubis" and row["curve"]:
            groups.setdefault((row["call"], row["payload"], row["label"]),
                              []).append(row)
    paths = []
    for (call, payload, label), calls in sorted(groups.items()):
        lines = calls + _companions(rows, calls[0])
        name = f"{call}-{payload}B-{label.replace(' ', '').replace('/', '')}"
        path = os.path.join(folder, f"{name}.png")
        _plot(path, f"{call}, {format_size(payload)}, {label}", lines)
        paths.append(path)
    return paths


def _companions(rows: list, like: dict) -> list:
    """The floors and peer rows measured in the same conditions as `like`."""
    wanted = {("pyzmq", "echo"), ("grpcio", "echo"), ("nats", NATS_PEER)}
    if like["call"] in REDIS_PEER:
        wanted.add(("redis", REDIS_PEER[like["call"]]))
    if like["call"] in JETSTREAM:
        wanted.add(("nats", JETSTREAM[like["call"]]))
    keys = ("mode", "depth", "processes", "rate", "payload")
    return [r for r in rows if (r["system"], r["call"]) in wanted and r["curve"]
            and all(r[k] == like[k] for k in keys)]


def _plot(path: str, title: str, rows: list) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for row in rows:
        xs = [1 / (1 - p / 100) for p, _ in row["curve"]]
        ys = [us for _, us in row["curve"]]
        name = (f"nubis {row['transport']}" if row["system"] == "nubis"
                else f"{row['system']} {row['call']} ({row['transport']})")
        style = {"call": "-", "floor": "--"}.get(row["kind"], ":")
        ax.plot(xs, ys, style, label=name, linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xticks([1 / (1 - p / 100) for p in TICKS])
    ax.set_xticklabels([f"p{p:g}" for p in TICKS])
    ax.minorticks_off()
    values = [us for row in rows for _, us in row["curve"] if us > 0]
    if values and max(values) > 10 * min(values):
        ax.set_yscale("log")
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (us)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
