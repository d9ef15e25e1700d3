"""Receiving mail: an SMTP server on a LISTEN port, storing what it accepts.

aiosmtpd's `SMTP` protocol is the server; nubis.services.listen attaches it
to the tenant's port, so each connection the kernel accepts gets one. A
message is accepted (250) only after its bytes are a blob
`mail/in/ID` and a notice {"id", "key", "from", "to", "size", "peer",
"received_unix"} is on the inbox queue, so a 250 means the tenant's code
will see it; a failing kernel call answers 451 and the sender retries.
"""

import json
import logging
import time
import uuid

from nubis.errors import NubisError
from nubis.services import listen
from nubis.services.mail.outbox import INBOX

log = logging.getLogger("nubis.mail")


def inbound_key(mail_id: str) -> str:
    return f"mail/in/{mail_id}"


class InboxHandler:
    """aiosmtpd handler: accept mail for `domains` (any, if empty)."""

    def __init__(self, client, inbox: str = INBOX, domains=()):
        self.client = client
        self.inbox = inbox
        self.domains = {d.lower() for d in domains}

    async def handle_RCPT(self, server, session, envelope, address, options):
        domain = address.rpartition("@")[2].lower()
        if self.domains and domain not in self.domains:
            return f"550 5.7.1 relaying to {domain} is not allowed"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        mail_id = uuid.uuid4().hex
        data = envelope.original_content or envelope.content
        notice = {"id": mail_id, "key": inbound_key(mail_id),
                  "from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                  "size": len(data), "peer": str(session.peer),
                  "received_unix": time.time()}
        try:
            await self.client.blob.put(notice["key"], data,
                                       content_type="message/rfc822")
            await self.client.queue.send(self.inbox, json.dumps(notice).encode())
        except NubisError as e:
            log.warning("inbound message from %s not stored: %s; the sender "
                        "was told to retry", session.peer, e)
            return "451 4.3.0 cannot store the message now; try again later"
        log.debug("inbound message %s from %s: %d bytes", mail_id,
                  envelope.mail_from, len(data))
        return f"250 2.0.0 queued as {mail_id}"


async def serve(port: int, *, client=None, inbox: str = INBOX, domains=(),
                hostname: str = "", mode: str = "handoff", ready=None) -> None:
    """Serve SMTP on the tenant's LISTEN port until the kernel ends it."""
    from aiosmtpd.smtp import SMTP

    own = client is None
    if own:
        client = await listen.connect()
    try:
        await client.queue.create(inbox)
        handler = InboxHandler(client, inbox, domains)
        await listen.serve(lambda: SMTP(handler, hostname=hostname or None),
                           port, mode=mode, client=client, ready=ready)
    finally:
        if own:
            await client.close()
