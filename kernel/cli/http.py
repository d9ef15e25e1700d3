"""`nubis http`: deploy ASGI/WSGI apps as HTTP daemons on a LISTEN port."""

import os

import click

from nubis.cli.output import calls_kernel, emit, fail, table


def _limits(pairs) -> dict:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            fail(f"--limit wants NAME=VALUE, got {pair!r}", 2)
        out[name.replace("-", "_")] = value
    return out


@click.group()
def http():
    """HTTP daemons: an ASGI or WSGI app served on a port, N processes."""


@http.command()
@click.argument("target", metavar="FILE[:APP]")
@click.option("--port", type=int, required=True, help="A port of the tenant's.")
@click.option("--processes", "-n", type=int, default=1, show_default=True,
              help="Daemon processes on the port, balanced by the kernel.")
@click.option("--name", default="", help="Deployment name; default: FILE's stem.")
@click.option("--wsgi", is_flag=True, help="APP is a WSGI app (else ASGI).")
@click.option("--mode", type=click.Choice(["handoff", "relay"]),
              default="handoff", show_default=True, help="How connections arrive.")
@click.option("--limit", "limits", multiple=True, metavar="NAME=VALUE",
              help="A daemon limit, e.g. request_timeout=10, max_inflight=64, "
              "max_body_bytes=1048576, access_log=false (repeat).")
@click.pass_context
@calls_kernel
def deploy(ctx, target, port, processes, name, wsgi, mode, limits):
    """Run the app APP (default `app`) of the Python file FILE on PORT."""
    from nubis.services.http import deploy as dep

    path, _, attr = target.partition(":")
    name = name or os.path.splitext(os.path.basename(path))[0].lower()
    try:
        with open(path) as f:
            source = f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}", 2)
    options = _limits(limits)
    if "access_log" in options:
        options["access_log"] = options["access_log"].lower() in ("1", "true", "yes")
    try:
        pids = dep.deploy(ctx.obj.client(), name, source, port, processes,
                          attr=attr or "app", interface="wsgi" if wsgi else "asgi",
                          mode=mode, limits=options, where=path)
    except ValueError as e:
        fail(str(e), 2)
    emit(ctx, {"name": name, "port": port, "pids": pids},
         f"{name}: http://127.0.0.1:{port}/ served by {' '.join(pids) or 'none'}")


@http.command()
@click.argument("name")
@click.argument("processes", type=int)
@click.pass_context
@calls_kernel
def scale(ctx, name, processes):
    """Run PROCESSES daemons of the deployment NAME (0 stops them all)."""
    from nubis.services.http import deploy as dep

    try:
        pids = dep.scale(ctx.obj.client(), name, processes)
    except ValueError as e:
        fail(str(e), 2)
    emit(ctx, {"name": name, "processes": processes, "started": pids},
         f"{name}: {processes} process(es); started {' '.join(pids) or 'none'}")


@http.command(name="ls")
@click.pass_context
@calls_kernel
def ls(ctx):
    """The tenant's deployments, their ports and live processes."""
    from nubis.services.http import deploy as dep

    rows = dep.deployments(ctx.obj.client())
    emit(ctx, rows, table(
        [[d["name"], d["port"], d["interface"], d["processes"],
          " ".join(d["live"]) or "-"] for d in rows],
        ["NAME", "PORT", "APP", "WANTED", "LIVE"]))


@http.command()
@click.argument("name")
@click.pass_context
@calls_kernel
def stop(ctx, name):
    """Stop the deployment NAME (its daemons drain) and give its port back."""
    from nubis.services.http import deploy as dep

    try:
        count = dep.stop(ctx.obj.client(), name)
    except ValueError as e:
        fail(str(e), 2)
    emit(ctx, {"name": name, "stopped": count},
         f"{name}: stopped {count} process(es)")
