"""HTTP through Nubis against uvicorn, under wrk, in one run.

    python -m nubis.bench.http [--processes 1] [--duration 10] [--rate 2000]

Both serve the same small ASGI app with the same number of processes and no
access log: Nubis as `nubis http deploy` daemons on a LISTEN port (handoff:
the kernel accepts and passes each socket, bytes never cross it), uvicorn
with uvloop and httptools (`--workers N`). Two measures, alternated between
the servers `--rounds` times, the best round of each reported:

- throughput: `wrk -t2 -cC -dD`, requests per second, closed loop;
- latency at a fixed offered rate: wrk with a Lua `delay()` per request, so
  each of C connections sends one request every C/RATE seconds (a closed
  loop with think time: wrk does not correct coordinated omission, so a
  stall shows as fewer requests rather than a long tail); p50 and p99.

The goal bars (issue 6): Nubis rps >= uvicorn rps, Nubis p99 <= 1.5 x
uvicorn's. Ratios matter, not absolute numbers: the machine is shared.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello, world"})
'''
TOKEN = "bench-token-0123456789"
RATE_LUA = "function delay()\n  return {ms}\nend\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer") from None
            time.sleep(0.1)


@contextlib.contextmanager
def nubis_server(folder: str, processes: int):
    """A kernel and the app deployed on it; yields the app's URL."""
    from nubis.client import Client
    from nubis.services.http import deploy

    port = free_port()
    config = os.path.join(folder, "nubis.toml")
    with open(config, "w") as f:
        f.write(f'[kernel]\nzmq = ["ipc://{folder}/k.sock"]\ngrpc = ""\n'
                f'log_level = "WARNING"\n[tenants.bench]\ntoken = "{TOKEN}"\n'
                f'ports = ["{port}"]\n[tenants.bench.quotas]\n'
                'max_connections = 100000\n')
    log = open(os.path.join(folder, "kernel.log"), "w")
    kernel = subprocess.Popen([sys.executable, "-m", "nubis.cli.main", "kernel",
                               "--config", config], stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        url = f"zmq+ipc://{folder}/k.sock"
        deadline = time.monotonic() + 30
        while True:
            try:
                with Client(url, TOKEN, timeout=2) as c:
                    c.spawn.list()
                break
            except Exception:
                if time.monotonic() > deadline or kernel.poll() is not None:
                    raise RuntimeError("the kernel did not start") from None
                time.sleep(0.2)
        with Client(url, TOKEN) as c:
            deploy.deploy(c, "bench", APP, port, processes,
                          limits={"access_log": False, "max_inflight": 4096})
        address = f"http://127.0.0.1:{port}/"
        wait_http(address)
        yield address
    finally:
        kernel.send_signal(signal.SIGTERM)
        try:
            kernel.wait(20)
        except subprocess.TimeoutExpired:
            kernel.kill()
        log.close()


@contextlib.contextmanager
def uvicorn_server(folder: str, processes: int):
    port = free_port()
    with open(os.path.join(folder, "benchapp.py"), "w") as f:
        f.write(APP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", folder, "benchapp:app",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(processes),
         "--loop", "uvloop", "--http", "httptools", "--no-access-log",
         "--log-level", "warning"], stdout=subprocess.DEVNULL)
    try:
        address = f"http://127.0.0.1:{port}/"
        wait_http(address)
        yield address
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, connections: int, duration: int, script: str = "") -> dict:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script:
        args += ["-s", script]
    out = subprocess.run(args + [url], capture_output=True, text=True,
                         timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": _ms(pct["50"]), "p99_ms": _ms(pct["99"]),
            "non_2xx": int(errors.group(1)) if errors else 0}


def run(args) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    folder = tempfile.mkdtemp(prefix="nubis-bench-http-")
    script = os.path.join(folder, "rate.lua")
    per_conn_ms = args.rate_connections * 1000 / args.rate
    with open(script, "w") as f:
        f.write(RATE_LUA.format(ms=max(1, round(per_conn_ms))))
    results = {"nubis": [], "uvicorn": []}
    with nubis_server(folder, args.processes) as nubis, \
            uvicorn_server(folder, args.processes) as uvicorn:
        urls = {"nubis": nubis, "uvicorn": uvicorn}
        for url in urls.values():
            wrk(url, args.connections, 2)           # warm up
        for _ in range(args.rounds):
            for name, url in urls.items():
                load = wrk(url, args.connections, args.duration)
                rate = wrk(url, args.rate_connections, args.duration, script)
                results[name].append({"throughput": load, "fixed_rate": rate})
    shutil.rmtree(folder, ignore_errors=True)
    best = {name: {
        "rps": max(r["throughput"]["rps"] for r in rounds),
        "p99_ms": min(r["fixed_rate"]["p99_ms"] for r in rounds),
        "p50_ms": min(r["fixed_rate"]["p50_ms"] for r in rounds),
        "offered_rps": round(min(r["fixed_rate"]["rps"] for r in rounds)),
        "non_2xx": sum(r["throughput"]["non_2xx"] for r in rounds)}
        for name, rounds in results.items()}
    n, u = best["nubis"], best["uvicorn"]
    return {"settings": vars(args), "best": best, "rounds": results,
            "rps_ratio": round(n["rps"] / u["rps"], 3),
            "p99_ratio": round(n["p99_ms"] / u["p99_ms"], 3),
            "goals": {"rps >= uvicorn": n["rps"] >= u["rps"],
                      "p99 <= 1.5x uvicorn": n["p99_ms"] <= 1.5 * u["p99_ms"]}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=2000,
                        help="offered requests per second for the p99 run")
    parser.add_argument("--rate-connections", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, b in report["best"].items():
        print(f"{name:8} {b['rps']:>9.0f} req/s   at ~{b['offered_rps']} req/s: "
              f"p50 {b['p50_ms']:.2f} ms  p99 {b['p99_ms']:.2f} ms")
    print(f"ratios: rps {report['rps_ratio']}x uvicorn, p99 "
          f"{report['p99_ratio']}x uvicorn; goals: {report['goals']}")


if __name__ == "__main__":
    main()
