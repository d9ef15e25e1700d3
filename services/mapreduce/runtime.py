"""The MapReduce worker: the source every mapper and reducer process runs.

This module is shipped as the text of a cloud executable (SPAWN runs it with
the entry `worker`), so it imports only modules the zygote preloads and the
client library, and reaches the kernel through the injected global `client`.
It is also importable, so a local run (`run_local`, the benchmark's
multiprocessing baseline) executes the very same map and reduce code.

Theory of operation (after Cloud MapReduce, which did this on S3 and SQS):

- A job J is a spec blob `mapreduce/J/job.json` (the tenant's source, the
  function names, the splits, the number of reducers), a queue of map tasks
  and a queue of reduce tasks, both dead-lettering to one queue after
  `max_attempts` receives. Every worker process runs the same loop: take map
  tasks while any map task is uncommitted, then reduce tasks, and end when
  every reduce task is committed or the job has failed. No coordinator runs
  while the job does; the blobs are the state.
- A map task's attempt writes its partitions under a key of its own,
  `mapreduce/J/map/T/A/...`, and then the commit record
  `mapreduce/J/commit/map/T` with a create-only put naming those keys. At
  most one attempt's record is created; an attempt that loses the race
  deletes its blobs. Reducers read only the blobs the commit records name, so
  a worker killed mid-task (partial spills, no record) or a slow duplicate
  never has its output counted, and a retry starts afresh.
- A reduce task reads partition r of every committed map task, writes the
  output blob create-only, then its own commit record. Its inputs are fixed
  by the commit records, so a retry computes the same output; if an earlier
  attempt's output blob is already there (it died before committing), the
  retry keeps it.
- Counters (input records, output records, the tenant's own via `count`) are
  summed only from commit records, so they too count each task once.
- A task message is acked after its commit; a redelivered message whose task
  is committed is acked at once. A worker that dies holds leases the kernel
  releases at once, and SPAWN restarts the worker itself.
"""

import json
import logging
import os
import pickle
import time
import traceback
import uuid
import zlib

from nubis.errors import FailedPrecondition, NotFound

log = logging.getLogger("nubis.mapreduce")

PREFIX = "mapreduce/"
IDLE_WAIT = 0.5        # long poll of an idle worker, seconds
READ_AHEAD = 64 << 10  # bytes read past a split's end to finish its last line


def job_key(job: str, *parts) -> str:
    return PREFIX + "/".join((job, *map(str, parts)))


def partition(key, reducers: int) -> int:
    """The reducer of an intermediate key: a hash stable across processes."""
    if type(key) is str:
        data = key.encode("utf-8", "surrogatepass")
    else:
        data = repr(key).encode()
    return zlib.crc32(data) % reducers


class Functions:
    """The tenant's mapper, combiner and reducer, loaded from its source."""

    def __init__(self, spec: dict, bound_client=None):
        self.counters = {}
        namespace = {"__name__": "mapreduce_job", "client": bound_client,
                     "count": self.count}
        exec(compile(spec["source"], f"<job {spec['job']}>", "exec"), namespace)
        self.mapper = self._find(namespace, spec["mapper"])
        self.reducer = self._find(namespace, spec["reducer"])
        combiner = spec.get("combiner") or ""
        self.combiner = self._find(namespace, combiner) if combiner else None

    @staticmethod
    def _find(namespace: dict, name: str):
        func = namespace.get(name)
        if not callable(func):
            raise NameError(f"job source defines no function {name!r}")
        return func

    def count(self, name: str, n: int = 1) -> None:
        """A tenant counter, summed over committed tasks."""
        self.counters[name] = self.counters.get(name, 0) + n

    def take_counters(self) -> dict:
        counters, self.counters = self.counters, {}
        return counters


# The work itself, free of I/O: the local run and the cloud run share it.

def map_records(records, funcs: Functions, counters: dict, spill, spill_values):
    """Map (key, line) records, buffering values by intermediate key; call
    `spill(buffer)` whenever spill_values values are buffered, and at the end."""
    mapper = funcs.mapper
    buffer = {}
    buffered = emitted = read = 0
    for key, value in records:
        read += 1
        for k, v in mapper(key, value):
            values = buffer.get(k)
            if values is None:
                buffer[k] = [v]
            else:
                values.append(v)
            emitted += 1
        if emitted - buffered >= spill_values:
            spill(buffer)
            buffer, buffered = {}, emitted
    spill(buffer)
    counters["map_input_records"] = counters.get("map_input_records", 0) + read
    counters["map_output_records"] = (counters.get("map_output_records", 0)
                                      + emitted)


def partition_buffer(buffer: dict, funcs: Functions, reducers: int,
                     counters: dict) -> list:
    """Combine a buffer and cut it into one list of (key, values) per reducer."""
    parts = [[] for _ in range(reducers)]
    combiner = funcs.combiner
    combined = 0
    for k, values in buffer.items():
        if combiner is not None:
            values = list(combiner(k, values))
        combined += len(values)
        parts[partition(k, reducers)].append((k, values))
    counters["combine_output_records"] = (
        counters.get("combine_output_records", 0) + combined)
    return parts


def reduce_groups(chunks, funcs: Functions, counters: dict) -> list:
    """Merge lists of (key, values) and reduce each key: sorted (key, value)."""
    groups = {}
    records = 0
    for chunk in chunks:
        for k, values in chunk:
            records += len(values)
            have = groups.get(k)
            if have is None:
                groups[k] = values
            else:
                have.extend(values)
    reducer = funcs.reducer
    out = []
    for k in sorted(groups):
        value = reducer(k, groups[k])
        if value is not None:
            out.append((k, value))
    counters["reduce_input_groups"] = (counters.get("reduce_input_groups", 0)
                                       + len(groups))
    counters["reduce_input_records"] = (counters.get("reduce_input_records", 0)
                                        + records)
    counters["reduce_output_records"] = (counters.get("reduce_output_records", 0)
                                         + len(out))
    return out


def encode_output(pairs) -> bytes:
    """Output records as JSON lines, `[key, value]` each."""
    return "".join(json.dumps([k, v], ensure_ascii=False) + "\n"
                   for k, v in pairs).encode()


def split_lines(data: bytes, first: bool):
    """The lines that start in a split: all of them when it is the first
    split of its blob, else those after the first newline (the previous
    split owns the line that straddles)."""
    if not first:
        cut = data.find(b"\n")
        data = b"" if cut < 0 else data[cut + 1:]
    return data.decode("utf-8", "replace").splitlines()


def run_local(spec: dict, inputs: dict) -> list:
    """Run a job in this process over {key: bytes}: sorted (key, value)."""
    funcs = Functions(spec)
    counters = {}
    reducers = spec["reducers"]
    chunks = [[] for _ in range(reducers)]

    def spill(buffer):
        for r, part in enumerate(partition_buffer(buffer, funcs, reducers,
                                                  counters)):
            chunks[r].append(part)

    for key in sorted(inputs):
        records = ((key, line) for line in split_lines(inputs[key], True))
        map_records(records, funcs, counters, spill, spec["spill_values"])
    out = []
    for r in range(reducers):
        out += reduce_groups(chunks[r], funcs, counters)
    return sorted(out)


# The cloud side: the worker loop over the task queues.

class Worker:
    """One worker process's view of a job."""

    def __init__(self, cloud, spec: dict):
        self.client = cloud
        self.spec = spec
        self.job = spec["job"]
        self.funcs = Functions(spec, cloud)
        self.map_done = False
        self.map_commits = None

    def key(self, *parts) -> str:
        return job_key(self.job, *parts)

    def run(self) -> str:
        """Take tasks until the job ends; returns how it ended."""
        while True:
            if self.failed():
                return "failed"
            if not self.map_done:
                self.map_done = self.committed("map") >= len(self.spec["splits"])
            if self.map_done and self.committed("reduce") >= self.spec["reducers"]:
                return "succeeded"
            queue = self.spec["queues"]["reduce" if self.map_done else "map"]
            try:
                msgs = self.client.queue.receive(queue, 1, wait=IDLE_WAIT,
                                                 lease=self.spec["lease"])
            except NotFound:
                return "cleaned up"     # the job ended and its queues are gone
            if msgs:
                self.task(queue, msgs[0])
            else:
                self.check_dead_letters()

    def failed(self) -> bool:
        try:
            self.client.blob.head(self.key("failed"))
        except NotFound:
            return False
        return True

    def committed(self, phase: str) -> int:
        prefix, n, token = self.key("commit", phase, ""), 0, ""
        while True:
            page = self.client.blob.list(prefix, page_token=token)
            n += len(page.blobs)
            token = page.next_page_token
            if not token:
                return n

    def check_dead_letters(self) -> None:
        dead = self.client.queue.receive(self.spec["queues"]["dead"], 1)
        if not dead:
            return
        task = json.loads(dead[0].body)
        error = self.last_error(task)
        self.client.blob.put(self.key("failed"), json.dumps({
            "task": task, "error": error}).encode())
        log.warning("job %s: %s task %s failed %d times: %s", self.job,
                    task["phase"], task["task"], self.spec["max_attempts"], error)

    def last_error(self, task: dict) -> str:
        prefix = self.key("errors", f"{task['phase']}-{task['task']}-")
        blobs = self.client.blob.list(prefix).blobs
        if not blobs:
            return "no error recorded"
        latest = max(blobs, key=lambda b: b.created_unix_ms)
        return self.client.blob.get(latest.key).data.decode()

    def task(self, queue: str, msg) -> None:
        task = json.loads(msg.body)
        phase, n = task["phase"], task["task"]
        commit = self.key("commit", phase, n)
        try:
            self.client.blob.head(commit)
        except NotFound:
            pass
        else:
            self.client.queue.ack(queue, msg.receipt)    # a redelivered duplicate
            return
        attempt = uuid.uuid4().hex[:12]
        self.funcs.take_counters()
        try:
            if phase == "map":
                record = self.map_task(task, attempt)
            else:
                record = self.reduce_task(task)
        except Exception as e:
            self.task_failed(queue, msg, task, attempt, e)
            return
        record.update(attempt=attempt, pid=os.getpid(), unix_ms=_now_ms())
        try:
            self.client.blob.put(commit, json.dumps(record).encode(),
                                 if_none_match=True)
        except FailedPrecondition:
            self.discard(phase, n, attempt)      # another attempt committed first
        self.client.queue.ack(queue, msg.receipt)

    def task_failed(self, queue, msg, task, attempt, e) -> None:
        text = "".join(traceback.format_exception(e))
        log.info("job %s: %s task %s attempt %s: %s", self.job, task["phase"],
                 task["task"], attempt, e)
        self.client.blob.put(self.key(
            "errors", f"{task['phase']}-{task['task']}-{attempt}"), text.encode())
        self.discard(task["phase"], task["task"], attempt)
        self.client.queue.change_lease(queue, msg.receipt, 0)

    def discard(self, phase: str, n: int, attempt: str) -> None:
        if phase != "map":
            return
        prefix = self.key("map", n, attempt, "")
        for blob in self.client.blob.list(prefix).blobs:
            self.client.blob.delete(blob.key)

    def map_task(self, task: dict, attempt: str) -> dict:
        split = self.spec["splits"][task["task"]]
        reducers = self.spec["reducers"]
        counters = {"map_input_bytes": split[2] - split[1]}
        parts = [[] for _ in range(reducers)]

        def spill(buffer):
            for r, chunk in enumerate(partition_buffer(
                    buffer, self.funcs, reducers, counters)):
                if not chunk:
                    continue
                key = self.key("map", task["task"], attempt,
                               f"p{r:05d}.s{len(parts[r]):04d}")
                data = pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL)
                self.client.blob.put(key, data, if_none_match=True)
                counters["spill_bytes"] = counters.get("spill_bytes", 0) + len(data)
                parts[r].append(key)

        records = ((split[0], line) for line in self.read_split(split))
        map_records(records, self.funcs, counters, spill,
                    self.spec["spill_values"])
        return {"parts": parts, "counters": _merge(counters,
                                                   self.funcs.take_counters())}

    def read_split(self, split) -> list:
        key, start, end = split
        offset = start - 1 if start else 0
        data = self.client.blob.get(key, offset=offset, length=end - offset).data
        size, tail = self.spec["sizes"][key], end
        while tail < size and not data.endswith(b"\n"):
            more = self.client.blob.get(key, offset=tail, length=min(
                READ_AHEAD, size - tail)).data
            cut = more.find(b"\n")
            if cut >= 0:
                data += more[:cut + 1]
                break
            data += more
            tail += len(more)
        return split_lines(data, start == 0)

    def map_records_of(self, r: int):
        if self.map_commits is None:
            self.map_commits = [
                json.loads(self.client.blob.get(self.key("commit", "map", t)).data)
                for t in range(len(self.spec["splits"]))]
        for record in self.map_commits:
            for key in record["parts"][r]:
                yield pickle.loads(self.client.blob.get(key).data)

    def reduce_task(self, task: dict) -> dict:
        r = task["task"]
        counters = {}
        out = reduce_groups(self.map_records_of(r), self.funcs, counters)
        data = encode_output(out)
        key = self.spec["output"] + f"part-{r:05d}"
        try:
            self.client.blob.put(key, data, content_type="application/x-ndjson",
                                 if_none_match=True)
        except FailedPrecondition:
            pass    # an attempt that died before committing wrote it already
        counters["output_bytes"] = len(data)
        return {"output": key, "counters": _merge(counters,
                                                  self.funcs.take_counters())}


def _merge(a: dict, b: dict) -> dict:
    for k, v in b.items():
        a[k] = a.get(k, 0) + v
    return a


def _now_ms() -> int:
    return int(time.time() * 1000)


_workers = {}


def worker(args: bytes) -> str:
    """SPAWN entry: work on job `args` until it ends."""
    job = args.decode()
    cloud = client    # noqa: F821 - the global a cloud process is given
    if job not in _workers:
        spec = json.loads(cloud.blob.get(job_key(job, "job.json")).data)
        _workers.clear()     # a warm worker keeps only its latest job
        _workers[job] = Worker(cloud, spec)
    return _workers[job].run()
