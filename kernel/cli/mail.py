"""`nubis mail`: send mail, read its status, run the delivery daemon."""

import logging
import os
import signal
import sys

import click

from nubis.cli.output import calls_kernel, emit, fail
from nubis.errors import NubisError


@click.group()
def mail():
    """Mail: an outbox queue delivered over SMTP by a supervised daemon."""


@mail.command()
@click.option("--from", "sender", required=True, help="From address.")
@click.option("--to", "to", multiple=True, required=True, help="Repeat for more.")
@click.option("--subject", default="")
@click.argument("body", type=click.File("r"), default="-")
@click.pass_context
@calls_kernel
def send(ctx, sender, to, subject, body):
    """Queue a plain-text message whose body is the file BODY (- for stdin)."""
    from email.message import EmailMessage

    from nubis.services import mail as service

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, ", ".join(to), subject
    msg.set_content(body.read())
    mail_id = service.send(msg, client=ctx.obj.client())
    emit(ctx, {"id": mail_id}, mail_id)


@mail.command()
@click.argument("mail_id", metavar="ID")
@click.pass_context
@calls_kernel
def status(ctx, mail_id):
    """The delivery status of message ID."""
    from nubis.services import mail as service

    record = service.status(mail_id, client=ctx.obj.client())
    line = f"{mail_id}: {record['state']} after {record['attempts']} attempt(s)"
    if record.get("reply"):
        line += f"; relay said: {record.get('code', '')} {record['reply']}".rstrip()
    emit(ctx, record, line)


def _relay(value: str) -> tuple:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


@mail.command()
@click.option("--relay", "relay_", required=True, help="SMTP relay HOST:PORT.")
@click.option("--starttls", is_flag=True, help="Upgrade with STARTTLS.")
@click.option("--tls", is_flag=True, help="TLS from the start (SMTPS).")
@click.option("--user", default="", help="Log in as this user; the password "
              "is $NUBIS_MAIL_PASSWORD.")
@click.option("--ca-file", default="", help="Trust this CA for the relay.")
@click.option("--max-attempts", type=click.IntRange(1), default=8,
              show_default=True)
@click.option("--backoff", nargs=2, type=float, default=(1.0, 600.0),
              show_default=True, help="Least and most seconds between tries.")
@click.option("--lease", type=float, default=60.0, show_default=True,
              help="Seconds a notice stays hidden while it is tried.")
@click.option("--concurrency", type=click.IntRange(1), default=2,
              show_default=True, help="Sender threads.")
@click.option("--outbox", default="mail.outbox", show_default=True,
              help="Its dead letters go to OUTBOX.dead.")
@click.option("--no-supervise", is_flag=True,
              help="Run in this process, without the restart loop.")
@click.pass_context
def daemon(ctx, relay_, starttls, tls, user, ca_file, max_attempts, backoff,
           lease, concurrency, outbox, no_supervise):
    """Deliver the outbox through an SMTP relay, restarted if it fails.

    It runs as a normal program of the tenant, not a cloud process: cloud
    processes have no network, and this daemon must reach the relay.
    """
    from nubis.client import Client
    from nubis.services.mail import Daemon, Policy, Relay
    from nubis.services.mail.supervise import supervise

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = _relay(relay_)
    if not no_supervise:
        argv = [sys.executable, "-m", "nubis.cli.main", *sys.argv[1:],
                "--no-supervise"]
        sys.exit(supervise(argv))
    try:
        relay = Relay(host, port, starttls=starttls, tls=tls, username=user,
                      password=os.environ.get("NUBIS_MAIL_PASSWORD", ""),
                      ca_file=ca_file)
    except ValueError as e:
        fail(str(e), 2)
    obj = ctx.obj
    d = Daemon(lambda: Client(obj.get("url"), obj.get("token"),
                              timeout=obj.get("timeout")),
               relay, Policy(max_attempts, backoff[0], backoff[1], lease),
               outbox=outbox, concurrency=concurrency)
    signal.signal(signal.SIGTERM, lambda *_: d.stopping.set())
    try:
        d.run()
    except KeyboardInterrupt:
        pass
    except NubisError as e:
        fail(f"mail daemon stopped: {e}")     # the restart loop runs it again
    d.stop()


@mail.command()
@click.option("--port", type=int, required=True, help="The tenant's LISTEN port.")
@click.option("--inbox", default="mail.inbox", show_default=True,
              help="Queue of the notices of received messages.")
@click.option("--domain", "domains", multiple=True,
              help="Accept mail only for this domain (repeat); default: any.")
@click.option("--hostname", default="", help="Name in the greeting.")
@click.option("--no-supervise", is_flag=True,
              help="Run in this process, without the restart loop.")
@click.pass_context
def inbound(ctx, port, inbox, domains, hostname, no_supervise):
    """Receive mail over SMTP on PORT: each message becomes a blob
    mail/in/ID and a notice on the inbox queue."""
    from nubis.services.listen import run_main
    from nubis.services.mail import inbound as service
    from nubis.services.mail.supervise import supervise

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import aiosmtpd  # noqa: F401 - only to say how to get it
    except ImportError:
        fail("nubis mail inbound needs aiosmtpd: pip install 'aiosmtpd>=1.4'", 2)
    if not no_supervise:
        argv = [sys.executable, "-m", "nubis.cli.main", *sys.argv[1:],
                "--no-supervise"]
        sys.exit(supervise(argv))
    obj = ctx.obj

    async def main():
        from nubis.client import AsyncClient

        async with AsyncClient(obj.get("url"), obj.get("token"),
                               timeout=obj.get("timeout")) as client:
            await service.serve(port, client=client, inbox=inbox,
                                domains=domains, hostname=hostname)

    try:
        run_main(main())
    except KeyboardInterrupt:
        pass
    except NubisError as e:
        fail(f"mail inbound stopped: {e}")
