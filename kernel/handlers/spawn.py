"""SPAWN calls: check the request, hand it to the supervisor, reply.

Source is checked here, before any worker is involved: it must compile, and
the entry must be a name the module defines at its top level, so a typo is
an INVALID_ARGUMENT at once rather than a failed process later.
"""

import ast
import functools
import signal

from nubis.calls import handler
from nubis.errors import InvalidArgument, NotFound, Unavailable
from nubis.proc.process import NEVER, Plan
from nubis.v1 import spawn_pb2 as pb

MAX_ATTEMPTS = 1000
DEFAULT_BACKOFF_MIN_MS = 100
DEFAULT_BACKOFF_MAX_MS = 30_000


def _supervisor(kernel):
    if kernel.procs is None:
        raise Unavailable("cloud processes are off in this kernel (spawn = "
                          "false, no ZeroMQ endpoint, or the zygote failed)")
    return kernel.procs


def _source_of(tenant, exe) -> bytes:
    which = exe.WhichOneof("code")
    if which == "source":
        return exe.source.encode()
    if which == "blob_key":
        try:
            _, data = tenant.blobs.get(exe.blob_key)
        except NotFound:
            raise NotFound(f"executable blob {exe.blob_key!r} not found") from None
        return bytes(data)
    raise InvalidArgument("executable has neither source nor blob_key")


def _defined_names(tree: ast.Module) -> set:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def executable(tenant, exe) -> tuple[bytes, str, str]:
    """(source, entry, name) of a checked Executable message."""
    source = _source_of(tenant, exe)
    if not exe.entry.isidentifier():
        raise InvalidArgument(f"entry {exe.entry!r} is not a Python name")
    _check(source, exe.entry, exe.blob_key or "source")
    return source, exe.entry, exe.name or exe.entry


@functools.lru_cache(maxsize=256)
def _check(source, entry: str, where: str) -> None:
    """Parse once per distinct executable: warm spawns repeat the same one."""
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as e:
        raise InvalidArgument(f"{where} does not compile: line {e.lineno}: "
                              f"{e.msg}") from None
    except ValueError as e:
        raise InvalidArgument(f"{where} does not compile: {e}") from None
    if entry not in _defined_names(tree):
        raise InvalidArgument(f"entry {entry!r} is not defined at the top "
                              f"level of {where}")


def plan_of(opts) -> Plan:
    if opts.attempts < -1 or opts.attempts > MAX_ATTEMPTS:
        raise InvalidArgument(f"attempts {opts.attempts} is out of range "
                              f"(-1 to {MAX_ATTEMPTS})")
    if opts.restart not in pb.RestartPolicy.values():
        raise InvalidArgument(f"unknown restart policy {opts.restart}")
    restart = opts.restart or NEVER
    low = opts.backoff_min_ms or DEFAULT_BACKOFF_MIN_MS
    high = opts.backoff_max_ms or max(low, DEFAULT_BACKOFF_MAX_MS)
    if high < low:
        raise InvalidArgument(f"backoff_max_ms {high} is below backoff_min_ms "
                              f"{low}")
    if opts.rate_per_second < 0:
        raise InvalidArgument(f"rate_per_second {opts.rate_per_second} is "
                              "negative")
    attempts = opts.attempts or (1 if restart == NEVER else 0)
    return Plan(
        attempts=attempts, backoff_min=low / 1e3, backoff_max=high / 1e3,
        timeout=opts.timeout_ms / 1e3 if opts.timeout_ms else None,
        restart=restart, env=dict(opts.env), limits=limits_of(opts),
        max_concurrency=opts.max_concurrency,
        rate_per_second=opts.rate_per_second,
    )


def limits_of(opts) -> dict:
    limits = {}
    for name in ("memory_bytes", "cpu_seconds", "max_processes"):
        if getattr(opts, name):
            limits[name] = getattr(opts, name)
    return limits


@handler("Spawn")
def spawn(kernel, tenant, req, body):
    sup = _supervisor(kernel)
    source, entry, name = executable(tenant, req.executable)
    plan = plan_of(req.options)
    proc, existing = sup.spawn(tenant, name, source, entry, req.args, plan,
                               req.options.idempotency_key)
    if kernel.journal is not None and not existing:
        kernel.journal.process_spawned(tenant.name, proc)
    if existing or proc.first_start.done():
        return pb.SpawnResponse(pid=proc.pid, warm=proc.warm, existing=existing)
    return _spawned(proc)


async def _spawned(proc):
    warm = await proc.first_start
    return pb.SpawnResponse(pid=proc.pid, warm=warm)


@handler("WaitProcess")
def wait_process(kernel, tenant, req, body):
    proc = _supervisor(kernel).get(tenant, req.pid)
    if proc.ended.is_set() or not req.timeout_ms:
        return pb.WaitProcessResponse(process=proc.info(),
                                      ended=proc.ended.is_set())
    return _waited(kernel.procs, proc, req.timeout_ms / 1e3)


async def _waited(sup, proc, timeout: float):
    ended = await sup.wait(proc, timeout)
    return pb.WaitProcessResponse(process=proc.info(), ended=ended)


@handler("KillProcess")
def kill_process(kernel, tenant, req, body):
    sup = _supervisor(kernel)
    proc = sup.get(tenant, req.pid)
    sig = req.signal or signal.SIGTERM
    if not 1 <= sig < signal.NSIG:
        raise InvalidArgument(f"signal {req.signal} is not a signal number")
    sup.kill(proc, sig)
    return pb.KillProcessResponse()


@handler("ListProcesses")
def list_processes(kernel, tenant, req, body):
    if req.state not in pb.ProcessState.values():
        raise InvalidArgument(f"unknown process state {req.state}")
    procs, token = _supervisor(kernel).list(tenant, req.state, req.page_size,
                                            req.page_token)
    return pb.ListProcessesResponse(processes=[p.info() for p in procs],
                                    next_page_token=token)


@handler("ReadProcessLogs")
def read_process_logs(kernel, tenant, req, body):
    proc = _supervisor(kernel).get(tenant, req.pid)
    return _logs(proc, req.offset, req.follow)


async def _logs(proc, offset: int, follow: bool):
    log = proc.log
    offset = max(offset, log.start)
    while True:
        for stream, data, end in log.read(offset):
            yield pb.ReadProcessLogsResponse(stream=stream, data=data, offset=end)
            offset = end
        if not follow or log.closed:
            return
        await log.changed()


@handler("SetWarmPool")
def set_warm_pool(kernel, tenant, req, body):
    sup = _supervisor(kernel)
    source, _, name = executable(tenant, req.executable)
    limits = limits_of(req.options)
    cap = tenant.quotas.max_processes
    if req.count > cap:
        raise InvalidArgument(f"count {req.count} is over the tenant's "
                              f"max_processes of {cap}")
    sup.pools.set_target(tenant, source, name, limits, req.count)
    return pb.SetWarmPoolResponse()
