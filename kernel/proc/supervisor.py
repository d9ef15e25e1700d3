"""The supervisor: cloud processes, their attempts, retries and limits.

Theory of operation. Everything here runs on the kernel's event loop.
- A spawn makes a PENDING process and queues it on its tenant's pending
  queue; `_dispatch` starts queued processes in order while the tenant is
  under its concurrency cap and the executable (tenant, name) under its own
  cap and rate (push-queue dispatch: the kernel pushes work to workers).
- An attempt takes a worker from the warm pools (or forks one), runs the
  entry function and ends in an Outcome. A failure of any kind (exception,
  exit, signal, timeout, broken channel) counts one attempt; the process
  then goes to BACKOFF for min(backoff_max, backoff_min * 2**(failures-1))
  and is queued again, until its attempts run out: then it is FAILED with
  the last error, listable like a dead-letter queue (ListProcesses, state
  FAILED). Daemons (restart ON_FAILURE or ALWAYS) restart without end
  unless attempts is set; their failure count, and so their backoff, resets
  after a run of CRASH_LOOP_RESET seconds (crash-loop backoff).
- Kill stops retries at once; a running attempt's worker gets the signal,
  and the process ends KILLED when the attempt ends (SUCCEEDED if it won).
- Queue leases taken by an attempt are released the moment it fails.
- Usage: CPU seconds the kernel measured on the worker, per attempt, are
  added to the process and to its tenant; peak memory is the worker's.
- Ended processes are kept, newest `history` per tenant, for wait and list.
"""

import asyncio
import logging
import signal
import time
from collections import deque

from nubis.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NubisError,
    ResourceExhausted,
)
from nubis.proc.pools import AttemptFailed
from nubis.proc.process import (
    ALWAYS,
    BACKOFF,
    FAILED,
    FINAL,
    KILLED,
    NEVER,
    PENDING,
    RUNNING,
    SUCCEEDED,
    Process,
    now_ms,
)
from nubis.proc.worker_handle import Outcome
from nubis.tenants import TokenBucket
from nubis.v1 import spawn_pb2

log = logging.getLogger("nubis.proc")

CRASH_LOOP_RESET = 10.0


class _Executable:
    """Per tenant and executable name: running count, cap and rate."""

    __slots__ = ("running", "max_concurrency", "bucket")

    def __init__(self):
        self.running = 0
        self.max_concurrency = 0
        self.bucket = None


class Supervisor:
    def __init__(self, kernel, pools, settings: dict):
        self.kernel = kernel
        self.pools = pools
        self.settings = settings    # concurrency, history, log_bytes
        self.by_tenant: dict[str, dict[str, Process]] = {}
        self.by_key: dict[tuple, Process] = {}
        self.pending: dict[str, deque] = {}
        self.running: dict[str, int] = {}
        self.live: dict[str, int] = {}
        self.exes: dict[tuple, _Executable] = {}
        self.counter = 0
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}
        pools.charge = self._charge

    # -- calls -----------------------------------------------------------------

    def spawn(self, tenant, name, source, entry, args, plan, key):
        """A new PENDING process (or the one `key` names) and if it existed."""
        if key and (tenant.name, key) in self.by_key:
            return self.by_key[tenant.name, key], True
        live = self.live.get(tenant.name, 0)
        if live >= tenant.quotas.max_processes:
            raise ResourceExhausted(
                f"tenant {tenant.name!r} has {live} live processes, the "
                f"limit of max_processes {tenant.quotas.max_processes}")
        self.counter += 1
        proc = Process(self.counter, tenant, name, source, entry, args, plan, key,
                       self.settings["log_bytes"])
        loop = asyncio.get_running_loop()
        proc.first_start = loop.create_future()
        proc.ended = asyncio.Event()
        self.by_tenant.setdefault(tenant.name, {})[proc.pid] = proc
        if key:
            self.by_key[tenant.name, key] = proc
        self.live[tenant.name] = live + 1
        tenant.usage.processes += 1
        exe = self.exes.setdefault((tenant.name, name), _Executable())
        exe.max_concurrency = plan.max_concurrency
        rate = plan.rate_per_second
        if not rate:
            exe.bucket = None
        elif exe.bucket is None or exe.bucket.rate != rate:
            exe.bucket = TokenBucket(rate, max(1.0, rate))
        log.debug("%s: spawned %s (%s)", tenant.name, proc.pid, name)
        self._enqueue(proc)
        if proc.state == PENDING and not proc.first_start.done():
            proc.first_start.set_result(False)    # queued behind a limit
        return proc, False

    def get(self, tenant, pid: str) -> Process:
        proc = self.by_tenant.get(tenant.name, {}).get(pid)
        if proc is None:
            raise NotFound(f"process {pid!r} not found")
        return proc

    async def wait(self, proc: Process, timeout: float) -> bool:
        try:
            await asyncio.wait_for(proc.ended.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return proc.ended.is_set()

    def kill(self, proc: Process, sig: int) -> None:
        if proc.state in FINAL:
            raise FailedPrecondition(f"process {proc.pid} has already ended "
                                     f"({_state_name(proc.state)})")
        proc.killed = True
        if proc.state == RUNNING:
            if proc.worker is not None:
                proc.worker.kill(sig)
            return
        if proc.timer is not None:
            proc.timer.cancel()
        queue = self.pending.get(proc.tenant.name)
        if queue is not None and proc in queue:
            queue.remove(proc)
        proc.error = proc.error or f"killed before it ran (signal {sig})"
        self._end(proc, KILLED)

    def list(self, tenant, state: int, page_size: int, token: str):
        procs = self.by_tenant.get(tenant.name, {})
        if token:
            try:
                before = int(token)
            except ValueError:
                raise InvalidArgument(f"bad page_token {token!r}") from None
        else:
            before = None
        size = page_size or 100
        out = []
        for proc in reversed(procs.values()):
            if before is not None and proc.number >= before:
                continue
            if state and proc.state != state:
                continue
            out.append(proc)
            if len(out) > size:
                break
        more = len(out) > size
        out = out[:size]
        return out, (str(out[-1].number) if more else "")

    # -- dispatch ----------------------------------------------------------------

    def _enqueue(self, proc: Process) -> None:
        self.pending.setdefault(proc.tenant.name, deque()).append(proc)
        self._dispatch(proc.tenant.name)

    def _dispatch(self, tenant_name: str) -> None:
        queue = self.pending.get(tenant_name)
        if not queue:
            return
        cap = self.settings["concurrency"]
        held = deque()
        wait_rate = 0.0
        while queue and self.running.get(tenant_name, 0) < cap:
            proc = queue.popleft()
            exe = self.exes[tenant_name, proc.name]
            if exe.max_concurrency and exe.running >= exe.max_concurrency:
                held.append(proc)
                continue
            if exe.bucket is not None and not exe.bucket.take():
                held.append(proc)
                wait_rate = max(wait_rate, 1.0 / exe.bucket.rate)
                continue
            self._start(proc, exe)
        queue.extendleft(reversed(held))
        if wait_rate and tenant_name not in self._retry_timers:
            self._retry_timers[tenant_name] = asyncio.get_running_loop().call_later(
                wait_rate, self._retry_dispatch, tenant_name)

    def _retry_dispatch(self, tenant_name: str) -> None:
        self._retry_timers.pop(tenant_name, None)
        self._dispatch(tenant_name)

    def _start(self, proc: Process, exe: _Executable) -> None:
        proc.move(RUNNING)
        proc.attempts += 1
        proc.started_ms = now_ms()
        exe.running += 1
        self.running[proc.tenant.name] = self.running.get(proc.tenant.name, 0) + 1
        asyncio.get_running_loop().create_task(self._attempt(proc, exe))

    # -- one attempt ---------------------------------------------------------------

    async def _attempt(self, proc: Process, exe: _Executable) -> None:
        started = time.monotonic()
        plan = proc.plan
        try:
            outcome = await self._run(proc)
        except Exception as e:
            log.exception("process %s of %s: attempt failed in the kernel",
                          proc.pid, proc.tenant.name)
            outcome = Outcome(False, error=f"kernel error: {e}", exit_code=-1)
        if not proc.first_start.done():
            proc.first_start.set_result(False)
        elapsed = time.monotonic() - started
        proc.wall += elapsed
        exe.running -= 1
        self.running[proc.tenant.name] -= 1
        proc.worker = None
        self._settle(proc, outcome, elapsed, plan)
        self._dispatch(proc.tenant.name)

    async def _run(self, proc: Process) -> Outcome:
        plan = proc.plan
        sink = proc.log.append
        try:
            worker, warm = await self.pools.acquire(
                proc.tenant, proc.source, proc.name, plan.limits, sink)
        except AttemptFailed as e:
            return e.outcome
        except NubisError as e:
            return Outcome(False, error=e.message, exit_code=-1)
        if warm:
            user, system, _ = worker.take_usage()     # idle time: the tenant's
            self._charge(proc.tenant, user, system)
        if proc.attempts == 1:
            proc.warm = warm
        if not proc.first_start.done():
            proc.first_start.set_result(warm)
        worker.proc, worker.sink, proc.worker = proc, sink, worker
        if proc.killed:
            worker.kill(signal.SIGKILL)
        outcome = await worker.run(proc.entry, proc.args, plan.env, plan.timeout)
        user, system, peak = worker.take_usage()
        proc.user += user
        proc.system += system
        proc.peak = max(proc.peak, peak)
        self._charge(proc.tenant, user, system)
        self.pools.release(worker, reuse=outcome.ok)
        return outcome

    def _charge(self, tenant, user: float, system: float) -> None:
        tenant.usage.cpu_user_seconds += user
        tenant.usage.cpu_system_seconds += system

    def _settle(self, proc: Process, outcome: Outcome, elapsed: float,
                plan) -> None:
        proc.exit_code = outcome.exit_code
        if outcome.ok:
            proc.result, proc.failures = outcome.result, 0
            proc.receipts.clear()
        else:
            proc.error, proc.traceback = outcome.error, outcome.traceback
            self._release_leases(proc)
            proc.failures = 1 if elapsed >= CRASH_LOOP_RESET else proc.failures + 1
            log.info("process %s of %s: attempt %d failed: %s", proc.pid,
                     proc.tenant.name, proc.attempts, outcome.error)
        if proc.killed:
            return self._end(proc, SUCCEEDED if outcome.ok else KILLED)
        if outcome.ok and plan.restart != ALWAYS:
            return self._end(proc, SUCCEEDED)
        if not outcome.ok and not self._may_retry(proc):
            return self._end(proc, FAILED)
        delay = plan.backoff_min if outcome.ok else min(
            plan.backoff_max, plan.backoff_min * 2 ** (proc.failures - 1))
        proc.move(BACKOFF)
        proc.timer = asyncio.get_running_loop().call_later(
            delay, self._after_backoff, proc)

    def _may_retry(self, proc: Process) -> bool:
        attempts = proc.plan.attempts
        if proc.plan.restart != NEVER and attempts == 0:
            return True
        return attempts < 0 or proc.attempts < attempts

    def _after_backoff(self, proc: Process) -> None:
        proc.timer = None
        if proc.state != BACKOFF:
            return
        proc.move(PENDING)
        self._enqueue(proc)

    def _release_leases(self, proc: Process) -> None:
        if not proc.receipts:
            return
        from nubis.handlers.queue import wake

        pairs = list(proc.receipts)
        proc.receipts.clear()
        proc.tenant.queues.release_receipts(pairs)
        for queue in {q for q, _ in pairs}:
            wake(self.kernel, proc.tenant, queue, len(pairs))

    def _end(self, proc: Process, state: int) -> None:
        proc.move(state)
        proc.ended_ms = now_ms()
        proc.log.close()
        proc.ended.set()
        name = proc.tenant.name
        self.live[name] -= 1
        log.debug("%s: process %s ended %s", name, proc.pid, _state_name(state))
        self._trim(name)

    def _trim(self, name: str) -> None:
        procs = self.by_tenant.get(name, {})
        extra = len(procs) - self.live.get(name, 0) - self.settings["history"]
        for pid in list(procs):
            if extra <= 0:
                break
            proc = procs[pid]
            if proc.state in FINAL:
                del procs[pid]
                if proc.key:
                    self.by_key.pop((name, proc.key), None)
                extra -= 1

    def end_tenant(self, name: str) -> None:
        """Kill every live process of a tenant that is being deleted."""
        for proc in list(self.by_tenant.get(name, {}).values()):
            if proc.state not in FINAL:
                self.kill(proc, signal.SIGKILL)
        log.info("tenant %s deleted: its processes were killed", name)

    def kill_all(self) -> None:
        for procs in self.by_tenant.values():
            for proc in procs.values():
                if proc.timer is not None:
                    proc.timer.cancel()


def _state_name(state: int) -> str:
    return spawn_pb2.ProcessState.Name(state).removeprefix("PROCESS_STATE_")
