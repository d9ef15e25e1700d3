"""`nubis spawn`, `ps`, `wait`, `kill`, `logs`: cloud processes from a terminal."""

import sys

import click

from nubis.cli.output import calls_kernel, emit, fail, table
from nubis.v1 import spawn_pb2 as pb

WAIT_STEP = 20.0


def _state(value: int) -> str:
    return pb.ProcessState.Name(value).removeprefix("PROCESS_STATE_")


def _summary(info) -> str:
    if info.state == pb.PROCESS_STATE_SUCCEEDED:
        return info.result.decode(errors="replace")
    text = f"{info.pid} {_state(info.state)} after {info.attempts} attempt(s)"
    if info.error:
        text += f": {info.error}"
    return text


def _wait(client, pid: str, timeout: float | None):
    """Wait in steps, so any timeout (or none) works over any transport."""
    while True:
        step = WAIT_STEP if timeout is None else min(WAIT_STEP, timeout)
        reply = client.spawn.wait(pid, step)
        if reply.ended or timeout is not None and timeout <= step:
            return reply
        if timeout is not None:
            timeout -= step


@click.command()
@click.argument("target", metavar="FILE:FUNC")
@click.argument("args", default="")
@click.option("--name", default="", help="Name for listings and limits.")
@click.option("--attempts", type=int, default=0, help="-1: until success.")
@click.option("--timeout-s", type=float, default=0, help="Per attempt, seconds.")
@click.option("--cpu", type=int, default=0, help="CPU seconds limit.")
@click.option("--memory", type=int, default=0, help="Address space, bytes.")
@click.option("--restart", type=click.Choice(["never", "on-failure", "always"]),
              default="never")
@click.option("--key", default="", help="Idempotency key.")
@click.option("--env", multiple=True, help="NAME=VALUE (repeat).")
@click.option("--wait", "wait_", is_flag=True, help="Wait; print the result.")
@click.pass_context
@calls_kernel
def spawn(ctx, target, args, name, attempts, timeout_s, cpu, memory, restart,
          key, env, wait_):
    """Run FUNC of the Python file FILE as a cloud process, with ARGS."""
    path, _, func = target.rpartition(":")
    if not path or not func:
        fail(f"expected FILE:FUNC, got {target!r}", 2)
    try:
        with open(path) as f:
            source = f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}", 2)
    pairs = dict(e.partition("=")[::2] for e in env)
    client = ctx.obj.client()
    reply = client.spawn.spawn(
        func, source, args.encode(), name=name, attempts=attempts,
        timeout_s=timeout_s, cpu_seconds=cpu, memory_bytes=memory,
        restart=restart, idempotency_key=key, env=pairs)
    if not wait_:
        emit(ctx, reply, f"{reply.pid} {'warm' if reply.warm else 'cold'}"
             + (" (existing)" if reply.existing else ""))
        return
    info = _wait(client, reply.pid, None).process
    emit(ctx, info, _summary(info))
    if info.state != pb.PROCESS_STATE_SUCCEEDED:
        sys.exit(1)


@click.command()
@click.option("--state", type=click.Choice(
    ["pending", "running", "backoff", "succeeded", "failed", "killed"]),
    help="Only processes in this state (failed: the dead letters).")
@click.pass_context
@calls_kernel
def ps(ctx, state):
    """List cloud processes, newest first, with their usage."""
    client = ctx.obj.client()
    value = pb.ProcessState.Value(f"PROCESS_STATE_{state.upper()}") if state else 0
    procs, token = [], ""
    while True:
        page = client.spawn.list(value, page_token=token)
        procs += page.processes
        token = page.next_page_token
        if not token:
            break
    emit(ctx, procs, table(
        [[p.pid, p.name, _state(p.state), p.attempts, p.exit_code,
          "warm" if p.warm else "cold",
          f"{p.usage.cpu_user_seconds + p.usage.cpu_system_seconds:.2f}",
          p.usage.peak_memory_bytes >> 20, f"{p.usage.wall_seconds:.2f}",
          p.error[:40]] for p in procs],
        ["PID", "NAME", "STATE", "ATTEMPTS", "EXIT", "START", "CPU(s)", "MEM(MiB)",
         "WALL(s)", "ERROR"]) if procs else "")


@click.command("wait")
@click.argument("pid")
@click.option("--timeout", "timeout_", type=float, default=None,
              help="Seconds to wait; default: until it ends.")
@click.pass_context
@calls_kernel
def wait_cmd(ctx, pid, timeout_):
    """Wait for process PID to end; print its result or error."""
    reply = _wait(ctx.obj.client(), pid, timeout_)
    info = reply.process
    emit(ctx, reply, _summary(info) if reply.ended
         else f"{pid} still {_state(info.state)}")
    if not reply.ended or info.state != pb.PROCESS_STATE_SUCCEEDED:
        if not ctx.obj.get("json") and info.traceback:
            click.echo(info.traceback, err=True)
        sys.exit(1)


@click.command()
@click.argument("pid")
@click.option("--signal", "sig", type=int, default=0, help="Default SIGTERM.")
@click.pass_context
@calls_kernel
def kill(ctx, pid, sig):
    """Signal process PID and stop its retries."""
    ctx.obj.client().spawn.kill(pid, sig)


@click.command()
@click.argument("pid")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until it ends.")
@click.option("--offset", type=int, default=0)
@click.pass_context
@calls_kernel
def logs(ctx, pid, follow, offset):
    """Print the captured stdout and stderr of process PID."""
    client = ctx.obj.client()
    timeout = None if follow else client.timeout
    for chunk in client.spawn.logs(pid, offset=offset, follow=follow,
                                   timeout=timeout):
        out = sys.stderr if chunk.stream == pb.LOG_STREAM_STDERR else sys.stdout
        out.buffer.write(chunk.data) if hasattr(out, "buffer") else out.write(
            chunk.data.decode(errors="replace"))
        out.flush()


COMMANDS = (spawn, ps, wait_cmd, kill, logs)
