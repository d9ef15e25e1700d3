"""The mail delivery daemon: outbox notices to an SMTP relay, with retries.

Theory of operation. Each sender thread owns a client of the kernel and
one SMTP connection to the relay (opened on first use, reused, reopened
after an error). It leases notices from the outbox and, for each:

- a status already `delivered` or `dead` means a duplicate notice: ack it;
- the relay accepts (2xx): status `delivered` with the reply, ack, drop the
  message blob;
- a temporary failure (4xx, or no answer: refused connection, timeout,
  disconnect): status `retrying` and the notice's lease set to the backoff,
  so the queue hands it out again when the backoff ends (to this daemon or
  another); after `max_attempts` it is dead;
- a permanent failure (5xx): dead at once.

A dead message's notice goes to the dead-letter queue with the relay's
reply, and its status says `dead` with the same reply. Attempts are the
relay transactions the status records; an attempt cut short by a crash is
not counted, and a message that keeps killing the daemon is dead-lettered
by the queue after POISON_RECEIVES leases. The order of steps (relay, then
status, then ack) means a daemon killed at any point loses nothing; it
delivers twice only when it dies after the relay said 250 and before the
status was written, or when the relay's reply to the end of DATA is lost,
which SMTP itself cannot tell apart from a failure (RFC 1047). A killed
daemon's long poll may still be parked in the kernel and take the next
notice; that notice then waits out one lease before it is tried.
"""

import json
import logging
import random
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass

from nubis.errors import FailedPrecondition, NotFound
from nubis.services.mail.outbox import (
    OUTBOX,
    dead_letters_of,
    ensure_queues,
    message_key,
    status_key,
    write_status,
)

log = logging.getLogger("nubis.mail")

BATCH = 10
POLL = 1.0


@dataclass
class Relay:
    """Where and how to deliver: an SMTP server and its security."""

    host: str
    port: int = 25
    starttls: bool = False
    tls: bool = False            # SMTPS: TLS from the first byte (port 465)
    username: str = ""
    password: str = ""
    ca_file: str = ""            # trust this CA instead of the system's
    timeout: float = 30.0

    def __post_init__(self):
        if not self.host or not 0 < self.port < 65536:
            raise ValueError(f"relay {self.host}:{self.port} is not host:port")
        if self.starttls and self.tls:
            raise ValueError("choose STARTTLS or TLS, not both")

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file or None)

    def connect(self) -> smtplib.SMTP:
        """An open, authenticated SMTP session with the relay."""
        if self.tls:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=self.context())
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=self.context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password)
        except BaseException:
            smtp.close()
            raise
        return smtp


@dataclass
class Policy:
    """Retries: attempts per message and the backoff between them."""

    max_attempts: int = 8
    backoff_min: float = 1.0
    backoff_max: float = 600.0
    lease: float = 60.0          # longer than one attempt can take

    def backoff(self, attempt: int) -> float:
        """Exponential, with 10% jitter so retries of a burst spread out."""
        base = min(self.backoff_max, self.backoff_min * 2 ** (attempt - 1))
        return base * random.uniform(0.9, 1.1)


class Outcome(Exception):
    """How one attempt ended, when not with success."""

    def __init__(self, permanent: bool, code: int, reply: str):
        super().__init__(f"{code} {reply}")
        self.permanent, self.code, self.reply = permanent, code, reply


def _text(reply) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def classify(e: Exception) -> Outcome:
    """An SMTP error as a temporary or permanent outcome with its reply."""
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        codes = [(c, _text(m)) for c, m in e.recipients.values()]
        code, reply = max(codes) if codes else (0, "all recipients refused")
        return Outcome(all(c >= 500 for c, _ in codes), code, reply)
    if isinstance(e, smtplib.SMTPResponseException):
        return Outcome(e.smtp_code >= 500, e.smtp_code, _text(e.smtp_error))
    return Outcome(False, 0, f"{type(e).__name__}: {e}")


def transaction(smtp: smtplib.SMTP, sender: str, recipients: list,
                data: bytes) -> tuple:
    """MAIL, RCPT and DATA, as smtplib's sendmail, but keeping the relay's
    final reply (its queue id, often): (refused recipients, reply)."""
    code, reply = smtp.mail(sender)
    if code != 250:
        _reset(smtp)
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    refused = {}
    for rcpt in recipients:
        code, reply = smtp.rcpt(rcpt)
        if code not in (250, 251):
            refused[rcpt] = (code, reply)
    if len(refused) == len(recipients):
        _reset(smtp)
        raise smtplib.SMTPRecipientsRefused(refused)
    code, reply = smtp.data(data)
    if code != 250:
        _reset(smtp)
        raise smtplib.SMTPDataError(code, reply)
    return refused, f"{code} {_text(reply)}"


def _reset(smtp: smtplib.SMTP) -> None:
    try:
        smtp.rset()
    except smtplib.SMTPServerDisconnected:
        pass


class Sender:
    """One delivery thread: a kernel client and an SMTP connection."""

    def __init__(self, daemon: "Daemon", name: str):
        self.daemon = daemon
        self.name = name
        self.client = None
        self.smtp = None

    def run(self) -> None:
        d = self.daemon
        self.client = d.connect()     # a client serves one thread only
        try:
            while not d.stopping.is_set():
                for msg in self.client.queue.receive(d.outbox, BATCH, wait=POLL,
                                                     lease=d.policy.lease):
                    try:
                        self.handle(msg)
                    except FailedPrecondition as e:
                        # The lease ran out during the attempt and the notice
                        # went to another sender: that one owns it now.
                        log.warning("%s: %s; make --lease longer than an SMTP "
                                    "attempt takes", self.name, e.message)
        finally:
            self.close()
            self.client.close()

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self.smtp = None

    def relay(self, sender: str, recipients: list, data: bytes) -> tuple:
        """Hand one message to the relay: (refused recipients, reply)."""
        reused = self.smtp is not None
        try:
            if self.smtp is None:
                self.smtp = self.daemon.relay.connect()
            return transaction(self.smtp, sender, recipients, data)
        except smtplib.SMTPServerDisconnected:
            self.smtp = None
            if not reused:
                raise
        # The relay closed an idle connection: one try on a fresh one.
        self.smtp = self.daemon.relay.connect()
        return transaction(self.smtp, sender, recipients, data)

    def handle(self, msg) -> None:
        d, c = self.daemon, self.client
        try:
            notice = json.loads(msg.body)
            mail_id = notice["id"]
            status = json.loads(c.blob.get(status_key(mail_id)).data)
            data = c.blob.get(message_key(mail_id)).data \
                if status["state"] not in ("delivered", "dead") else b""
        except (ValueError, KeyError, TypeError, NotFound) as e:
            self.bury(msg, {"id": "", "body": msg.body.decode(errors="replace")},
                      {}, Outcome(True, 0, f"unreadable notice: {e}"))
            return
        if status["state"] in ("delivered", "dead"):
            c.queue.ack(d.outbox, msg.receipt)      # a duplicate notice
            return

        status.update(attempts=status["attempts"] + 1,
                      last_attempt_unix=time.time())
        try:
            refused, reply = self.relay(notice["from"], notice["to"], data)
        except (smtplib.SMTPException, OSError) as e:
            if not isinstance(e, smtplib.SMTPResponseException):
                self.close()
            self.failed(msg, notice, status, classify(e))
            return
        write_status(c, mail_id, **dict(
            status, state="delivered", reply=reply, delivered_unix=time.time(),
            refused={r: [code, _text(m)] for r, (code, m) in refused.items()}))
        c.queue.ack(d.outbox, msg.receipt)
        c.blob.delete(message_key(mail_id))
        d.count("delivered")

    def failed(self, msg, notice, status, outcome: Outcome) -> None:
        d = self.daemon
        attempts = status["attempts"]
        if outcome.permanent or attempts >= d.policy.max_attempts:
            self.bury(msg, notice, status, outcome)
            return
        delay = d.policy.backoff(attempts)
        log.info("%s: message %s: attempt %d failed (%s); retrying in %.1fs",
                 self.name, notice["id"], attempts, outcome, delay)
        write_status(self.client, notice["id"], **dict(
            status, state="retrying", code=outcome.code, reply=outcome.reply,
            next_attempt_unix=time.time() + delay))
        self.client.queue.change_lease(d.outbox, msg.receipt, delay)
        d.count("retried")

    def bury(self, msg, notice, status, outcome: Outcome) -> None:
        """Dead-letter a message with the relay's reply."""
        d, c = self.daemon, self.client
        log.warning("%s: message %s is dead after %d attempt(s): %s; its notice "
                    "is on %s", self.name, notice["id"], status.get("attempts", 0),
                    outcome, d.dead)
        c.queue.send(d.dead, json.dumps({
            **notice, "code": outcome.code, "reply": outcome.reply,
            "attempts": status.get("attempts", 0), "permanent": outcome.permanent,
        }).encode())
        if notice["id"]:
            write_status(c, notice["id"], **dict(
                status, state="dead", code=outcome.code, reply=outcome.reply,
                permanent=outcome.permanent))
        c.queue.ack(d.outbox, msg.receipt)
        d.count("dead")


class Daemon:
    """Deliver the tenant's outbox through a relay, with `concurrency`
    sender threads, until `stop()`."""

    def __init__(self, connect, relay: Relay, policy: Policy | None = None, *,
                 outbox: str = OUTBOX, concurrency: int = 1):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.connect = connect          # () -> a Client of the tenant
        self.relay = relay
        self.policy = policy or Policy()
        self.outbox, self.dead = outbox, dead_letters_of(outbox)
        self.concurrency = concurrency
        self.stopping = threading.Event()
        self.counts = {"delivered": 0, "retried": 0, "dead": 0}
        self._lock = threading.Lock()
        self._threads = []

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def start(self) -> None:
        with self.connect() as client:
            ensure_queues(client, self.outbox)
        for i in range(self.concurrency):
            sender = Sender(self, f"mail sender {i}")
            thread = threading.Thread(target=sender.run, name=sender.name,
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("mail daemon: delivering %s through %s:%d with %d sender(s)",
                 self.outbox, self.relay.host, self.relay.port, self.concurrency)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout)

    def run(self) -> None:
        """Start, and serve until stop() or a sender thread dies."""
        self.start()
        while not self.stopping.wait(0.5):
            if not all(t.is_alive() for t in self._threads):
                self.stop()
                raise RuntimeError("a mail sender thread died; see the log")
