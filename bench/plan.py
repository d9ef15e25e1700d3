"""What a run measures: the table of operations, the options, and the cases.

Every operation the suite can time is one row of `OPS`: the system that
serves it (the Nubis kernel, a bare echo floor, or a peer), its name, the
transports and the modes it runs in, and whether it has a blocking client.
A run is the cross product of the chosen calls, transports, payloads and
modes, each Nubis case joined by the floor of its transport and by the
peers, so that every ratio in the report divides two figures of one run.
"""

from dataclasses import asdict, dataclass, replace

TRANSPORTS = ("zmq+ipc", "zmq+tcp", "grpc")
MODES = ("closed", "pipelined", "processes", "open")
CALLS = ("blob.put", "blob.get", "blob.head",
         "queue.send", "queue.receive", "queue.ack")
ALL_MODES = frozenset(MODES)
BLOCKING_MODES = frozenset(("closed", "processes"))
NO_OPEN = frozenset(("closed", "pipelined", "processes"))

# The in-kernel histogram of each call, as GetCallStats names it.
KERNEL_STAT = {
    "blob.put": "blob.PutBlob",
    "blob.get": "blob.GetBlob",
    "blob.head": "blob.HeadBlob",
    "queue.send": "queue.SendMessages",
    "queue.receive": "queue.ReceiveMessages",
    "queue.ack": "queue.AckMessages",
}

# The peer operation each call is compared with (p50 against p50).
REDIS_PEER = {"blob.get": "GET", "blob.head": "GET", "blob.put": "SET",
              "queue.send": "LPUSH", "queue.receive": "RPOP"}
NATS_PEER = "request"

MAX_PAYLOAD = 4 << 20


@dataclass(frozen=True)
class Op:
    """One timed operation: a row of the table below."""

    system: str          # nubis, pyzmq, grpcio, redis, nats
    name: str            # blob.get, echo, GET, request, js.publish, ...
    kind: str            # call (the kernel), floor, or peer
    transports: tuple    # where it runs; peers use "tcp"
    modes: frozenset     # the modes its client supports
    blocking: bool       # has a blocking client for the closed loop


OPS = (
    *(Op("nubis", c, "call", TRANSPORTS, ALL_MODES, True) for c in CALLS),
    Op("pyzmq", "echo", "floor", ("zmq+ipc", "zmq+tcp"), ALL_MODES, True),
    Op("grpcio", "echo", "floor", ("grpc",), ALL_MODES, True),
    # redis-py keeps one command in flight per connection (several only as
    # a batch), so Redis runs the modes with one call in flight per client.
    Op("redis", "SET", "peer", ("tcp",), BLOCKING_MODES, True),
    Op("redis", "GET", "peer", ("tcp",), BLOCKING_MODES, True),
    Op("redis", "LPUSH", "peer", ("tcp",), BLOCKING_MODES, True),
    Op("redis", "RPOP", "peer", ("tcp",), BLOCKING_MODES, True),
    Op("nats", "request", "peer", ("tcp",), ALL_MODES, False),
    Op("nats", "js.publish", "peer", ("tcp",), NO_OPEN, False),
    Op("nats", "js.fetch", "peer", ("tcp",), NO_OPEN, False),
    Op("nats", "js.ack", "peer", ("tcp",), NO_OPEN, False),
)
BY_KEY = {(op.system, op.name): op for op in OPS}
FLOOR_OF = {"zmq+ipc": "pyzmq", "zmq+tcp": "pyzmq", "grpc": "grpcio"}
PEER_SYSTEMS = ("redis", "nats")


@dataclass(frozen=True)
class Options:
    """The knobs of a run; `nubis bench --help` describes each."""

    transports: tuple = TRANSPORTS
    calls: tuple = CALLS
    payloads: tuple = (64,)
    modes: tuple | None = None      # None: closed plus one pipelined case
    rate: float = 2000.0            # open loop: offered calls per second
    depth: int = 32                 # pipelined: calls in flight
    processes: int = 4              # processes: client processes
    duration: float = 4.0           # timed seconds per case
    warmup: float | None = None     # untimed seconds before; None: derived
    out: str = "bench-out"
    memory_messages: int = 1_000_000
    peers: bool = True

    def warmup_seconds(self) -> float:
        if self.warmup is not None:
            return self.warmup
        return min(0.5, self.duration / 4)

    def as_dict(self) -> dict:
        return asdict(self)


QUICK = dict(duration=0.3, warmup=0.1, memory_messages=100_000)


def quick(options: Options) -> Options:
    """The smoke-run variant of `options` (about 20 seconds in all)."""
    return replace(options, **QUICK)


@dataclass(frozen=True)
class Case:
    """One measurement: an op, where, with what, and how."""

    system: str
    name: str
    transport: str
    payload: int
    mode: str
    depth: int = 1
    processes: int = 1
    rate: float = 0.0
    duration: float = 1.0
    warmup: float = 0.2

    @property
    def op(self) -> Op:
        return BY_KEY[(self.system, self.name)]

    @property
    def compare_key(self) -> tuple:
        """What must match for two cases to be compared."""
        return (self.mode, self.depth, self.processes, self.rate, self.payload)

    def label(self) -> str:
        return (f"{self.system} {self.name} {self.transport} "
                f"{format_size(self.payload)} {mode_label(self)}")

    def as_dict(self) -> dict:
        return asdict(self)


def mode_label(case) -> str:
    if case.mode == "pipelined":
        return f"pipelined x{case.depth}"
    if case.mode == "processes":
        return f"processes x{case.processes}"
    if case.mode == "open":
        return f"open @{case.rate:g}/s"
    return case.mode


def format_size(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def parse_size(text: str) -> int:
    """Bytes from "64", "4K", "4KiB", "1M", "1MiB"; ValueError names the text."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = 1
    if value[-1:] in ("K", "M"):
        scale = 1 << (10 if value[-1] == "K" else 20)
        value = value[:-1]
    try:
        n = int(value) * scale
    except ValueError:
        raise ValueError(f"payload {text!r} is not a size such as 64, 4K "
                         "or 1MiB") from None
    if not 1 <= n <= MAX_PAYLOAD:
        raise ValueError(f"payload {text!r} is out of range: 1 B to "
                         f"{format_size(MAX_PAYLOAD)}")
    return n


def plan(options: Options, peers_ok: dict) -> list[Case]:
    """The cases of a run, by mode, payload and transport, peers last.

    `peers_ok` maps a peer system to whether it can run. With no modes
    given, the run is the closed loop plus one pipelined case: blob.get
    over zmq+ipc (or the first call and transport chosen) and its floor.
    """
    modes = options.modes or ("closed",)
    cases = []
    for mode in modes:
        for payload in options.payloads:
            cases += _matrix(options, mode, payload, options.calls,
                             options.transports, peers_ok)
    if options.modes is None:
        call = "blob.get" if "blob.get" in options.calls else options.calls[0]
        transport = ("zmq+ipc" if "zmq+ipc" in options.transports
                     else options.transports[0])
        cases += _matrix(options, "pipelined", options.payloads[0], (call,),
                         (transport,), {})
    return cases


def _matrix(options, mode, payload, calls, transports, peers_ok) -> list[Case]:
    shape = dict(payload=payload, mode=mode, duration=options.duration,
                 warmup=options.warmup_seconds())
    if mode == "pipelined":
        shape["depth"] = options.depth
    elif mode == "processes":
        shape["processes"] = options.processes
    elif mode == "open":
        shape["rate"] = options.rate

    # Each floor runs right before the calls over its transport, so that a
    # change in the machine's load between cases skews their ratios least.
    cases = []
    for transport in transports:
        cases.append(Case(FLOOR_OF[transport], "echo", transport, **shape))
        cases += [Case("nubis", call, transport, **shape) for call in calls]
    return cases + [Case(op.system, op.name, "tcp", **shape) for op in OPS
                    if op.kind == "peer" and peers_ok.get(op.system)
                    and mode in op.modes]
