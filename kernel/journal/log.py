"""The journal: segments on disk, the fsync policies, group commit, compaction."""

import asyncio
import inspect
import logging
import os
import time
from collections import deque
from dataclasses import asdict

from nubis.errors import Unavailable
from nubis.journal import codec, snapshot
from nubis.journal.replay import Replayer
from nubis.journal.stores import raw, wrap

log = logging.getLogger("nubis.journal")

ALWAYS, EVERYSEC, NONE = "always", "everysec", "none"
POLICIES = (ALWAYS, EVERYSEC, NONE)
TICK_SECONDS = 1.0
REAP_SECONDS = 0.1
# everysec: a buffer past this many bytes is written before the next tick.
EAGER_BYTES = 16 << 20
PREFIX = "journal."


def _segment_name(number: int) -> str:
    return f"{PREFIX}{number:08d}"


def _write_all(fd: int, data: bytes, close: bool) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fdatasync(fd)
    if close:
        os.close(fd)


class Journal:
    """Appends records, makes them durable by policy, replays them at boot."""

    def __init__(self, folder: str, policy: str, clock,
                 compact_bytes: int = 64 << 20):
        if policy not in POLICIES:
            raise ValueError(f"fsync policy {policy!r} is not one of {POLICIES}")
        self.folder = folder
        self.policy = policy
        self.waits = policy == ALWAYS
        self.clock = clock
        self.compact_bytes = compact_bytes
        self.seq = 0           # records appended
        self.required = 0      # the last record a reply must wait for
        self.synced = 0        # records on disk
        self.segment = 0
        self.since_snapshot = 0    # bytes appended since the last snapshot
        self.failed: OSError | None = None
        # State replay rebuilds and snapshots carry, beyond the stores.
        self.runtime_tenants: dict[str, tuple] = {}
        self.deleted_tenants: set[str] = set()
        self.spawns: dict[tuple, tuple] = {}
        self.max_pid = 0
        self.kernel = None
        self.replay_seconds = 0.0
        self.replayed = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._waiters: deque = deque()
        self._fd = -1
        self._flusher = None
        self._ticker = None
        self._child = None         # (pid, first segment it does not cover)

    # -- boot ----------------------------------------------------------------

    def open(self, kernel, release: bool = True) -> None:
        """Load the snapshot, replay the segments after it, open a new one,
        and (unless told not to, as tests do) release the leases held."""
        self.kernel = kernel
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        started = time.perf_counter()
        first = self._load_snapshot(kernel)
        kernel.tenants.on_add = lambda tenant: wrap(self, tenant)
        for tenant in kernel.tenants.by_name.values():
            wrap(self, tenant)
        numbers = self._segments()
        for number in numbers:
            if number < first:
                os.unlink(os.path.join(self.folder, _segment_name(number)))
        replayer = Replayer(kernel, self)
        self._replay([n for n in numbers if n >= first], replayer)
        self.segment = max([first - 1, *numbers]) + 1
        self._fd = self._create_segment(self.segment)
        released = replayer.release_leases() if release else 0
        self.replay_seconds = time.perf_counter() - started
        self.replayed = replayer.records
        log.info("journal %s (fsync %s): replayed %d records in %.3f s; "
                 "released %d leases held at the last stop", self.folder,
                 self.policy, replayer.records, self.replay_seconds, released)
        if replayer.mismatched or replayer.orphans:
            log.warning("journal: %d records replayed with another outcome "
                        "than they had, %d of tenants this kernel no longer "
                        "has", replayer.mismatched, replayer.orphans)
        self._prepare_compaction()

    def _load_snapshot(self, kernel) -> int:
        try:
            state = snapshot.read(self.folder, self.clock)
        except snapshot.SnapshotError as e:
            raise OSError(f"journal: {e}; move it away to boot from the "
                          "segments alone") from None
        if state is None:
            return 0
        _restore(self, kernel, state)
        return state["next_segment"]

    def _segments(self) -> list[int]:
        numbers = []
        for name in os.listdir(self.folder):
            tail = name[len(PREFIX):]
            if name.startswith(PREFIX) and tail.isdigit():
                numbers.append(int(tail))
        return sorted(numbers)

    def _replay(self, numbers: list[int], replayer) -> None:
        for i, number in enumerate(numbers):
            path = os.path.join(self.folder, _segment_name(number))
            with open(path, "rb") as f:
                data = f.read()
            self.since_snapshot += len(data)
            start = len(codec.MAGIC)
            if not data.startswith(codec.MAGIC):
                end, why = 0, "no journal header"
            else:
                end, why = _apply_segment(data, start, replayer)
            if why:
                self._cut(path, data, end, why, numbers[i + 1:])
                return

    def _cut(self, path: str, data: bytes, end: int, why: str,
             later: list[int]) -> None:
        """Keep the bad tail aside, truncate the segment, drop later ones."""
        tail = data[end:]
        dropped = sum(1 for _ in _count_records(tail))
        with open(path + f".bad-{end}", "wb") as f:
            f.write(tail)
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
        log.warning("journal: %s is damaged at offset %d (%s): cut off %d "
                    "bytes (about %d records) after the last good record; "
                    "they are kept in %s.bad-%d", path, end, why, len(tail),
                    dropped, path, end)
        for number in later:
            name = os.path.join(self.folder, _segment_name(number))
            size = os.path.getsize(name)
            os.rename(name, name + ".bad-0")
            log.warning("journal: dropped %s (%d bytes), written after the "
                        "damage; it is kept as %s.bad-0", name, size, name)
        snapshot.sync_folder(self.folder)

    def _create_segment(self, number: int) -> int:
        path = os.path.join(self.folder, _segment_name(number))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(fd, codec.MAGIC)
        os.fsync(fd)
        snapshot.sync_folder(self.folder)
        return fd

    def _prepare_compaction(self) -> None:
        if not self.compact_bytes:
            return
        # gRPC's own fork handlers crash the snapshot child (SIGSEGV seen
        # with grpcio 1.85); the child touches no gRPC state, so turn them
        # off. gRPC reads this when it is first imported, after the journal.
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

    def start(self) -> None:
        """Start the background writer; call on the running loop."""
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        if self._buffer:
            self._kick()

    # -- appending -------------------------------------------------------------

    def append(self, record: tuple, required: bool = True) -> None:
        """Append a record; `required`: a reply must wait for it (always)."""
        data = codec.encode(record)
        self._buffer.append(data)
        self._buffered += len(data)
        self.seq += 1
        if required:
            self.required = self.seq
        if self._flusher is None and (
                self.waits or self._buffered > EAGER_BYTES):
            self._kick()

    def tenant_created(self, name: str, token: str, quotas, admin: bool,
                       ports) -> None:
        spec = (name, token, dict(vars(quotas)), admin, [list(p) for p in ports])
        self.runtime_tenants[name] = spec
        self.append(("t.create", "", self.clock.source(), True, spec))

    def tenant_deleted(self, name: str) -> None:
        if self.runtime_tenants.pop(name, None) is None:
            self.deleted_tenants.add(name)
        self.append(("t.delete", "", self.clock.source(), True, (name,)))

    def process_spawned(self, tenant: str, proc) -> None:
        """Journal an accepted spawn; its end is journaled when it ends."""
        spec = (proc.number, proc.name, proc.source, proc.entry, proc.args,
                asdict(proc.plan), proc.key)
        self.spawns[tenant, proc.number] = spec
        self.max_pid = max(self.max_pid, proc.number)
        self.append(("p.spawn", tenant, self.clock.source(), True, spec))
        asyncio.get_running_loop().create_task(self._on_end(tenant, proc))

    async def _on_end(self, tenant: str, proc) -> None:
        await proc.ended.wait()
        self.spawns.pop((tenant, proc.number), None)
        self.append(("p.end", tenant, self.clock.source(), True, (proc.number,)),
                    False)

    def restore_processes(self, supervisor, kernel) -> None:
        """Spawn again, under their old pids, the processes not ended."""
        from nubis.errors import NubisError
        from nubis.proc.process import Plan

        restored = 0
        for (name, number), spec in sorted(self.spawns.items(),
                                           key=lambda kv: kv[0][1]):
            tenant = kernel.tenants.by_name.get(name)
            if tenant is None:
                continue
            _, exe, source, entry, args, plan, key = spec
            supervisor.counter = number - 1
            try:
                proc, _ = supervisor.spawn(tenant, exe, source, entry, args,
                                           Plan(**plan), key)
            except NubisError as e:
                log.warning("journal: process p%d of %s is not restarted: %s",
                            number, name, e.message)
                continue
            asyncio.get_running_loop().create_task(self._on_end(name, proc))
            restored += 1
        supervisor.counter = max(supervisor.counter, self.max_pid)
        if restored:
            log.info("journal: restarted %d cloud processes that had not ended",
                     restored)

    # -- replies wait for their records (always) ----------------------------------

    def hold(self, result, mark: int, events: bool):
        """The reply of a call, made to wait for the records it appended."""
        if events:
            return result
        if inspect.isawaitable(result):
            return self._after_awaitable(result, mark)
        if self.required != mark:
            return self._after(result, self.required)
        return result

    async def _after(self, result, seq: int):
        await self._durable(seq)
        return result

    async def _after_awaitable(self, awaitable, mark: int):
        result = await awaitable
        if self.required != mark:
            await self._durable(self.required)
        return result

    def _durable(self, seq: int):
        future = asyncio.get_running_loop().create_future()
        if self.synced >= seq:
            future.set_result(None)
        else:
            self._waiters.append((seq, future))
        return future

    # -- writing -----------------------------------------------------------------

    def _kick(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Write and fsync batches until the buffer is empty (group commit)."""
        try:
            while self._buffer:
                data = b"".join(self._buffer)
                end = self.seq
                self._buffer.clear()
                self._buffered = 0
                fd = self._fd
                rotate = self._compaction_due(len(data))
                if rotate:
                    self._rotate()
                try:
                    await asyncio.to_thread(_write_all, fd, data, rotate)
                except OSError as e:
                    self._failed(e)
                    continue
                self.synced = end
                self._resolve()
        finally:
            self._flusher = None

    def _resolve(self) -> None:
        waiters, synced = self._waiters, self.synced
        while waiters and waiters[0][0] <= synced:
            future = waiters.popleft()[1]
            if not future.done():
                future.set_result(None)

    def _failed(self, error: OSError) -> None:
        if self.failed is None:
            log.error("journal: cannot write %s: %s; calls that change state "
                      "answer UNAVAILABLE until it can", self.folder, error)
        self.failed = error
        waiters = self._waiters
        while waiters:
            future = waiters.popleft()[1]
            if not future.done():
                future.set_exception(Unavailable(
                    f"the journal cannot be written ({error.strerror}); the "
                    "change was made in memory only"))

    async def _tick(self) -> None:
        while True:
            # A snapshot child is looked for more often, so its old segments
            # go soon after it finishes.
            await asyncio.sleep(REAP_SECONDS if self._child else TICK_SECONDS)
            self._reap()
            if self._buffer and self._flusher is None:
                self._kick()

    async def close(self) -> None:
        """Write what is buffered and close the segment."""
        if self._ticker is not None:
            self._ticker.cancel()
        while self._flusher is not None:
            await self._flusher
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def flush(self) -> None:
        """Write and fsync what is buffered, now, on this thread."""
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            _write_all(self._fd, data, False)
            self.synced = self.seq
            self._resolve()

    # -- compaction ---------------------------------------------------------------

    def _compaction_due(self, size: int) -> bool:
        self.since_snapshot += size
        return (bool(self.compact_bytes) and self._child is None
                and self.since_snapshot >= self.compact_bytes)

    def _rotate(self) -> None:
        """Start a new segment and fork a child to snapshot the state now."""
        self.segment += 1
        self._fd = self._create_segment(self.segment)
        self.since_snapshot = 0
        state = _state(self, self.kernel, self.segment)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                snapshot.write(self.folder, state(), self.clock)
                code = 0
            except BaseException as e:
                os.write(2, f"nubis journal snapshot failed: {e!r}\n".encode())
            finally:
                os._exit(code)
        self._child = (pid, self.segment)
        log.info("journal: snapshot started (pid %d)", pid)

    def _reap(self) -> None:
        if self._child is None:
            return
        pid, first = self._child
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            return
        self._child = None
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            log.warning("journal: snapshot child %d failed (%s); the segments "
                        "stay, and it is tried again later", pid,
                        f"signal {-code}" if code < 0 else f"exit {code}")
            return
        for number in self._segments():
            if number < first:
                os.unlink(os.path.join(self.folder, _segment_name(number)))
        log.info("journal: snapshot done; segments before %d deleted", first)


def _apply_segment(data: bytes, start: int, replayer) -> tuple[int, str]:
    records = codec.scan(data, start)
    while True:
        try:
            at, record = next(records)
        except StopIteration as stop:
            return stop.value
        try:
            replayer.apply(record)
        except (ValueError, TypeError, KeyError) as e:
            # A record that loads but is not one the kernel wrote.
            records.close()
            return at, f"bad record: {e!r}"


def _count_records(tail: bytes):
    """Records that still frame in a bad tail, for the warning (an estimate)."""
    at = 0
    while at + codec.HEADER.size <= len(tail):
        length, _ = codec.HEADER.unpack_from(tail, at)
        at += codec.HEADER.size + length
        if at > len(tail):
            return
        yield at


def _state(journal: Journal, kernel, next_segment: int):
    """A function, run in the snapshot child, building what it pickles."""
    def build() -> dict:
        return {
            "next_segment": next_segment,
            "time": time.time(),
            "stores": {name: (raw(t.queues), raw(t.blobs))
                       for name, t in kernel.tenants.by_name.items()},
            "runtime_tenants": journal.runtime_tenants,
            "deleted_tenants": sorted(journal.deleted_tenants),
            "spawns": list(journal.spawns.items()),
            "max_pid": journal.max_pid,
        }
    return build


def _restore(journal: Journal, kernel, state: dict) -> None:
    """Install a snapshot's state into a kernel booted from its config."""
    from nubis.tenants import Quotas

    registry = kernel.tenants
    for name in state["deleted_tenants"]:
        journal.deleted_tenants.add(name)
        if name in registry.by_name:
            registry.remove(name)
    for name, spec in state["runtime_tenants"].items():
        _, token, quotas, admin, ports = spec
        if name not in registry.by_name:
            registry.add(name, token, Quotas(**quotas), admin,
                         tuple(tuple(p) for p in ports))
        journal.runtime_tenants[name] = spec
    for name, (queues, blobs) in state["stores"].items():
        tenant = registry.by_name.get(name)
        if tenant is None:
            continue
        _limit(queues.limits, blobs.limits, tenant.quotas)
        tenant.queues, tenant.blobs = queues, blobs
    journal.spawns.update((tuple(k), v) for k, v in state["spawns"])
    journal.max_pid = state["max_pid"]


def _limit(queue_limits, blob_limits, quotas) -> None:
    """Quotas come from the configuration, not from the snapshot."""
    queue_limits.max_queues = quotas.max_queues
    queue_limits.max_depth = quotas.max_queue_depth
    queue_limits.max_message_bytes = quotas.max_message_bytes
    queue_limits.max_bytes = quotas.max_bytes_stored
    blob_limits.max_bytes = quotas.max_bytes_stored
    blob_limits.max_blob_bytes = quotas.max_blob_bytes
