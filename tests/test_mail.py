"""Mail in user space against a real SMTP server (aiosmtpd) started here:
delivery, retries with backoff, dead letters, STARTTLS and login, a daemon
killed between attempts, status from the CLI, and bad input."""

import email
import email.policy
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from email.message import EmailMessage

import pytest

pytest.importorskip("aiosmtpd")

from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult  # noqa: E402

from nubis.client import Client  # noqa: E402
from nubis.errors import InvalidArgument, NotFound  # noqa: E402
from nubis.services import mail  # noqa: E402

from .conftest import TOKENS, free_port  # noqa: E402


class Sink:
    """An aiosmtpd handler that keeps what it accepts and answers DATA from
    a script first ("451 ..." to refuse for now, "554 ..." for good)."""

    def __init__(self, script=(), reject=()):
        self.script = list(script)
        self.reject = set(reject)
        self.messages = []
        self.attempts = []

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address in self.reject:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.attempts.append(time.monotonic())
        if self.script:
            return self.script.pop(0)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              email.message_from_bytes(envelope.content,
                                                       policy=email.policy.default)))
        return "250 2.0.0 queued as 42"


@pytest.fixture
def smtp():
    """Start an SMTP server on a free port with a handler; stop it after."""
    started = []

    def start(handler, **options):
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                                **options)
        controller.start()
        started.append(controller)
        return controller.port

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def ipc(kernel):
    with Client(kernel.urls["zmq+ipc"], TOKENS["acme"]) as c:
        yield c


@pytest.fixture
def daemon(kernel, name):
    """Run a delivery daemon in this process for a test's own outbox."""
    running = []

    def start(port, **options):
        relay_options = {k: options.pop(k) for k in
                         ("starttls", "username", "password", "ca_file")
                         if k in options}
        outbox = options.pop("outbox", f"{name}.out")
        d = mail.Daemon(lambda: Client(kernel.urls["zmq+ipc"], TOKENS["acme"]),
                        mail.Relay("127.0.0.1", port, timeout=5, **relay_options),
                        mail.Policy(**{"max_attempts": 4, "backoff_min": 0.2,
                                       "backoff_max": 1.0, "lease": 5, **options}),
                        concurrency=2, outbox=outbox)
        d.start()
        running.append(d)
        return d

    yield start
    for d in running:
        d.stop()


def message(to="rcpt@example.com", **headers) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "app@example.com", to, "hello"
    for k, v in headers.items():
        msg[k] = v
    msg.set_content("Hello from Nubis.\n")
    return msg


def until_state(client, mail_id, states, timeout=15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = mail.status(mail_id, client=client)
        if record["state"] in states:
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.02)


def test_sent_messages_are_delivered_once_with_status(ipc, smtp, daemon, name):
    sink = Sink()
    d = daemon(smtp(sink))
    ids = [mail.send(message(to=f"r{i}@example.com"), client=ipc,
                     outbox=f"{name}.out") for i in range(5)]
    bcc = mail.send(message(Bcc="hidden@example.com"), client=ipc,
                    outbox=f"{name}.out")
    for mail_id in ids + [bcc]:
        record = until_state(ipc, mail_id, {"delivered"})
        assert record["attempts"] == 1
        assert record["reply"] == "250 2.0.0 queued as 42"
    time.sleep(0.3)
    for mail_id in ids + [bcc]:
        with pytest.raises(NotFound):
            ipc.blob.head(f"mail/{mail_id}/message")    # body dropped once sent
    assert len(sink.messages) == 6 and d.counts["delivered"] == 6
    got = {tuple(rcpts): msg for _, rcpts, msg in sink.messages}
    assert got[("r3@example.com",)].get_content().rstrip() == "Hello from Nubis."
    hidden = got[("rcpt@example.com", "hidden@example.com")]
    assert hidden["Bcc"] is None and hidden["Subject"] == "hello"


def test_refused_then_accepted_is_retried_with_backoff(ipc, smtp, daemon, name):
    sink = Sink(script=["451 4.3.0 try again later"] * 2)
    daemon(smtp(sink))
    mail_id = mail.send(message(), client=ipc, outbox=f"{name}.out")
    retrying = until_state(ipc, mail_id, {"retrying"})
    assert retrying["code"] == 451 and "try again later" in retrying["reply"]
    record = until_state(ipc, mail_id, {"delivered"})
    assert record["attempts"] == 3 and len(sink.messages) == 1
    first, second, third = sink.attempts
    assert 0.15 < second - first < 0.5 and 0.3 < third - second < 0.8   # doubles


def test_rejected_for_good_goes_to_dead_letters(ipc, smtp, daemon, name):
    sink = Sink(script=["554 5.7.1 message refused"], reject={"gone@example.com"})
    daemon(smtp(sink))
    refused = mail.send(message(), client=ipc, outbox=f"{name}.out")
    unknown = mail.send(message(to="gone@example.com"), client=ipc,
                        outbox=f"{name}.out")
    for mail_id, code, text in ((refused, 554, "message refused"),
                                (unknown, 550, "no such user")):
        record = until_state(ipc, mail_id, {"dead"})
        assert (record["code"], record["attempts"]) == (code, 1)
        assert text in record["reply"] and record["permanent"]
    dead = ipc.queue.receive(f"{name}.out.dead", 10, wait=2)
    letters = {json.loads(m.body)["id"]: json.loads(m.body) for m in dead}
    assert letters[unknown]["code"] == 550 and letters[refused]["code"] == 554
    assert "message refused" in letters[refused]["reply"]
    assert not sink.messages


def test_exhausted_retries_go_to_dead_letters(ipc, smtp, daemon, name):
    sink = Sink(script=["421 4.4.5 too busy"] * 10)
    daemon(smtp(sink), max_attempts=3, backoff_min=0.05, backoff_max=0.1)
    mail_id = mail.send(message(), client=ipc, outbox=f"{name}.out")
    record = until_state(ipc, mail_id, {"dead"})
    assert (record["attempts"], record["code"]) == (3, 421)
    assert not record["permanent"] and len(sink.attempts) == 3
    [letter] = ipc.queue.receive(f"{name}.out.dead", 10, wait=2)
    assert json.loads(letter.body)["reply"].startswith("4.4.5 too busy")


def test_an_unreachable_relay_is_a_temporary_failure(ipc, daemon, name):
    daemon(free_port(), max_attempts=2, backoff_min=0.05)
    mail_id = mail.send(message(), client=ipc, outbox=f"{name}.out")
    record = until_state(ipc, mail_id, {"dead"})
    assert record["code"] == 0 and "ConnectionRefusedError" in record["reply"]


def test_starttls_and_login(ipc, smtp, daemon, name, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((mechanism, auth_data.login, session.ssl is not None))
        ok = (auth_data.login, auth_data.password) == (b"app", b"secret")
        return AuthResult(success=ok, handled=False)

    sink = Sink()
    port = smtp(sink, tls_context=context, require_starttls=True,
                authenticator=authenticator)
    daemon(port, starttls=True, username="app", password="secret",
           ca_file=str(cert))
    mail_id = mail.send(message(), client=ipc, outbox=f"{name}.out")
    until_state(ipc, mail_id, {"delivered"})
    assert logins and logins[0][1:] == (b"app", True)

    # A second daemon, on an outbox of its own, with the wrong password: the
    # relay's 535 is permanent.
    daemon(port, starttls=True, username="app", password="wrong",
           ca_file=str(cert), outbox=f"{name}.bad")
    bad = mail.send(message(), client=ipc, outbox=f"{name}.bad")
    record = until_state(ipc, bad, {"dead"})
    assert record["code"] == 535 and record["permanent"]


def nubis(kernel, *args, **kwargs):
    env = {**os.environ, "NUBIS_URL": kernel.urls["zmq+ipc"],
           "NUBIS_TOKEN": TOKENS["acme"]}
    return subprocess.Popen([sys.executable, "-m", "nubis.cli.main", *args],
                            env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def children(pid: int) -> list:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_daemon_killed_between_attempts_delivers_once(kernel, ipc, smtp, name):
    sink = Sink(script=["451 4.3.0 greylisted"])
    port = smtp(sink)
    supervisor = nubis(kernel, "mail", "daemon", "--relay", f"127.0.0.1:{port}",
                       "--backoff", "1.0", "1.0", "--outbox", f"{name}.out",
                       "--lease", "5")
    try:
        mail_id = mail.send(message(), client=ipc, outbox=f"{name}.out")
        until_state(ipc, mail_id, {"retrying"})
        [child] = children(supervisor.pid)
        os.kill(child, signal.SIGKILL)       # in the backoff, between attempts
        record = until_state(ipc, mail_id, {"delivered"})
        assert record["attempts"] == 2
        assert children(supervisor.pid) != [child]     # restarted
        time.sleep(1.5)
        assert len(sink.messages) == 1 and len(sink.attempts) == 2
    finally:
        supervisor.send_signal(signal.SIGTERM)
        out, err = supervisor.communicate(timeout=15)
    assert supervisor.returncode == 0, err
    assert "exited with status -9; restarting" in err


def test_status_command_and_bad_input(kernel, ipc, name):
    mail_id = mail.send(message(), client=ipc, outbox=f"{name}.out")
    shown = nubis(kernel, "mail", "status", mail_id)
    out, _ = shown.communicate(timeout=30)
    assert out.strip() == f"{mail_id}: queued after 0 attempt(s)"
    shown = nubis(kernel, "--json", "mail", "status", mail_id)
    record = json.loads(shown.communicate(timeout=30)[0])
    assert record["recipients"] == ["rcpt@example.com"]
    missing = nubis(kernel, "mail", "status", "nope")
    _, err = missing.communicate(timeout=30)
    assert missing.returncode == 1
    assert "NOT_FOUND: mail message 'nope' not found" in err
    bad = nubis(kernel, "mail", "daemon", "--relay", "nohost")
    _, err = bad.communicate(timeout=30)
    assert bad.returncode == 2 and "expected HOST:PORT" in err

    with pytest.raises(InvalidArgument, match="must be an email.message"):
        mail.send("To: a@b.c\n\nhi", client=ipc)
    with pytest.raises(InvalidArgument, match="no recipients"):
        mail.send(message(to=""), client=ipc)
    no_from = message()
    del no_from["From"]
    with pytest.raises(InvalidArgument, match="no From header"):
        mail.send(no_from, client=ipc)
    with pytest.raises(InvalidArgument, match="malformed"):
        mail.status("a/b", client=ipc)


def unused_tenant_port() -> int:
    """A port of acme's range (20000-20099) nothing on this host holds now:
    other kernels (other test runs) may be listening on some."""
    import random
    import socket

    for port in random.sample(range(20080, 20100), 20):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("every port of 20080-20099 is taken on this host")


def test_inbound_smtp_on_a_listen_port_stores_and_notifies(kernel, ipc, name):
    import smtplib

    port = unused_tenant_port()
    server = nubis(kernel, "mail", "inbound", "--port", str(port), "--inbox",
                   f"{name}.in", "--domain", "example.org")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                smtp = smtplib.SMTP("127.0.0.1", port, timeout=5)
                break
            except OSError:
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "inbound did not attach"
                time.sleep(0.1)
        with smtp:
            msg = message(to="someone@example.org")
            refused = smtp.send_message(msg)
            assert refused == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
                smtp.send_message(message(to="x@elsewhere.net"))
            assert e.value.recipients["x@elsewhere.net"][0] == 550
        [notice] = ipc.queue.receive(f"{name}.in", 10, wait=5)
        info = json.loads(notice.body)
        assert info["from"] == "app@example.com"
        assert info["to"] == ["someone@example.org"]
        stored = email.message_from_bytes(ipc.blob.get(info["key"]).data,
                                          policy=email.policy.default)
        assert stored["Subject"] == "hello"
        assert stored.get_content().rstrip() == "Hello from Nubis."
        assert not ipc.queue.receive(f"{name}.in", 10, wait=0.2)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=15)
    assert server.returncode == 0, err
