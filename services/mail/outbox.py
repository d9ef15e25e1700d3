"""Sending mail: a message goes into a blob, a notice onto the outbox queue.

Theory of operation. `send` stores the message's bytes as the blob
`mail/ID/message` (create-only) and its status as `mail/ID/status`, then
sends a small notice {"id", "from", "to"} to the outbox queue; it returns
ID. The delivery daemon (nubis.services.mail.delivery) leases notices,
relays the message over SMTP and rewrites the status blob at each step:
queued, retrying (after a temporary failure), delivered or dead. The queue
is the only retry timer: after a temporary failure the daemon releases the
notice with a delay (its lease set to the backoff), so a daemon that dies
between attempts loses nothing, and any daemon picks the message up again.
"""

import email
import email.message
import email.policy
import email.utils
import json
import time
import uuid

from nubis.errors import AlreadyExists, InvalidArgument, NotFound

OUTBOX = "mail.outbox"
DEAD = "mail.outbox.dead"
INBOX = "mail.inbox"
# The kernel dead-letters a notice received this often without an ack: a
# backstop for a message that crashes the daemon, far above any retry budget.
POISON_RECEIVES = 100


def message_key(mail_id: str) -> str:
    return f"mail/{mail_id}/message"


def status_key(mail_id: str) -> str:
    return f"mail/{mail_id}/status"


def dead_letters_of(outbox: str) -> str:
    """The dead-letter queue of an outbox: its name and ".dead"."""
    return f"{outbox}.dead"


def ensure_queues(client, outbox: str = OUTBOX) -> None:
    """Create the outbox and its dead-letter queue if they are missing (an
    outbox the tenant made with its own settings is kept as it is)."""
    client.queue.create(dead_letters_of(outbox))
    try:
        client.queue.create(outbox, max_receive_count=POISON_RECEIVES,
                            dead_letter_queue=dead_letters_of(outbox))
    except AlreadyExists:
        pass


def envelope(message) -> tuple[str, list]:
    """The SMTP sender and recipients of a message, as smtplib derives them."""
    if not isinstance(message, email.message.EmailMessage):
        raise InvalidArgument("message must be an email.message.EmailMessage, "
                              f"got {type(message).__name__}")
    sender = message["Sender"] or message["From"]
    if not sender:
        raise InvalidArgument("message has no From header")
    fields = [str(v) for h in ("To", "Cc", "Bcc")
              for v in message.get_all(h, [])]
    recipients = [addr for _, addr in email.utils.getaddresses(fields) if addr]
    if not recipients:
        raise InvalidArgument("message has no recipients (To, Cc or Bcc)")
    return email.utils.getaddresses([str(sender)])[0][1], recipients


def send(message, *, client=None, outbox: str = OUTBOX) -> str:
    """Queue a message for delivery; returns its id for `status`."""
    if client is None:
        from nubis.client import current

        client = current()
    sender, recipients = envelope(message)
    mail_id = uuid.uuid4().hex
    if message["Bcc"] is not None:
        # Bcc recipients are in the envelope only; the copy keeps the
        # caller's message as it was.
        message = email.message_from_bytes(message.as_bytes(),
                                           policy=email.policy.default)
        del message["Bcc"]
    data = message.as_bytes(policy=email.policy.SMTP)
    client.blob.put(message_key(mail_id), data, content_type="message/rfc822",
                    if_none_match=True)
    write_status(client, mail_id, state="queued", attempts=0, sender=sender,
                 recipients=recipients, queued_unix=time.time())
    notice = json.dumps({"id": mail_id, "from": sender, "to": recipients})
    try:
        client.queue.send(outbox, notice.encode())
    except NotFound:
        ensure_queues(client, outbox)
        client.queue.send(outbox, notice.encode())
    return mail_id


def write_status(client, mail_id: str, **fields) -> dict:
    """Replace a message's status record; returns it."""
    fields["updated_unix"] = time.time()
    client.blob.put(status_key(mail_id), json.dumps(fields).encode(),
                    content_type="application/json")
    return fields


def status(mail_id: str, *, client=None) -> dict:
    """A message's status: state (queued, retrying, delivered, dead),
    attempts, the relay's last reply, times."""
    if client is None:
        from nubis.client import current

        client = current()
    if not mail_id or "/" in mail_id:
        raise InvalidArgument(f"mail id {mail_id!r} is malformed")
    try:
        return json.loads(client.blob.get(status_key(mail_id)).data)
    except NotFound:
        raise NotFound(f"mail message {mail_id!r} not found") from None

