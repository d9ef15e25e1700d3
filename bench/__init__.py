"""The Nubis latency benchmark suite (`nubis bench`, or from Python).

    from nubis.bench import Options, run
    report = run(Options(payloads=(64, 4096), modes=("closed", "open")))

A run starts its own kernel, the bare echo floors (pyzmq, grpcio) and the
peers (Redis, NATS) as processes on loopback, times every cloud call in
client processes, and writes results.json, results.md and one PNG per call.

Modules: `plan` (what is measured), `servers` and `echo` (the processes
measured), `clients`, `ops` and `loops` (how a call is timed), `worker`
(a client process), `runner` (the run), `memory` (the memory case),
`report`, `goals` and `plot` (the output), `display` and `cli`. Importing
this package is cheap; the heavy modules load when a run starts.
"""

from nubis.bench.plan import Options

__all__ = ["Options", "run"]


def run(options: Options | None = None, quiet: bool = False) -> dict:
    """Run the suite with `options` and write its files; returns the report."""
    from nubis.bench.runner import run as run_suite

    return run_suite(options or Options(), quiet=quiet)
