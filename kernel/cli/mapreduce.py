"""`nubis mapreduce`: submit MapReduce jobs and watch their progress."""

import sys
import time

import click

from nubis.cli.output import calls_kernel, emit, fail, table

BAR = 30


def _bar(done: int, total: int) -> str:
    filled = BAR * done // total if total else BAR
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {done}/{total}"


def render(s) -> str:
    """A job's status as text: state, progress bars, counters."""
    lines = [f"job {s.job}: {s.state}, {s.elapsed:.1f}s, workers "
             f"{s.workers_running}/{s.workers} running, output {s.output}",
             f"  map     {_bar(s.maps_done, s.maps)}",
             f"  reduce  {_bar(s.reduces_done, s.reduces)}"]
    if s.task_errors:
        lines.append(f"  failed task attempts: {s.task_errors}")
    if s.error:
        lines.append(f"  error: {s.error}")
    lines += [f"  {k:<24} {v}" for k, v in s.counters.items()]
    return "\n".join(lines)


@click.group()
def mapreduce():
    """MapReduce jobs: tasks in queues, data in blobs, workers spawned."""


@mapreduce.command()
@click.argument("path", metavar="FILE")
@click.option("--input", "input_prefix", required=True,
              help="Prefix of the input blobs.")
@click.option("--output", "output_prefix", required=True,
              help="Prefix of the output blobs (must be empty).")
@click.option("--mapper", default="map", show_default=True)
@click.option("--reducer", default="reduce", show_default=True)
@click.option("--combiner", default="", help="Function name; none by default.")
@click.option("--reducers", type=int, default=1, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--split-bytes", type=int, default=8 << 20, show_default=True)
@click.option("--name", default="", help="Job id; random by default.")
@click.option("--wait", "wait_", is_flag=True, help="Wait and print the status.")
@click.pass_context
@calls_kernel
def submit(ctx, path, input_prefix, output_prefix, mapper, reducer, combiner,
           reducers, workers, split_bytes, name, wait_):
    """Run the functions of the Python file FILE over the input blobs."""
    from nubis.services import mapreduce as mr

    try:
        with open(path) as f:
            source = f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}", 2)
    client = ctx.obj.client()
    job = mr.submit(client, source, mapper=mapper, reducer=reducer,
                    combiner=combiner, input_prefix=input_prefix,
                    output_prefix=output_prefix, reducers=reducers,
                    workers=workers, split_bytes=split_bytes, name=name)
    if not wait_:
        emit(ctx, {"job": job}, job)
        return
    s = mr.wait(client, job)
    emit(ctx, s.__dict__, render(s))
    if s.state != "succeeded":
        sys.exit(1)


@mapreduce.command()
@click.argument("job")
@click.option("--watch", is_flag=True, help="Redraw until the job ends.")
@click.option("--interval", type=float, default=0.5, show_default=True)
@click.pass_context
@calls_kernel
def status(ctx, job, watch, interval):
    """Progress and counters of JOB, read while it runs."""
    from nubis.services import mapreduce as mr

    client = ctx.obj.client()
    s = mr.status(client, job)
    while watch and s.state == "running" and not ctx.obj.get("json"):
        click.echo(render(s) + "\n")
        time.sleep(interval)
        s = mr.status(client, job)
    emit(ctx, s.__dict__, render(s))
    if s.state == "failed":
        sys.exit(1)


@mapreduce.command("ls")
@click.pass_context
@calls_kernel
def list_jobs(ctx):
    """The caller's jobs and their states."""
    from nubis.services import mapreduce as mr

    client = ctx.obj.client()
    rows = [mr.status(client, job, counters=False) for job in mr.jobs(client)]
    emit(ctx, [r.__dict__ for r in rows], table(
        [[r.job, r.state, f"{r.maps_done}/{r.maps}",
          f"{r.reduces_done}/{r.reduces}", r.output] for r in rows],
        ["JOB", "STATE", "MAP", "REDUCE", "OUTPUT"]) if rows else "")


@mapreduce.command()
@click.argument("job")
@click.pass_context
@calls_kernel
def cleanup(ctx, job):
    """Drop JOB's queues and intermediate blobs (output and counters stay)."""
    from nubis.services import mapreduce as mr

    mr.cleanup(ctx.obj.client(), job)
