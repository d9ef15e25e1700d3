"""`nubis listen`: the tenant's TCP ports, their processes and daemons."""

import importlib.util
import os

import click

from nubis.cli.output import calls_kernel, emit, fail, table
from nubis.errors import AlreadyExists
from nubis.v1 import listen_pb2 as pb


def _mode(value: int) -> str:
    return pb.CarryMode.Name(value).removeprefix("CARRY_MODE_").lower()


@click.group()
def listen():
    """TCP ports the kernel accepts for the tenant (LISTEN)."""


@listen.command("ls")
@click.pass_context
@calls_kernel
def ls(ctx):
    """Listeners, their attached processes and connection counts."""
    listeners = ctx.obj.client().listen.list()
    rows = []
    for info in listeners:
        rows.append([f"{info.host}:{info.port}", len(info.attached),
                     info.connections, info.backlog, info.accepted,
                     info.refused, info.timed_out])
        for a in info.attached:
            rows.append([f"  {a.pid}", _mode(a.mode), a.connections, "",
                         a.given, "", ""])
    emit(ctx, listeners, table(rows, ["LISTENER", "PROCESSES", "CONNECTIONS",
                                      "BACKLOG", "ACCEPTED", "REFUSED",
                                      "TIMED OUT"]))


@listen.command("open")
@click.argument("port", type=int)
@click.option("--host", default="", help="Loopback address to bind.")
@click.option("--idle", type=float, default=0, help="Idle timeout, seconds.")
@click.pass_context
@calls_kernel
def open_(ctx, port, host, idle):
    """Listen on PORT (from the tenant's port ranges)."""
    got = ctx.obj.client().listen.listen(port, host=host, idle_timeout=idle)
    emit(ctx, {"port": got}, f"listening on {got}")


@listen.command("close")
@click.argument("port", type=int)
@click.pass_context
@calls_kernel
def close(ctx, port):
    """Stop listening on PORT; its connections close."""
    ctx.obj.client().listen.unlisten(port)
    emit(ctx, {"port": port}, f"closed {port}")


@listen.command("run")
@click.argument("daemon")
@click.option("--port", type=int, required=True)
@click.option("--processes", type=int, default=1, show_default=True)
@click.option("--mode", type=click.Choice(["handoff", "relay"]),
              default="handoff", show_default=True)
@click.option("--entry", default="main", show_default=True)
@click.pass_context
@calls_kernel
def run(ctx, daemon, port, processes, mode, entry):
    """Spawn DAEMON (a file, or a module such as nubis.services.echo) as
    PROCESSES cloud processes serving PORT, restarted on failure."""
    source = _source(daemon)
    client = ctx.obj.client()
    try:
        client.listen.listen(port)
    except AlreadyExists:
        pass
    name = os.path.splitext(os.path.basename(daemon))[0].rpartition(".")[2]
    pids = [client.spawn.spawn(entry, source, f"{port} {mode}".encode(),
                               name=f"{name}-{port}", restart="on-failure").pid
            for _ in range(processes)]
    emit(ctx, {"pids": pids}, " ".join(pids))


def _source(daemon: str) -> str:
    path = daemon
    if not os.path.exists(path):
        try:
            spec = importlib.util.find_spec(daemon)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin:
            fail(f"no file or module named {daemon!r}", 2)
        path = spec.origin
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}", 2)
