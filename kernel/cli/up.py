"""`nubis up`: the whole system with one command.

It boots a kernel in this process (on uvloop, the embedded RAM default),
with a `demo` tenant unless the configuration names tenants, deploys the
console through the HTTP service (as cloud processes on a LISTEN port),
starts the inbound mail daemon on another of the tenant's ports, prints
what runs where, and on SIGINT or SIGTERM stops the mail daemon and the
console's daemons (they drain) and then the kernel.
"""

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import click

from nubis.cli.output import fail
from nubis.config import runtime_dir
from nubis.errors import NubisError
from nubis.tenants import parse_ports

log = logging.getLogger("nubis.up")

CONSOLE = "console"
CONSOLE_SOURCE = '''"""The Nubis console, deployed by `nubis up`."""
from nubis.services.console import app
'''


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              envvar="NUBIS_CONFIG", help="TOML file.  [env: NUBIS_CONFIG]")
@click.option("--zmq", "zmq_endpoints", multiple=True,
              help="ZeroMQ endpoint to bind (repeat).  [env: NUBIS_ZMQ]")
@click.option("--grpc", "grpc_address", help="gRPC address to bind.")
@click.option("--no-grpc", is_flag=True, help="Serve ZeroMQ only.")
@click.option("--http-port", type=int, default=8080, show_default=True,
              help="The console's port (the demo tenant may use it).")
@click.option("--console-processes", type=int, default=1, show_default=True)
@click.option("--mail-port", type=int, default=8025, show_default=True,
              help="Inbound SMTP port of the mail service (a LISTEN port).")
@click.option("--no-mail", is_flag=True, help="Do not start the mail service.")
@click.option("--no-demo-data", is_flag=True,
              help="Do not add the sample queue and blob.")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                case_sensitive=False))
def up(config_path, zmq_endpoints, grpc_address, no_grpc, http_port,
       console_processes, mail_port, no_mail, no_demo_data, log_level):
    """Run the kernel, the demo tenant and the console; Ctrl-C stops all."""
    from nubis import config

    overrides = {"zmq": list(zmq_endpoints) or None,
                 "grpc": "" if no_grpc else grpc_address,
                 "log_level": log_level.upper()}
    try:
        cfg = config.load(config_path, overrides)
    except NubisError as e:
        fail(e.message, 2)
    if not 1 <= http_port <= 65535:
        fail(f"--http-port {http_port} is not a TCP port", 2)
    if not any(e.startswith("ipc://") for e in cfg.zmq):
        fail("nubis up needs a ZeroMQ ipc:// endpoint (cloud processes and "
             "the console reach the kernel through it)", 2)
    try:
        ranges = parse_ports(cfg.demo_ports, "demo_ports")
    except NubisError as e:
        fail(e.message, 2)
    for port in (http_port,) if no_mail else (http_port, mail_port):
        if not 1 <= port <= 65535:
            fail(f"port {port} is not a TCP port", 2)
        if not any(lo <= port <= hi for lo, hi in ranges):
            cfg.demo_ports = list(cfg.demo_ports) + [str(port)]
    logging.basicConfig(level=cfg.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvloop

    try:
        code = uvloop.run(_up(cfg, http_port, console_processes,
                              not no_demo_data, None if no_mail else mail_port))
    except OSError as e:
        fail(str(e), 1)
    sys.exit(code)


async def _up(cfg, port: int, processes: int, seed: bool,
              mail_port: int | None) -> int:
    from nubis.server import Server

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = Server(cfg)
    await server.start()
    try:
        if server.kernel.procs is None:
            click.echo("nubis: cloud processes are off (see the log above); "
                       "the console cannot run", err=True)
            return 1
        url, token = _tenant(server)
        try:
            await asyncio.to_thread(_deploy, url, token, port, processes, seed)
        except (NubisError, OSError, ValueError) as e:
            click.echo(f"nubis: cannot start the console: {e}", err=True)
            return 1
        mail = None
        if mail_port is not None:
            mail = await asyncio.to_thread(_start_mail, url, token, mail_port)
        _banner(server, url, token, port, mail_port if mail else None)
        await stop.wait()
        click.echo("\nnubis: stopping (the console drains, then the kernel)")
        if mail is not None:
            await asyncio.to_thread(_stop_mail, mail)
        await asyncio.to_thread(_undeploy, url, token)
        return 0
    finally:
        await server.stop()


def _tenant(server) -> tuple[str, str]:
    """The ipc URL and the token of the tenant the console runs as."""
    ipc = next(e for e in server.kernel.endpoints if e.startswith("zmq+ipc://"))
    if server.demo_token:
        return ipc, server.demo_token
    admins = [t for t in server.config.tenants if t.admin and t.token]
    if not admins:
        raise click.ClickException("the configuration names tenants but no "
                                   "admin with a token to run the console as")
    return ipc, admins[0].token


def _deploy(url: str, token: str, port: int, processes: int, seed: bool) -> None:
    from nubis.client import Client
    from nubis.errors import AlreadyExists
    from nubis.services.http import deploy

    with Client(url, token) as c:
        if seed:
            c.blob.put("welcome.txt", b"Welcome to Nubis.\n",
                       content_type="text/plain")
            try:
                c.queue.create("jobs")
                c.queue.send("jobs", b"resize cat.png", b"resize dog.png")
            except AlreadyExists:
                pass
        deploy.deploy(c, CONSOLE, CONSOLE_SOURCE, port, processes,
                      where="the console")
    _wait_http(f"http://127.0.0.1:{port}/healthz", 30)


def _wait_http(address: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(address, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as e:
            if time.monotonic() > deadline:
                raise OSError(f"{address} did not answer within {timeout:.0f} s "
                              f"({e})") from None
        time.sleep(0.1)


def _start_mail(url: str, token: str, port: int):
    """Start `nubis mail inbound` (supervised, restarted if it dies)."""
    argv = [sys.executable, "-m", "nubis.cli.main", "--url", url, "--token",
            token, "mail", "inbound", "--port", str(port)]
    log_path = os.path.join(runtime_dir(), "mail.log")
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), 1) as s:
                s.settimeout(2)
                if s.recv(3) == b"220":
                    return proc
        except OSError:
            time.sleep(0.1)
    log.warning("the mail service did not answer on port %d (see %s); "
                "running without it", port, log_path)
    _stop_mail(proc)
    return None


def _stop_mail(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _undeploy(url: str, token: str, timeout: float = 10.0) -> None:
    from nubis.client import Client
    from nubis.services.http import deploy

    with Client(url, token) as c:
        deploy.stop(c, CONSOLE, forget=False)
        deadline = time.monotonic() + timeout
        while deploy.processes(c, CONSOLE) and time.monotonic() < deadline:
            time.sleep(0.1)


def _banner(server, url: str, token: str, port: int, mail_port) -> None:
    endpoints = "\n".join(f"    {e}" for e in server.kernel.endpoints)
    tcp = next((e for e in server.kernel.endpoints if e.startswith("zmq+tcp")), url)
    mail = (f"  mail      smtp://127.0.0.1:{mail_port}   (each message a blob "
            "mail/in/ID, a notice on queue mail.inbox; log in "
            f"{runtime_dir()}/mail.log)\n" if mail_port else "")
    click.echo(f"""Nubis is up (kernel {server.kernel.version}, pid {os.getpid()}).

  console   http://127.0.0.1:{port}/   (cloud processes: nubis http ls)
{mail}  kernel
{endpoints}
  tenant    {'demo (admin)' if server.demo_token else 'the first admin tenant'}
  token     {token}

Try, in another shell:
  export NUBIS_URL={tcp} NUBIS_TOKEN={token}
  nubis queue send jobs "hello"            # watch the depth in the console
  echo hi | nubis blob put notes/hi.txt -
  nubis http deploy app.py:app --port 8001 --processes 2
  nubis ps
  nubis mapreduce submit job.py --input texts/ --output counts/ --wait

Ctrl-C stops everything.""", nl=True)
    sys.stdout.flush()
