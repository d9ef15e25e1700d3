"""`nubis`: run a kernel, and make cloud calls from a terminal.

Each subcommand opens a client from --url/--token (or $NUBIS_URL and
$NUBIS_TOKEN, or the local kernel's defaults), makes its calls and prints
the result; --json prints machine-readable output. A failed call prints its
status code and message and exits with status 1.
"""

import logging
import sys

import click

from nubis.cli.output import calls_kernel, emit, fail
from nubis.errors import NubisError
from nubis.version import __version__


class State(dict):
    """Global options, and the client opened on first use."""

    def client(self):
        if "client" not in self:
            from nubis.client import Client

            self["client"] = Client(self.get("url"), self.get("token"),
                                    timeout=self.get("timeout"))
        return self["client"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nubis")
@click.option("--url", envvar="NUBIS_URL", help="Kernel URL: zmq+ipc:///PATH, "
              "zmq+tcp://HOST:PORT, grpc://HOST:PORT or grpcs://HOST:PORT (TLS; "
              "CA in $NUBIS_TLS_CA).  [env: NUBIS_URL]")
@click.option("--token", envvar="NUBIS_TOKEN",
              help="Tenant token.  [env: NUBIS_TOKEN]")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Deadline of each call, in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def main(ctx, url, token, timeout, as_json):
    """Nubis: a minimal cloud operating system kernel.

    LISTEN, SPAWN, QUEUE and BLOB as cloud calls over gRPC and ZeroMQ.
    """
    ctx.obj = State(url=url, token=token, timeout=timeout, json=as_json)
    ctx.call_on_close(lambda: ctx.obj.get("client") and ctx.obj["client"].close())


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              envvar="NUBIS_CONFIG", help="TOML file.  [env: NUBIS_CONFIG]")
@click.option("--zmq", "zmq_endpoints", multiple=True,
              help="ZeroMQ endpoint to bind (repeat for several), e.g. "
              "ipc:///run/nubis.sock or tcp://127.0.0.1:7701.  [env: NUBIS_ZMQ]")
@click.option("--grpc", "grpc_address",
              help="gRPC address to bind, e.g. 127.0.0.1:7700.  [env: NUBIS_GRPC]")
@click.option("--no-grpc", is_flag=True, help="Serve ZeroMQ only.")
@click.option("--max-message-bytes", type=int, help="Largest message accepted.")
@click.option("--log-level", type=click.Choice(
    ["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="[env: NUBIS_LOG_LEVEL]")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Keep a journal here, so acknowledged changes survive a "
              "crash.  [env: NUBIS_DATA_DIR]")
@click.option("--fsync", type=click.Choice(["always", "everysec", "none"]),
              help="With --data-dir: reply after the change is on disk "
              "(always, the default), fsync once a second and lose up to "
              "about a second (everysec), or journal nothing (none).  "
              "[env: NUBIS_FSYNC]")
@click.option("--grpc-tls-cert", type=click.Path(dir_okay=False),
              help="Serve gRPC over TLS with this PEM certificate chain.  "
              "[env: NUBIS_GRPC_TLS_CERT]")
@click.option("--grpc-tls-key", type=click.Path(dir_okay=False),
              help="The PEM private key of --grpc-tls-cert.  "
              "[env: NUBIS_GRPC_TLS_KEY]")
@click.option("--grpc-tls-client-ca", type=click.Path(dir_okay=False),
              help="Mutual TLS: accept only client certificates this PEM CA "
              "signed.  [env: NUBIS_GRPC_TLS_CLIENT_CA]")
@click.option("--curve-secret-key", help="CURVE on the tcp:// ZeroMQ "
              "endpoints with this secret key (Z85, or a key file path; "
              "prefer a file, as flags are visible to other users).  "
              "[env: NUBIS_KERNEL_CURVE_SECRET_KEY]")
@click.option("--curve-public-key", help="The public key of "
              "--curve-secret-key (checked; derived when left out).  "
              "[env: NUBIS_KERNEL_CURVE_PUBLIC_KEY]")
def kernel(config_path, zmq_endpoints, grpc_address, no_grpc, max_message_bytes,
           log_level, data_dir, fsync, **security):
    """Boot a kernel in the foreground; SIGINT or SIGTERM stops it cleanly.

    Options come from flags, then the TOML file, then the environment. With
    no tenants configured it makes an admin tenant `demo` and writes its token
    where local clients find it.
    """
    from nubis import config, server

    overrides = {
        "zmq": list(zmq_endpoints) or None,
        "grpc": "" if no_grpc else grpc_address,
        "max_message_bytes": max_message_bytes,
        "log_level": log_level.upper() if log_level else None,
        "data_dir": data_dir,
        "fsync": fsync,
        **security,
    }
    try:
        cfg = config.load(config_path, overrides)
    except NubisError as e:
        fail(e.message, 2)
    logging.basicConfig(level=cfg.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server.run(cfg)
    except NubisError as e:
        fail(e.message, 2)
    except OSError as e:
        fail(str(e), 1)


@main.command()
@click.pass_context
def keygen(ctx):
    """Print a new CURVE keypair (Z85), for a kernel or a tenant.

    The kernel's pair goes in [kernel] of its config; a tenant keeps its
    secret key and the operator puts its public key under [tenants.NAME].
    """
    import zmq

    public, secret = zmq.curve_keypair()
    pair = {"curve_public_key": public.decode(), "curve_secret_key": secret.decode()}
    emit(ctx, pair, "\n".join(f'{k} = "{v}"' for k, v in pair.items()))


@main.command()
@click.pass_obj
@calls_kernel
def info(obj):
    """What this kernel is: version, uptime, endpoints, calls."""
    reply = obj.client().account.info()
    ctx = click.get_current_context()
    emit(ctx, reply, f"nubis {reply.version}, up {reply.uptime_seconds:.0f}s, "
         f"hot paths {reply.hot_paths}, tenant {reply.tenant}\n"
         + "\n".join(f"  {e}" for e in reply.endpoints))


@main.command()
@click.option("--tenant", default="", help="Admin: another tenant, or '*'.")
@click.pass_obj
@calls_kernel
def usage(obj, tenant):
    """What a tenant used: calls, bytes, messages."""
    emit(click.get_current_context(), obj.client().account.usage(tenant))


@main.command()
@click.option("--reset", is_flag=True, help="Clear the histograms after.")
@click.pass_obj
@calls_kernel
def stats(obj, reset):
    """In-kernel service time per cloud call, in microseconds."""
    from nubis.cli.output import table

    rows = obj.client().account.call_stats(reset=reset)
    emit(click.get_current_context(), rows, table(
        [[s.call, s.count, f"{s.p50_us:.1f}", f"{s.p99_us:.1f}",
          f"{s.p999_us:.1f}", f"{s.max_us:.1f}"] for s in rows],
        ["CALL", "COUNT", "P50", "P99", "P99.9", "MAX"]))


def run() -> None:
    main(prog_name="nubis")


def _register() -> None:
    # nubis.bench.cli imports click only; the suite loads when `bench` runs.
    from nubis.bench.cli import bench
    from nubis.cli import blob, listen, queue, spawn, tenant

    main.add_command(blob.blob)
    main.add_command(queue.queue)
    main.add_command(tenant.tenant)
    main.add_command(listen.listen)
    for command in spawn.COMMANDS:
        main.add_command(command)
    main.add_command(bench)
    from nubis.cli import mail, mapreduce

    main.add_command(mail.mail)
    main.add_command(mapreduce.mapreduce)
    from nubis.cli import http, up

    main.add_command(http.http)
    main.add_command(up.up)


_register()

if __name__ == "__main__":
    sys.exit(run())
