"""Tenants: who may call, what they hold, what they may use and what they used.

Theory of operation. A tenant owns its own queue store and blob store, so a
handler reaches only the caller's objects: names are per tenant by
construction, and no call can name, list or detect another tenant's objects.
Tokens, and the CURVE public keys of tenants that connect with CURVE, are
looked up by their SHA-256 digest and then compared in constant time, so
neither the lookup nor the comparison leaks a prefix of a credential.
Usage counters only grow, except `bytes_stored`, which the stores report.
"""

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field, fields

from nubis.blob import BlobLimits, BlobStore
from nubis.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from nubis.queue import QueueLimits, QueueStore

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass
class Quotas:
    """Per-tenant limits; each breach answers RESOURCE_EXHAUSTED."""

    max_bytes_stored: int = 1 << 30
    max_queues: int = 1000
    max_message_bytes: int = 256 * 1024
    max_queue_depth: int = 1_000_000
    max_blob_bytes: int = 1 << 30
    calls_per_second: int = 0          # 0: unlimited
    max_processes: int = 64
    max_connections: int = 1024

    @classmethod
    def from_mapping(cls, values: dict, where: str) -> "Quotas":
        known = {f.name for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise InvalidArgument(f"{where}: unknown quota {key!r}")
            if not isinstance(value, int) or value < 0:
                raise InvalidArgument(f"{where}: quota {key} must be an integer "
                                      f">= 0, got {value!r}")
        return cls(**{k: v for k, v in values.items() if v})


@dataclass
class Usage:
    """What a tenant used, as counters."""

    calls: dict = field(default_factory=dict)     # call key -> [count, errors]
    bytes_in: int = 0
    bytes_out: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    messages_acked: int = 0
    # Cloud processes: CPU seconds their workers used, and how many ran.
    cpu_user_seconds: float = 0.0
    cpu_system_seconds: float = 0.0
    processes: int = 0
    # LISTEN: connections accepted and refused, bytes relayed each way.
    connections: int = 0
    connections_refused: int = 0
    relay_bytes_in: int = 0
    relay_bytes_out: int = 0


class TokenBucket:
    """A rate limit: `rate` calls a second on average, bursts up to `burst`."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = time.monotonic()
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class Tenant:
    __slots__ = ("name", "admin", "quotas", "ports", "queues", "blobs", "usage",
                 "bucket")

    def __init__(self, name: str, quotas: Quotas, admin: bool = False,
                 ports: tuple = (), clock=None):
        self.name = name
        self.admin = admin
        self.quotas = quotas
        self.ports = ports
        self.queues = QueueStore(QueueLimits(
            max_queues=quotas.max_queues,
            max_depth=quotas.max_queue_depth,
            max_message_bytes=quotas.max_message_bytes,
            max_bytes=quotas.max_bytes_stored,
        ), *((clock, clock) if clock else ()))
        self.blobs = BlobStore(BlobLimits(
            max_bytes=quotas.max_bytes_stored,
            max_blob_bytes=quotas.max_blob_bytes,
        ), *((clock,) if clock else ()))
        self.usage = Usage()
        rate = quotas.calls_per_second
        self.bucket = TokenBucket(rate, max(1.0, float(rate))) if rate else None

    def __repr__(self) -> str:
        return f"<Tenant {self.name}>"

    @property
    def bytes_stored(self) -> int:
        return self.queues.bytes_stored + self.blobs.bytes_stored


def parse_ports(specs, where: str) -> tuple:
    """Port ranges from "8000-8099" or "8080" strings, as (lo, hi) pairs."""
    ranges = []
    for spec in specs:
        lo, _, hi = str(spec).partition("-")
        try:
            lo_port, hi_port = int(lo), int(hi or lo)
        except ValueError:
            raise InvalidArgument(f"{where}: bad port range {spec!r}") from None
        if not 1 <= lo_port <= hi_port <= 65535:
            raise InvalidArgument(f"{where}: bad port range {spec!r}")
        ranges.append((lo_port, hi_port))
    return tuple(ranges)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TenantRegistry:
    """The kernel's tenants by name and by token."""

    def __init__(self, clock=None):
        self.by_name: dict[str, Tenant] = {}
        self._by_digest: dict[bytes, tuple[Tenant, bytes]] = {}
        self._by_curve_key: dict[bytes, tuple[Tenant, bytes]] = {}
        # The clock of the tenants' stores (None: their defaults), and a
        # function called with each tenant added (the journal wraps stores).
        self.clock = clock
        self.on_add = None

    def add(self, name: str, token: str = "", quotas: Quotas | None = None,
            admin: bool = False, ports: tuple = ()) -> tuple[Tenant, str]:
        """Add a tenant; returns it and its token (made up if none given)."""
        if not NAME_RE.match(name or ""):
            raise InvalidArgument(f"bad tenant name {name!r}: use 1-63 of a-z, "
                                  "0-9, _ and -, starting with a letter")
        if name in self.by_name:
            raise AlreadyExists(f"tenant {name!r} already exists")
        token = token or secrets.token_urlsafe(24)
        if len(token) < 8:
            raise InvalidArgument(f"token of tenant {name!r} is shorter than 8")
        digest = _digest(token)
        if digest in self._by_digest:
            raise AlreadyExists(f"tenant {name!r}: token already in use")
        tenant = Tenant(name, quotas or Quotas(), admin, ports, self.clock)
        self.by_name[name] = tenant
        self._by_digest[digest] = (tenant, token.encode())
        if self.on_add is not None:
            self.on_add(tenant)
        return tenant, token

    def remove(self, name: str) -> Tenant:
        tenant = self.by_name.pop(name, None)
        if tenant is None:
            raise NotFound(f"tenant {name!r} not found")
        for table in (self._by_digest, self._by_curve_key):
            for digest, (t, _) in list(table.items()):
                if t is tenant or getattr(t, "tenant", None) is tenant:
                    del table[digest]
        return tenant

    def add_curve_key(self, tenant, public_key: bytes) -> None:
        """Let `tenant` connect with CURVE using this 32-byte public key."""
        digest = hashlib.sha256(public_key).digest()
        if digest in self._by_curve_key:
            raise AlreadyExists(f"tenant {tenant.name!r}: CURVE key already in "
                                "use")
        self._by_curve_key[digest] = (tenant, public_key)

    def add_token(self, tenant, token: str) -> None:
        """Accept one more token for `tenant` (or a view of it, as for a
        cloud process's worker) until it is revoked."""
        digest = _digest(token)
        if digest in self._by_digest:
            raise AlreadyExists("token already in use")
        self._by_digest[digest] = (tenant, token.encode())

    def revoke_token(self, token: str) -> None:
        """Forget a token added with add_token."""
        self._by_digest.pop(_digest(token), None)

    def authenticate(self, token: str) -> Tenant:
        """The tenant holding this token; UNAUTHENTICATED if none does."""
        if not token:
            raise Unauthenticated("missing token")
        given = token.encode()
        entry = self._by_digest.get(hashlib.sha256(given).digest())
        if entry is None or not hmac.compare_digest(entry[1], given):
            raise Unauthenticated("invalid token")
        return entry[0]

    def authenticate_curve(self, public_key: bytes) -> Tenant:
        """The tenant of a CURVE client's 32-byte public key."""
        entry = self._by_curve_key.get(hashlib.sha256(public_key).digest())
        if entry is None or not hmac.compare_digest(entry[1], public_key):
            raise Unauthenticated("unknown CURVE public key")
        return entry[0]
