"""The memory case: what a million queued 64-byte messages cost.

The kernel's figure is the growth of its resident set (VmRSS in
/proc/PID/status) while the messages are sent, measured on a fresh kernel
so that no earlier case has left free memory to fill first. Redis's is the
growth of `used_memory` in `INFO memory` for the same messages pushed onto
one list (its RSS growth is reported beside it). Both are sent in batches
of 1000, the largest the kernel takes in one call.
"""

import logging
import time

log = logging.getLogger("nubis.bench.memory")

PAYLOAD = 64
BATCH = 1000
QUEUE = "bench-memory"


def rss_bytes(pid: int) -> int:
    """The resident set of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def kernel_memory(fleet, messages: int) -> dict:
    """RSS growth of a fresh kernel holding `messages` queued messages."""
    from nubis.client import Client

    kernel = fleet.kernel("kernel-memory", grpc=False)
    body = b"m" * PAYLOAD
    try:
        with Client(kernel["urls"]["zmq+ipc"], kernel["token"],
                    timeout=120) as c:
            c.queue.create(QUEUE)
            c.queue.send(QUEUE, *[body] * BATCH)    # warm every code path
            c.queue.purge(QUEUE)
            time.sleep(0.2)
            before = rss_bytes(kernel["pid"])
            started = time.perf_counter()
            for n in _batches(messages):
                c.queue.send(QUEUE, *[body] * n)
            seconds = time.perf_counter() - started
            depth = c.queue.attributes(QUEUE).depth
            after = rss_bytes(kernel["pid"])
    finally:
        fleet.stop("kernel-memory")
    if depth != messages:
        raise RuntimeError(f"the kernel holds {depth} messages, not {messages}")
    return {"before": before, "after": after, "growth": after - before,
            "per_message": (after - before) / messages,
            "messages_per_s": messages / seconds}


def redis_memory(target: dict, messages: int) -> dict:
    """used_memory growth of Redis holding the same messages in one list."""
    import redis

    r = redis.Redis(host=target["host"], port=target["port"])
    body = b"m" * PAYLOAD
    try:
        r.delete(QUEUE)
        before = r.info("memory")
        started = time.perf_counter()
        for n in _batches(messages):
            r.lpush(QUEUE, *[body] * n)
        seconds = time.perf_counter() - started
        after = r.info("memory")
        length = r.llen(QUEUE)
        r.delete(QUEUE)
    finally:
        r.close()
    if length != messages:
        raise RuntimeError(f"Redis holds {length} messages, not {messages}")
    growth = after["used_memory"] - before["used_memory"]
    return {"before": before["used_memory"], "after": after["used_memory"],
            "growth": growth, "per_message": growth / messages,
            "rss_growth": after["used_memory_rss"] - before["used_memory_rss"],
            "messages_per_s": messages / seconds}


def measure(fleet, messages: int, redis_target: dict | None) -> dict:
    """The memory case, with Redis beside the kernel when it runs."""
    result = {"messages": messages, "payload": PAYLOAD,
              "kernel": kernel_memory(fleet, messages), "redis": None,
              "ratio": None}
    if redis_target is not None:
        result["redis"] = redis_memory(redis_target, messages)
        result["ratio"] = (result["kernel"]["growth"]
                           / max(1, result["redis"]["growth"]))
    return result


def _batches(total: int):
    while total > 0:
        yield min(BATCH, total)
        total -= BATCH
