"""`nubis queue`: queues and messages from a terminal."""

import click

from nubis.cli.output import calls_kernel, emit, table


@click.group()
def queue():
    """QUEUE: create queues, send, receive and ack messages."""


@queue.command()
@click.argument("name")
@click.option("--lease", type=float, default=0, help="Default lease, seconds.")
@click.option("--max-receive", type=int, default=0,
              help="Dead-letter after this many receives.")
@click.option("--dead-letter", default="", help="Queue for dead letters.")
@click.option("--retention", type=float, default=0, help="Seconds to keep.")
@click.option("--fifo", is_flag=True, help="Ordered per group, deduplicated.")
@click.option("--delay", type=float, default=0, help="Default delay, seconds.")
@click.pass_context
@calls_kernel
def create(ctx, name, lease, max_receive, dead_letter, retention, fifo, delay):
    """Create queue NAME."""
    created = ctx.obj.client().queue.create(
        name, lease=lease, max_receive_count=max_receive,
        dead_letter_queue=dead_letter, retention=retention, fifo=fifo,
        delay=delay)
    emit(ctx, {"created": created},
         f"created {name}" if created else f"{name} already exists")


@queue.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
@calls_kernel
def remove(ctx, names):
    """Delete queues and their messages."""
    for name in names:
        ctx.obj.client().queue.delete(name)


@queue.command("ls")
@click.argument("prefix", default="")
@click.pass_context
@calls_kernel
def list_queues(ctx, prefix):
    """List queues with their depth and in-flight counts."""
    client = ctx.obj.client()
    names, token = [], ""
    while True:
        page = client.queue.list(prefix, page_token=token)
        names += page.names
        token = page.next_page_token
        if not token:
            break
    attrs = [client.queue.attributes(n) for n in names]
    emit(ctx, attrs, table(
        [[a.name, a.depth, a.in_flight, a.delayed, a.oldest_age_ms // 1000]
         for a in attrs],
        ["QUEUE", "DEPTH", "IN FLIGHT", "DELAYED", "OLDEST(s)"]) if attrs else "")


@queue.command()
@click.argument("name")
@click.pass_context
@calls_kernel
def attrs(ctx, name):
    """Settings and counts of queue NAME."""
    emit(ctx, ctx.obj.client().queue.attributes(name))


@queue.command()
@click.argument("name")
@click.argument("bodies", nargs=-1, required=True)
@click.option("--delay", type=float, default=0, help="Seconds before visible.")
@click.option("--group", default="", help="FIFO group.")
@click.option("--dedup-id", default="", help="FIFO deduplication id.")
@click.pass_context
@calls_kernel
def send(ctx, name, bodies, delay, group, dedup_id):
    """Send messages (each BODY is one message) to queue NAME."""
    ids = ctx.obj.client().queue.send(
        name, *(b.encode() for b in bodies), delay=delay, group=group,
        dedup_id=dedup_id)
    emit(ctx, ids, "\n".join(ids))


@queue.command()
@click.argument("name")
@click.option("-n", "--max", "max_messages", type=int, default=1)
@click.option("--wait", type=float, default=0, help="Long-poll seconds.")
@click.option("--lease", type=float, default=0, help="Lease seconds.")
@click.option("--ack", is_flag=True, help="Acknowledge what was received.")
@click.pass_context
@calls_kernel
def receive(ctx, name, max_messages, wait, lease, ack):
    """Lease messages of queue NAME and print them."""
    client = ctx.obj.client()
    got = client.queue.receive(name, max_messages, wait=wait, lease=lease)
    if ack and got:
        client.queue.ack(name, *(m.receipt for m in got))
    emit(ctx, got, "\n".join(
        f"{m.message_id}  {m.receipt}  {m.body.decode(errors='replace')}"
        for m in got))


@queue.command()
@click.argument("name")
@click.argument("receipts", nargs=-1, required=True)
@click.pass_context
@calls_kernel
def ack(ctx, name, receipts):
    """Acknowledge leased messages by receipt."""
    stale = ctx.obj.client().queue.ack(name, *receipts)
    emit(ctx, {"stale_receipts": stale},
         "\n".join(f"stale: {r}" for r in stale))


@queue.command()
@click.argument("name")
@click.argument("receipt")
@click.argument("seconds", type=float)
@click.pass_context
@calls_kernel
def lease(ctx, name, receipt, seconds):
    """Set a lease to SECONDS from now; 0 releases it for redelivery."""
    ctx.obj.client().queue.change_lease(name, receipt, seconds)


@queue.command()
@click.argument("name")
@click.pass_context
@calls_kernel
def purge(ctx, name):
    """Drop every message of queue NAME."""
    n = ctx.obj.client().queue.purge(name)
    emit(ctx, {"purged": n}, f"purged {n}")
