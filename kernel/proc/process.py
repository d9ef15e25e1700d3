"""A cloud process record and what a spawn asked for (its plan).

States and the moves between them are data: MOVES lists, for each state,
the states it may go to. PENDING waits for a slot (tenant and executable
concurrency, rate); RUNNING has an attempt on a worker; BACKOFF waits out
the delay before the next attempt; SUCCEEDED, FAILED and KILLED are final.
"""

import time
from dataclasses import dataclass, field

from nubis.proc.logs import ProcessLog
from nubis.v1 import spawn_pb2 as pb

S = pb.ProcessState
PENDING, RUNNING, BACKOFF = (S.PROCESS_STATE_PENDING, S.PROCESS_STATE_RUNNING,
                             S.PROCESS_STATE_BACKOFF)
SUCCEEDED, FAILED, KILLED = (S.PROCESS_STATE_SUCCEEDED, S.PROCESS_STATE_FAILED,
                             S.PROCESS_STATE_KILLED)
FINAL = frozenset((SUCCEEDED, FAILED, KILLED))

MOVES = {
    PENDING: {RUNNING, KILLED},
    RUNNING: {BACKOFF, SUCCEEDED, FAILED, KILLED},
    BACKOFF: {PENDING, KILLED},
    SUCCEEDED: set(), FAILED: set(), KILLED: set(),
}

R = pb.RestartPolicy
NEVER, ON_FAILURE, ALWAYS = (R.RESTART_POLICY_NEVER, R.RESTART_POLICY_ON_FAILURE,
                             R.RESTART_POLICY_ALWAYS)


@dataclass
class Plan:
    """A spawn's options, checked and in kernel units (seconds)."""

    attempts: int = 1                 # -1: until success
    backoff_min: float = 0.1
    backoff_max: float = 30.0
    timeout: float | None = None
    restart: int = NEVER
    env: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)   # memory_bytes, cpu_seconds, ...
    max_concurrency: int = 0
    rate_per_second: float = 0.0


def now_ms() -> int:
    return int(time.time() * 1000)


class Process:
    def __init__(self, number: int, tenant, name: str, source: bytes, entry: str,
                 args: bytes, plan: Plan, key: str, log_bytes: int):
        self.number = number
        self.pid = f"p{number}"
        self.tenant = tenant
        self.name = name
        self.source = source
        self.entry = entry
        self.args = args
        self.plan = plan
        self.key = key
        self.state = PENDING
        self.attempts = 0
        self.failures = 0         # consecutive, for crash-loop backoff
        self.exit_code = 0
        self.result = b""
        self.error = ""
        self.traceback = ""
        self.warm = False
        self.created_ms = now_ms()
        self.started_ms = 0
        self.ended_ms = 0
        self.user = self.system = self.wall = 0.0
        self.peak = 0
        self.killed = False
        self.worker = None
        self.timer = None
        self.receipts: set = set()
        self.log = ProcessLog(log_bytes)
        self.first_start = None   # future: resolved once the first attempt starts
        self.ended = None         # asyncio.Event

    def move(self, state: int) -> None:
        if state not in MOVES[self.state]:
            raise RuntimeError(f"process {self.pid}: no move from "
                               f"{S.Name(self.state)} to {S.Name(state)}")
        self.state = state

    def info(self) -> pb.ProcessInfo:
        worker = self.worker
        return pb.ProcessInfo(
            pid=self.pid, name=self.name, state=self.state,
            attempts=self.attempts, exit_code=self.exit_code, result=self.result,
            error=self.error, traceback=self.traceback, warm=self.warm,
            created_unix_ms=self.created_ms, started_unix_ms=self.started_ms,
            ended_unix_ms=self.ended_ms, restart=self.plan.restart,
            usage=pb.ProcessUsage(cpu_user_seconds=self.user,
                                  cpu_system_seconds=self.system,
                                  peak_memory_bytes=self.peak,
                                  wall_seconds=self.wall),
            os_pid=worker.os_pid if worker is not None else 0,
            idempotency_key=self.key,
        )
