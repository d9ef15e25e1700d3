"""Mail in user space: an outbox queue, a delivery daemon, status records.

    from email.message import EmailMessage
    from nubis.services import mail

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "app@example.com", "a@b.c", "Hi"
    msg.set_content("Hello.")
    mail_id = mail.send(msg, client=client)    # inside a cloud process the
    mail.status(mail_id, client=client)        # client argument may be left out

`nubis mail daemon --relay HOST:PORT` delivers the outbox (see
nubis.services.mail.delivery for retries, dead letters and what a crash can
and cannot cause).
"""

from nubis.services.mail.delivery import Daemon, Policy, Relay
from nubis.services.mail.outbox import DEAD, INBOX, OUTBOX, send, status

__all__ = ["DEAD", "INBOX", "OUTBOX", "Daemon", "Policy", "Relay", "send",
           "status"]
