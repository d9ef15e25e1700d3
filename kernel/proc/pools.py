"""Warm pools: the workers of each tenant and executable, kept for reuse.

Theory of operation. A worker's pool key is (tenant, SHA-256 of the
source, limits): it serves only that tenant, that module and those limits
for its whole life, so a worker never serves two tenants and tenant code
never sees another's state. `acquire` takes the newest idle worker of the
key (a warm start) or forks one and runs the module in it (a cold start).
`release` puts a worker that finished an attempt back, unless it is one-shot
(a CPU limit: RLIMIT_CPU counts a worker's whole life). Every second the
sweeper retires idle workers older than idle_seconds, except the key's warm
target, and forks workers to bring each key up to its target. Each worker
has a token minted here for its tenant, valid on the worker endpoint until
the worker exits, and a private scratch folder owned by its tenant's user
id, removed when it exits.
"""

import asyncio
import hashlib
import logging
import os
import secrets
import shutil
import socket
import time

from nubis.proc.gate import WorkerTenant
from nubis.proc.worker_handle import DEAD, IDLE, Worker

log = logging.getLogger("nubis.proc")


class AttemptFailed(Exception):
    """A worker could not be started for an attempt; carries the Outcome."""

    def __init__(self, outcome):
        super().__init__(outcome.error)
        self.outcome = outcome


class Pools:
    def __init__(self, zygote, gate, settings: dict):
        self.zygote = zygote
        self.gate = gate
        self.settings = settings     # url, proc_dir, uid_base, setuid, netns, ...
        self.workers: dict[int, Worker] = {}
        self.idle: dict[tuple, list[Worker]] = {}
        self.targets: dict[tuple, tuple] = {}   # key -> (count, tenant, source, name)
        self.uids: dict[str, int] = {}
        self.next_wid = 0
        self.booting: dict[tuple, int] = {}
        self.charge = None     # (tenant, user, system) -> None, for idle usage

    @staticmethod
    def key(tenant, source: bytes, limits: dict) -> tuple:
        digest = hashlib.sha256(source).hexdigest()
        return tenant.name, digest, tuple(sorted(limits.items()))

    def uid_of(self, tenant) -> int | None:
        if not self.settings["setuid"]:
            return None
        uid = self.uids.get(tenant.name)
        if uid is None:
            uid = self.uids[tenant.name] = (self.settings["uid_base"]
                                            + len(self.uids) + 1)
        return uid

    # -- getting and returning workers ---------------------------------------

    async def acquire(self, tenant, source: bytes, name: str, limits: dict,
                      sink=None):
        """A ready worker and whether it was warm; raises AttemptFailed.
        `sink` gets the output of a new worker's start-up."""
        key = self.key(tenant, source, limits)
        pool = self.idle.get(key)
        while pool:
            worker = pool.pop()
            if worker.state == IDLE:
                return worker, True
        worker = await self.start(key, tenant, source, name, limits, sink)
        return worker, False

    async def start(self, key, tenant, source, name, limits,
                    sink=None) -> Worker:
        worker, ends = self._fork(key, tenant, limits)
        worker.sink = sink
        await worker.connect(*ends)
        init = {"op": "init", "name": name, "url": self.settings["url"],
                "token": worker.token}
        failure = await worker.boot(init, source)
        if failure is not None:
            raise AttemptFailed(failure)
        return worker

    def release(self, worker: Worker, reuse: bool = True) -> None:
        """Take a worker back after an attempt; one whose attempt failed may
        be in any state (threads, children), so it is retired."""
        worker.proc = None
        if worker.state == DEAD:
            return
        if worker.one_shot or not reuse:
            worker.retire()
            return
        worker.state = IDLE
        worker.idle_since = time.monotonic()
        self.idle.setdefault(worker.key, []).append(worker)

    def _fork(self, key, tenant, limits) -> tuple[Worker, tuple]:
        self.next_wid += 1
        wid = self.next_wid
        worker = Worker(wid, key, tenant, limits, self.settings["max_payload"])
        worker.token = secrets.token_urlsafe(24)
        worker.view = WorkerTenant(tenant, worker, f"{tenant.name}/w{wid}")
        worker.scratch = os.path.join(self.settings["proc_dir"], "scratch",
                                      f"w{wid}")
        kernel_end, worker_end = socket.socketpair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        spec = {
            "limits": self._rlimits(limits), "scratch": worker.scratch,
            "uid": self.uid_of(tenant), "netns": self.settings["netns"],
            "env": {"HOME": worker.scratch, "TMPDIR": worker.scratch,
                    "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                    "NUBIS_URL": self.settings["url"]},
        }
        self.workers[wid] = worker
        self.gate.admit(worker.view, worker.token)
        try:
            self.zygote.fork(wid, spec, [worker_end.fileno(), out_w, err_w])
        except Exception:
            self.workers.pop(wid)
            self.gate.expel(worker.view, worker.token)
            for fd in (kernel_end.detach(), out_r, err_r):
                os.close(fd)
            raise
        finally:
            worker_end.close()
            os.close(out_w)
            os.close(err_w)
        return worker, (kernel_end, out_r, err_r)

    def _rlimits(self, limits: dict) -> dict:
        s = self.settings
        nproc = limits.get("max_processes") or (
            s["max_processes"] if s["setuid"] else 0)
        return {"memory_bytes": limits.get("memory_bytes", 0),
                "cpu_seconds": limits.get("cpu_seconds", 0),
                "max_processes": nproc, "open_files": s["open_files"],
                "file_bytes": s["file_bytes"]}

    # -- zygote reports --------------------------------------------------------

    def on_zygote(self, message: dict) -> None:
        op = message.get("op")
        if op == "lost":
            for worker in list(self.workers.values()):
                worker.on_fork_failed("the zygote exited")
                self._forget(worker)
            return
        worker = self.workers.get(message.get("wid"))
        if worker is None:
            return
        if op == "forked":
            worker.on_forked(message["pid"])
        elif op == "fork_failed":
            worker.on_fork_failed(message.get("error", ""))
            self._forget(worker)
        elif op == "exit":
            worker.on_exit(message["status"], message["utime"], message["stime"],
                           message["maxrss"])
            self._forget(worker)

    def _forget(self, worker: Worker) -> None:
        self.workers.pop(worker.wid, None)
        self.gate.expel(worker.view, worker.token)
        pool = self.idle.get(worker.key)
        if pool and worker in pool:
            pool.remove(worker)
        if worker.proc is None and self.charge is not None:
            user, system, _ = worker.take_usage()
            self.charge(worker.tenant, user, system)
        asyncio.get_running_loop().run_in_executor(
            None, shutil.rmtree, worker.scratch, True)

    # -- warm targets and the sweeper -----------------------------------------

    def set_target(self, tenant, source: bytes, name: str, limits: dict,
                   count: int) -> None:
        key = self.key(tenant, source, limits)
        if count:
            self.targets[key] = (count, tenant, source, name, limits)
        else:
            self.targets.pop(key, None)
        self._top_up(key)

    def _top_up(self, key) -> None:
        target = self.targets.get(key)
        if target is None:
            return
        count, tenant, source, name, limits = target
        have = len(self.idle.get(key, ())) + self.booting.get(key, 0)
        for _ in range(count - have):
            self.booting[key] = self.booting.get(key, 0) + 1
            asyncio.get_running_loop().create_task(
                self._warm_one(key, tenant, source, name, limits))

    async def _warm_one(self, key, tenant, source, name, limits) -> None:
        try:
            worker = await self.start(key, tenant, source, name, limits)
        except AttemptFailed as e:
            log.info("warm worker for %s of %s failed to start: %s", name,
                     tenant.name, e)
            return
        except Exception:
            log.exception("warm worker for %s of %s", name, tenant.name)
            return
        finally:
            self.booting[key] -= 1
        self.release(worker)

    def sweep(self, idle_seconds: float) -> None:
        now = time.monotonic()
        for key, pool in list(self.idle.items()):
            keep = self.targets.get(key, (0,))[0]
            old = [w for w in pool[:max(0, len(pool) - keep)]
                   if now - w.idle_since > idle_seconds]
            for worker in old:
                pool.remove(worker)
                worker.retire()
            if not pool:
                del self.idle[key]
        for key in list(self.targets):
            self._top_up(key)

    def forget_tenant(self, name: str) -> None:
        """Drop the warm targets of a tenant (its workers retire when idle)."""
        for key in [k for k in self.targets if k[0] == name]:
            del self.targets[key]

    def kill_all(self) -> None:
        for worker in list(self.workers.values()):
            worker.kill(9)
