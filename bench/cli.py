"""`nubis bench`: the latency suite from the command line.

Only click and the plan's tables are imported here, so that registering
the command costs the `nubis` CLI nothing; the suite itself (pyzmq, grpcio,
hdrh, the peers' clients, matplotlib) is imported when the command runs.
"""

import click

from nubis.bench.plan import CALLS, MODES, TRANSPORTS, parse_size


def _choices(what: str, allowed: tuple):
    """A click callback: a comma list, each item one of `allowed`."""
    def parse(ctx, param, value):
        if value is None:
            return None
        items = tuple(dict.fromkeys(v.strip() for v in value.split(",")
                                    if v.strip()))
        if not items:
            raise click.BadParameter(f"no {what} given in {value!r}")
        for item in items:
            if item not in allowed:
                raise click.BadParameter(
                    f"unknown {what} {item!r}; choose from {', '.join(allowed)}")
        return items
    return parse


def _payloads(ctx, param, value):
    try:
        sizes = tuple(dict.fromkeys(parse_size(v) for v in value.split(",")
                                    if v.strip()))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if not sizes:
        raise click.BadParameter(f"no payload size given in {value!r}")
    return sizes


@click.command()
@click.option("--transport", "transports", default=",".join(TRANSPORTS),
              show_default=True, callback=_choices("transport", TRANSPORTS),
              help="Comma list of transports.")
@click.option("--call", "calls", default=",".join(CALLS), show_default=True,
              callback=_choices("call", CALLS), help="Comma list of calls.")
@click.option("--payload", "payloads", default="64", show_default=True,
              callback=_payloads,
              help="Comma list of payload sizes, e.g. 64,4096,1048576 or 64,4K,1M.")
@click.option("--mode", "modes", callback=_choices("mode", MODES),
              help="Comma list of closed, pipelined, processes, open.  "
              "[default: closed, plus one pipelined case: blob.get over zmq+ipc]")
@click.option("--rate", type=click.FloatRange(1, 1e6), default=2000.0,
              show_default=True, help="Open loop: offered calls per second.")
@click.option("--depth", type=click.IntRange(1, 4096), default=32,
              show_default=True, help="Pipelined: calls in flight on one "
              "connection.")
@click.option("--processes", type=click.IntRange(1, 64), default=4,
              show_default=True, help="Processes mode: client processes, each "
              "with one call in flight.")
@click.option("--duration", type=click.FloatRange(0.05, 3600),
              help="Timed seconds per case.  [default: 4, or 0.3 with --quick]")
@click.option("--warmup", type=click.FloatRange(0, 600),
              help="Untimed seconds before each case.  [default: a quarter of "
              "the duration, at most 0.5]")
@click.option("--out", type=click.Path(file_okay=False), default="bench-out",
              show_default=True, help="Folder for results.json, results.md "
              "and the plots.")
@click.option("--memory-messages", type=click.IntRange(0, 20_000_000),
              help="Messages of the memory case; 0 skips it.  [default: "
              "1000000, or 100000 with --quick]")
@click.option("--no-peers", is_flag=True, help="Leave out Redis and NATS.")
@click.option("--quick", is_flag=True, help="A smoke run of about 20 seconds.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.pass_context
def bench(ctx, transports, calls, payloads, modes, rate, depth, processes,
          duration, warmup, out, memory_messages, no_peers, quick, quiet):
    """Measure cloud-call latency beside the bare transports and the peers.

    Starts its own kernel, a bare pyzmq and grpcio echo (the floors), and
    redis-server and nats-server where installed, all on loopback; runs
    every call over every transport and payload in each mode; and writes
    results.json, results.md (figures as ratios to the floors and peers,
    and the goals) and a PNG percentile plot per call to --out.
    """
    import logging
    import signal

    from nubis.bench.plan import QUICK, Options
    from nubis.bench.runner import run

    logging.basicConfig(level=logging.WARNING, format="nubis bench: %(message)s")
    defaults = Options()
    chosen = dict(transports=transports, calls=calls, payloads=payloads,
                  modes=modes, rate=rate, depth=depth, processes=processes,
                  out=out, peers=not no_peers, warmup=warmup)
    for key, value in (("duration", duration),
                       ("memory_messages", memory_messages)):
        fallback = QUICK[key] if quick else getattr(defaults, key)
        chosen[key] = fallback if value is None else value
    if quick and warmup is None:
        chosen["warmup"] = QUICK["warmup"]

    # SIGTERM unwinds like Ctrl-C, so every server the run started stops.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        report = run(Options(**chosen), quiet=quiet)
    except KeyboardInterrupt:
        click.echo("nubis bench: interrupted; the servers it started are "
                   "stopped", err=True)
        ctx.exit(130)
    except RuntimeError as e:
        click.echo(f"nubis bench: {e}", err=True)
        ctx.exit(1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    _print(ctx, report, out)


def _print(ctx, report: dict, out: str) -> None:
    import os

    obj = ctx.find_root().obj or {}
    if obj.get("json"):
        with open(os.path.join(out, "results.json")) as f:
            click.echo(f.read(), nl=False)
    else:
        with open(os.path.join(out, "results.md")) as f:
            click.echo(f.read())
        click.echo(f"Wrote results.json, results.md and {len(report['plots'])} "
                   f"plots to {out}", err=True)
    failed = [r for r in report["rows"] if r.get("error")]
    if failed or (report.get("memory") or {}).get("error"):
        ctx.exit(1)
