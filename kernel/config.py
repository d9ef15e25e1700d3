"""Kernel configuration: defaults, then environment, then a TOML file, then flags.

Each later source overrides the earlier ones, so a flag beats the file and
the file beats the environment. The TOML file looks like::

    [kernel]
    zmq = ["ipc:///run/nubis/kernel.sock", "tcp://127.0.0.1:7701"]
    grpc = "127.0.0.1:7700"
    max_message_bytes = 8388608

    [tenants.acme]
    token = "a long random string"
    ports = ["8000-8099"]
    quotas = { max_queues = 100, max_bytes_stored = 1073741824 }

    [tenants.ops]
    token = "another long random string"
    admin = true

    [tenants.edge]
    curve_public_key = "the tenant's CURVE public key (nubis keygen)"

With `curve_secret_key` set, the tcp:// ZeroMQ endpoints use CURVE and
tenants authenticate there by their `curve_public_key`; with
`grpc_tls_cert` and `grpc_tls_key` set, gRPC is served over TLS.

With no tenants configured the kernel makes a `demo` tenant whose token is
$NUBIS_TOKEN or a random one, written to `demo.token` in the runtime folder.
"""

import os
import tomllib
from dataclasses import dataclass, field, fields

from nubis import security
from nubis.errors import InvalidArgument
from nubis.tenants import Quotas, parse_ports

# The user-space HTTP service (nubis.services.http) and the ASGI framework
# most applications use; see `spawn_preload`.
SPAWN_PRELOAD = (
    "uvloop", "httptools", "nubis.services.listen", "nubis.services.http",
    "nubis.services.console", "starlette.applications", "starlette.routing",
    "starlette.responses", "starlette.requests",
)


def runtime_dir() -> str:
    """A private folder for the kernel's sockets and the demo token."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(base, f"nubis-{os.getuid()}")


def default_zmq() -> list[str]:
    return [f"ipc://{runtime_dir()}/kernel.sock", "tcp://127.0.0.1:7701"]


@dataclass
class TenantConfig:
    name: str
    token: str = ""
    admin: bool = False
    curve_public_key: bytes = b""   # Z85; authenticates on CURVE endpoints
    ports: tuple = ()
    quotas: Quotas = field(default_factory=Quotas)


@dataclass
class KernelConfig:
    zmq: list = field(default_factory=default_zmq)
    grpc: str = "127.0.0.1:7700"
    # Largest message either transport accepts; bigger blobs are streamed
    # in chunks of chunk_bytes.
    max_message_bytes: int = 8 << 20
    chunk_bytes: int = 1 << 20
    # Largest object a streamed put may assemble (also capped per tenant).
    max_stream_bytes: int = 2 << 30
    log_level: str = "INFO"
    # Network security (nubis.security). TLS for gRPC: PEM file paths; a
    # client CA makes it mutual TLS. CURVE for the tcp:// ZeroMQ endpoints:
    # Z85 keys or key file paths (the public key is derived if left out);
    # ipc:// endpoints keep PLAIN, protected by the socket file's folder.
    grpc_tls_cert: str = ""
    grpc_tls_key: str = ""
    grpc_tls_client_ca: str = ""
    curve_secret_key: str = ""
    curve_public_key: str = ""
    # Cloud processes (SPAWN): off with spawn = false or without ZeroMQ.
    spawn: bool = True
    proc_dir: str = ""              # where the worker folder goes; "" = /tmp
    proc_uid_base: int = 200000     # tenant N runs as uid base + N (as root)
    proc_idle_seconds: int = 30     # idle workers beyond warm targets retire
    proc_concurrency: int = 16      # processes running at once per tenant
    proc_history: int = 1000        # ended processes kept per tenant
    proc_log_bytes: int = 1 << 20   # captured output kept per process
    proc_max_processes: int = 256   # RLIMIT_NPROC per tenant user id
    proc_open_files: int = 256      # RLIMIT_NOFILE per worker
    proc_file_bytes: int = 64 << 20  # RLIMIT_FSIZE per worker
    # Modules the zygote imports besides its own list, so that workers under
    # a tenant's user id can use them when the Python installation is not
    # readable by other users; a missing one is skipped (logged at INFO).
    spawn_preload: list = field(default_factory=lambda: list(SPAWN_PRELOAD))
    # LISTEN (nubis.net): where ports are bound, and the defaults and upper
    # bounds of each listener's limits (a tenant may ask for less).
    listen_host: str = "127.0.0.1"
    listen_backlog: int = 128           # connections waiting for a process
    listen_backlog_seconds: int = 5     # ... for at most this long
    listen_idle_seconds: int = 300      # no bytes either way: closed
    listen_slow_seconds: int = 30       # a request dribbling in this long ...
    listen_min_rate: int = 64           # ... under this many bytes/s: closed
    listen_window_bytes: int = 256 << 10  # relay: unacknowledged bytes
    # The ports of the `demo` tenant made when no tenants are configured.
    demo_ports: list = field(default_factory=lambda: ["8000-8099"])
    # The journal (nubis.journal): with a data_dir, acknowledged changes
    # survive a crash as far as the fsync policy says (always, everysec,
    # none); without one, or with none, the kernel keeps everything in RAM.
    data_dir: str = ""
    fsync: str = "always"
    journal_compact_bytes: int = 64 << 20   # snapshot past this; 0: never
    tenants: list = field(default_factory=list)

    def set(self, key: str, value, where: str) -> None:
        """Set one kernel option by name, checking its type."""
        known = {f.name: f for f in fields(self) if f.name != "tenants"}
        if key not in known:
            raise InvalidArgument(f"{where}: unknown kernel option {key!r}")
        current = getattr(self, key)
        if isinstance(current, list):
            value = [value] if isinstance(value, str) else list(value)
        elif isinstance(current, int) and not isinstance(value, int):
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise InvalidArgument(
                    f"{where}: {key} must be an integer, got {value!r}"
                ) from None
        if key == "fsync" and value not in FSYNC_POLICIES:
            raise InvalidArgument(f"{where}: fsync must be one of "
                                  f"{', '.join(FSYNC_POLICIES)}, got {value!r}")
        setattr(self, key, value)


FSYNC_POLICIES = ("always", "everysec", "none")

ENV = {
    "NUBIS_ZMQ": "zmq",
    "NUBIS_GRPC": "grpc",
    "NUBIS_MAX_MESSAGE_BYTES": "max_message_bytes",
    "NUBIS_LOG_LEVEL": "log_level",
    "NUBIS_DATA_DIR": "data_dir",
    "NUBIS_FSYNC": "fsync",
    "NUBIS_GRPC_TLS_CERT": "grpc_tls_cert",
    "NUBIS_GRPC_TLS_KEY": "grpc_tls_key",
    "NUBIS_GRPC_TLS_CLIENT_CA": "grpc_tls_client_ca",
    # Not NUBIS_CURVE_*: those name a client's (tenant's) keys.
    "NUBIS_KERNEL_CURVE_SECRET_KEY": "curve_secret_key",
    "NUBIS_KERNEL_CURVE_PUBLIC_KEY": "curve_public_key",
}


def load(path: str | None = None, overrides: dict | None = None,
         environ=os.environ) -> KernelConfig:
    """The configuration from the environment, a TOML file and overrides.

    Key material is loaded and checked here too, so that bad keys stop a
    kernel at boot with INVALID_ARGUMENT naming the option.
    """
    config = KernelConfig()
    for var, key in ENV.items():
        if environ.get(var):
            value = environ[var]
            if key == "zmq":
                value = [v for v in value.split(",") if v]
            config.set(key, value, f"${var}")

    path = path or environ.get("NUBIS_CONFIG")
    if path:
        load_file(config, path)

    for key, value in (overrides or {}).items():
        if value is not None:
            config.set(key, value, f"--{key.replace('_', '-')}")
    security.check(config)
    return config


def load_file(config: KernelConfig, path: str) -> None:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise InvalidArgument(f"cannot read config {path!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"config {path!r} is not valid TOML: {e}") from None

    unknown = set(data) - {"kernel", "tenants"}
    if unknown:
        raise InvalidArgument(f"{path}: unknown sections {sorted(unknown)}")
    for key, value in data.get("kernel", {}).items():
        config.set(key, value, f"{path} [kernel]")
    for name, entry in data.get("tenants", {}).items():
        config.tenants.append(tenant_from_toml(name, entry, f"{path} [tenants.{name}]"))


def tenant_from_toml(name: str, entry: dict, where: str) -> TenantConfig:
    unknown = set(entry) - {"token", "admin", "ports", "quotas",
                            "curve_public_key"}
    if unknown:
        raise InvalidArgument(f"{where}: unknown keys {sorted(unknown)}")
    token = entry.get("token", "")
    if not isinstance(token, str):
        raise InvalidArgument(f"{where}: token must be a string")
    curve = entry.get("curve_public_key", "")
    return TenantConfig(
        name=name,
        token=token,
        admin=bool(entry.get("admin", False)),
        curve_public_key=security.curve_key(curve, f"{where} curve_public_key")
        if curve else b"",
        ports=parse_ports(entry.get("ports", []), where),
        quotas=Quotas.from_mapping(entry.get("quotas", {}), where),
    )
