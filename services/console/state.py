"""What the console shows: one snapshot of the kernel, gathered by cloud calls.

Each snapshot is a plain dict (the JSON of /api/state). The round trip of
every call the console makes is timed; the last ROUND_TRIPS of them give the
percentiles, and one point per snapshot (p50, p99) feeds the chart.
"""

import time
from collections import deque

from nubis.errors import NubisError, PermissionDenied
from nubis.v1 import spawn_pb2 as spb

ROUND_TRIPS = 500
POINTS = 60
ROWS = 50


def _percentile(values: list, q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Gatherer:
    """Take snapshots through one async client, timing each call."""

    def __init__(self, client):
        self.client = client
        self.trips: deque = deque(maxlen=ROUND_TRIPS)
        self.points: deque = deque(maxlen=POINTS)

    async def _timed(self, call, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            self.trips.append((time.perf_counter() - t0) * 1e6)

    async def snapshot(self) -> dict:
        c = self.client
        info = await self._timed(c.account.info)
        out = {"kernel": {"version": info.version, "uptime": info.uptime_seconds,
                          "endpoints": list(info.endpoints), "tenant": info.tenant,
                          "hot_paths": info.hot_paths}}
        out["tenants"] = await self._tenants(info.tenant)
        out["usage"] = await self._usage()
        out["queues"] = await self._queues()
        out["blobs"] = await self._blobs()
        out["processes"] = await self._processes()
        out["listeners"] = await self._listeners()
        out["calls"] = await self._calls()
        out["latency"] = self._latency()
        return out

    async def _tenants(self, me: str) -> list:
        try:
            tenants = await self._timed(self.client.admin.list_tenants)
        except PermissionDenied:
            return [{"name": me, "admin": False, "ports": []}]
        return [{"name": t.name, "admin": t.admin, "ports": list(t.ports)}
                for t in tenants]

    async def _usage(self) -> list:
        try:
            rows = await self._timed(self.client.account.usage, "*")
        except PermissionDenied:
            rows = await self._timed(self.client.account.usage)
        return [{"tenant": u.tenant, "calls": sum(c.count for c in u.calls),
                 "errors": sum(c.errors for c in u.calls),
                 "bytes_in": u.bytes_in, "bytes_out": u.bytes_out,
                 "bytes_stored": u.bytes_stored, "queues": u.queues,
                 "blobs": u.blobs, "messages_sent": u.messages_sent,
                 "cpu_seconds": round(u.cpu_user_seconds + u.cpu_system_seconds, 3),
                 "processes": u.processes, "connections": u.connections}
                for u in rows]

    async def _queues(self) -> list:
        page = await self._timed(self.client.queue.list, page_size=ROWS)
        out = []
        for name in page.names:
            try:
                a = await self._timed(self.client.queue.attributes, name)
            except NubisError:
                continue    # deleted in between
            out.append({"name": name, "depth": a.depth, "in_flight": a.in_flight,
                        "delayed": a.delayed, "oldest_age_ms": a.oldest_age_ms,
                        "bytes": a.bytes})
        return out

    async def _blobs(self) -> list:
        page = await self._timed(self.client.blob.list, page_size=ROWS)
        return [{"key": b.key, "size": b.size, "content_type": b.content_type,
                 "etag": b.etag[:12]} for b in page.blobs]

    async def _processes(self) -> list:
        page = await self._timed(self.client.spawn.list, page_size=ROWS)
        return [{"pid": p.pid, "name": p.name,
                 "state": spb.ProcessState.Name(p.state).removeprefix(
                     "PROCESS_STATE_"),
                 "attempts": p.attempts, "os_pid": p.os_pid,
                 "cpu_seconds": round(p.usage.cpu_user_seconds
                                      + p.usage.cpu_system_seconds, 3),
                 "error": p.error} for p in page.processes]

    async def _listeners(self) -> list:
        rows = await self._timed(self.client.listen.list)
        return [{"port": li.port, "host": li.host, "connections": li.connections,
                 "backlog": li.backlog, "accepted": li.accepted,
                 "refused": li.refused, "timed_out": li.timed_out,
                 "attached": [{"pid": a.pid, "connections": a.connections,
                               "given": a.given} for a in li.attached]}
                for li in rows]

    async def _calls(self) -> list:
        rows = await self._timed(self.client.account.call_stats)
        return [{"call": s.call, "count": s.count, "p50_us": round(s.p50_us, 1),
                 "p99_us": round(s.p99_us, 1), "p999_us": round(s.p999_us, 1),
                 "max_us": round(s.max_us, 1)} for s in rows if s.count]

    def _latency(self) -> dict:
        trips = list(self.trips)
        p50, p99 = _percentile(trips, 0.5), _percentile(trips, 0.99)
        self.points.append({"t": round(time.time(), 1), "p50_us": round(p50, 1),
                            "p99_us": round(p99, 1)})
        return {"calls": len(trips), "p50_us": round(p50, 1),
                "p90_us": round(_percentile(trips, 0.9), 1), "p99_us": round(p99, 1),
                "max_us": round(max(trips, default=0.0), 1),
                "points": list(self.points)}
