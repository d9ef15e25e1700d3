"""Submit MapReduce jobs, read their progress and counters, clean up after them.

Everything here is a client of the kernel: `submit` writes the job's spec,
fills its task queues and spawns its worker processes, then returns; the job
runs without it (see nubis.services.mapreduce.runtime). `status` rebuilds a
job's state from its blobs and its workers' process records, so any client,
the `nubis mapreduce status` command included, can watch a job run.
"""

import ast
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from nubis.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from nubis.services.mapreduce.runtime import PREFIX, job_key
from nubis.v1 import spawn_pb2

log = logging.getLogger("nubis.mapreduce")

RUNTIME_SOURCE = (Path(__file__).parent / "runtime.py").read_text()
JOB_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
MAX_REDUCERS = 1000
ENDED = (spawn_pb2.PROCESS_STATE_SUCCEEDED, spawn_pb2.PROCESS_STATE_FAILED,
         spawn_pb2.PROCESS_STATE_KILLED)


class JobFailed(Exception):
    """A job ended without its output; `status` says why."""

    def __init__(self, status: "JobStatus"):
        super().__init__(f"job {status.job} failed: {status.error}")
        self.status = status


@dataclass
class JobStatus:
    """A job's progress: tasks committed, counters, workers, its state."""

    job: str
    state: str                  # running, succeeded or failed
    maps_done: int
    maps: int
    reduces_done: int
    reduces: int
    workers_running: int
    workers: int
    output: str
    error: str = ""
    task_errors: int = 0
    elapsed: float = 0.0
    counters: dict = field(default_factory=dict)


def _defined_names(source: str) -> set:
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise InvalidArgument(f"job source does not compile: {e}") from None
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _check(source, mapper, reducer, combiner, reducers, workers, split_bytes,
           spill_values, max_attempts, output_prefix) -> None:
    names = _defined_names(source)
    for role, name in (("mapper", mapper), ("reducer", reducer),
                       ("combiner", combiner)):
        if name and name not in names:
            raise InvalidArgument(f"{role} {name!r} is not defined in the source")
    if not mapper or not reducer:
        raise InvalidArgument("a job needs a mapper and a reducer")
    bounds = (("reducers", reducers, 1, MAX_REDUCERS), ("workers", workers, 1, 256),
              ("split_bytes", split_bytes, 1, 1 << 40),
              ("spill_values", spill_values, 1, 1 << 40),
              ("max_attempts", max_attempts, 1, 1000))
    for what, value, low, high in bounds:
        if type(value) is not int or not low <= value <= high:
            raise InvalidArgument(f"{what} must be an integer in [{low}, {high}], "
                                  f"got {value!r}")
    if not output_prefix or output_prefix.startswith(PREFIX):
        raise InvalidArgument(f"output prefix {output_prefix!r} is empty or "
                              f"under {PREFIX!r}")


def list_all(client, prefix: str, delimiter: str = "") -> list:
    """Every BlobInfo under a prefix (or the common prefixes, with a
    delimiter), across pages."""
    found, token = [], ""
    while True:
        page = client.blob.list(prefix, delimiter=delimiter, page_token=token)
        found += list(page.common_prefixes) if delimiter else list(page.blobs)
        token = page.next_page_token
        if not token:
            return found


def _splits(blobs, split_bytes: int) -> list:
    return [[b.key, start, min(start + split_bytes, b.size)]
            for b in blobs for start in range(0, b.size, split_bytes)]


def submit(client, source: str, *, mapper: str, reducer: str, input_prefix: str,
           output_prefix: str, combiner: str = "", reducers: int = 1,
           workers: int = 2, split_bytes: int = 8 << 20,
           spill_values: int = 1 << 20, max_attempts: int = 4,
           lease: float = 300, worker_attempts: int = 10, name: str = "") -> str:
    """Start a job over the blobs under input_prefix; returns its id.

    mapper(key, line) yields (key, value) pairs, for each line of each input
    blob (key is the blob's key); combiner(key, values), optional, returns the
    values that replace them on the map side; reducer(key, values) returns
    the output value of a key (None drops it). `reducers` output blobs
    `output_prefix + "part-NNNNN"` hold JSON lines `[key, value]`, sorted by
    key. A task is tried `max_attempts` times before the job fails.
    """
    _check(source, mapper, reducer, combiner, reducers, workers, split_bytes,
           spill_values, max_attempts, output_prefix)
    job = name or f"j{uuid.uuid4().hex[:11]}"
    if not JOB_RE.fullmatch(job):
        raise InvalidArgument(f"job name {job!r} must match {JOB_RE.pattern}")
    blobs = [b for b in list_all(client, input_prefix) if b.size]
    if not blobs:
        raise InvalidArgument(f"no input blobs under prefix {input_prefix!r}")
    if client.blob.list(output_prefix, page_size=1).blobs:
        raise FailedPrecondition(f"output prefix {output_prefix!r} is not empty")

    queues = {p: f"mapreduce.{job}.{p}" for p in ("map", "reduce", "dead")}
    spec = dict(job=job, source=source, mapper=mapper, reducer=reducer,
                combiner=combiner, reducers=reducers, workers=workers,
                splits=_splits(blobs, split_bytes),
                sizes={b.key: b.size for b in blobs}, output=output_prefix,
                input=input_prefix, spill_values=spill_values,
                max_attempts=max_attempts, lease=lease, queues=queues,
                created=time.time())
    try:
        client.blob.put(job_key(job, "job.json"), json.dumps(spec).encode(),
                        content_type="application/json", if_none_match=True)
    except FailedPrecondition:
        raise AlreadyExists(f"job {job!r} exists") from None
    _make_queues(client, queues, max_attempts, lease)
    _send_tasks(client, queues["map"], "map", len(spec["splits"]))
    _send_tasks(client, queues["reduce"], "reduce", reducers)

    pids = [client.spawn.spawn(
        "worker", RUNTIME_SOURCE, job.encode(), name="mapreduce",
        attempts=worker_attempts, backoff=(0.05, 1.0),
        idempotency_key=f"mapreduce-{job}-{i}").pid for i in range(workers)]
    client.blob.put(job_key(job, "workers.json"), json.dumps(pids).encode())
    log.info("job %s: %d map tasks, %d reducers, %d workers", job,
             len(spec["splits"]), reducers, workers)
    return job


def _make_queues(client, queues: dict, max_attempts: int, lease: float) -> None:
    client.queue.create(queues["dead"])
    for phase in ("map", "reduce"):
        client.queue.create(queues[phase], lease=lease,
                            max_receive_count=max_attempts,
                            dead_letter_queue=queues["dead"])


def _send_tasks(client, queue: str, phase: str, n: int) -> None:
    bodies = [json.dumps({"phase": phase, "task": i}).encode() for i in range(n)]
    for i in range(0, n, 100):
        client.queue.send(queue, *bodies[i:i + 100])


def _spec(client, job: str) -> dict:
    try:
        return json.loads(client.blob.get(job_key(job, "job.json")).data)
    except NotFound:
        raise NotFound(f"mapreduce job {job!r} not found") from None


def _counters(client, commits) -> dict:
    total = {}
    for info in commits:
        record = json.loads(client.blob.get(info.key).data)
        for k, v in record["counters"].items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))


def status(client, job: str, *, counters: bool = True) -> JobStatus:
    """A job's state, rebuilt from its blobs and its workers' records."""
    spec = _spec(client, job)
    maps = list_all(client, job_key(job, "commit", "map", ""))
    reduces = list_all(client, job_key(job, "commit", "reduce", ""))
    try:
        pids = json.loads(client.blob.get(job_key(job, "workers.json")).data)
    except NotFound:
        pids = []    # submit is still spawning them
    procs = [client.spawn.wait(pid).process for pid in pids]
    running = sum(p.state not in ENDED for p in procs)
    s = JobStatus(
        job=job, state="running", maps_done=len(maps), maps=len(spec["splits"]),
        reduces_done=len(reduces), reduces=spec["reducers"],
        workers_running=running, workers=spec["workers"], output=spec["output"],
        task_errors=len(list_all(client, job_key(job, "errors", ""))),
        elapsed=time.time() - spec["created"])
    try:
        failure = json.loads(client.blob.get(job_key(job, "failed")).data)
        s.state, s.error = "failed", failure["error"].strip().splitlines()[-1]
    except NotFound:
        if s.reduces_done >= s.reduces:
            s.state = "succeeded"
        elif pids and not running:
            s.state, s.error = "failed", "every worker process ended early"
    if s.state != "running":
        ended = [p.ended_unix_ms for p in procs if p.ended_unix_ms]
        if ended and s.state == "succeeded":
            s.elapsed = max(ended) / 1000 - spec["created"]
    if counters:
        s.counters = _counters(client, maps + reduces)
    return s


def wait(client, job: str, timeout: float | None = None,
         poll: float = 0.1) -> JobStatus:
    """Wait until a job ends (or `timeout` seconds pass); its status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        s = status(client, job, counters=False)
        if s.state != "running" or deadline and time.monotonic() > deadline:
            return status(client, job)
        time.sleep(poll)


def _wait_workers(client, job: str, timeout: float = 5.0) -> None:
    """Let the workers see the job end (they poll twice a second), so that
    deleting its queues does not fail their last calls."""
    deadline = time.monotonic() + timeout
    for pid in json.loads(client.blob.get(job_key(job, "workers.json")).data):
        client.spawn.wait(pid, max(0.0, deadline - time.monotonic()))


def cleanup(client, job: str) -> None:
    """Drop a job's queues and intermediate blobs; keep its spec, commit
    records (the counters), errors and output."""
    spec = _spec(client, job)
    for queue in spec["queues"].values():
        try:
            client.queue.delete(queue)
        except NotFound:
            pass
    for info in list_all(client, job_key(job, "map", "")):
        client.blob.delete(info.key)


def run(client, source: str, *, timeout: float | None = None,
        **options) -> JobStatus:
    """Submit a job, wait for it, clean up; raises JobFailed if it failed."""
    job = submit(client, source, **options)
    s = wait(client, job, timeout)
    if s.state == "running":
        return s
    _wait_workers(client, job)
    cleanup(client, job)
    if s.state != "succeeded":
        raise JobFailed(s)
    return s


def jobs(client) -> list:
    """The ids of the caller's jobs."""
    return [p[len(PREFIX):].rstrip("/") for p in list_all(client, PREFIX, "/")]


def read_output(client, prefix: str):
    """Yield the (key, value) records of a job's output, part by part."""
    for info in list_all(client, prefix):
        for line in client.blob.get(info.key).data.decode().splitlines():
            key, value = json.loads(line)
            yield key, value
