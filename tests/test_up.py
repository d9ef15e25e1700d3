"""`nubis up`: one command boots the kernel, the demo tenant and the console."""

import os
import re
import signal
import smtplib
import subprocess
import sys
import time

import httpx
import pytest

from nubis.client import Client
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)


class Up:
    """`nubis up` in a subprocess on free ports, its banner parsed."""

    def __init__(self, folder):
        self.folder = str(folder)
        self.http_port, tcp, grpc = free_port(), free_port(), free_port()
        self.mail_port = free_port()
        self.url = f"zmq+ipc://{self.folder}/k.sock"
        self.console = f"http://127.0.0.1:{self.http_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUBIS_")}
        env["XDG_RUNTIME_DIR"] = self.folder
        self.out_path = os.path.join(self.folder, "up.log")
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nubis.cli.main", "up", "--zmq",
             f"ipc://{self.folder}/k.sock", "--zmq", f"tcp://127.0.0.1:{tcp}",
             "--grpc", f"127.0.0.1:{grpc}", "--http-port", str(self.http_port),
             "--mail-port", str(self.mail_port)],
            stdout=self.out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 40
        while "Ctrl-C stops everything." not in self.read():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"nubis up did not start:\n{self.read()}")
            time.sleep(0.1)
        self.token = re.search(r"token\s+(\S+)", self.read()).group(1)

    def client(self) -> Client:
        return Client(self.url, self.token)

    def read(self) -> str:
        with open(self.out_path) as f:
            return f.read()

    def interrupt(self, timeout: float = 25) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.out.close()


def test_up_serves_the_console_and_stops_cleanly_on_ctrl_c(tmp_path):
    up = Up(tmp_path)
    try:
        banner = up.read()
        assert up.console + "/" in banner and up.url in banner
        assert f"NUBIS_TOKEN={up.token}" in banner
        page = httpx.get(up.console + "/", timeout=10)
        assert page.status_code == 200 and "Nubis console" in page.text
        state = httpx.get(up.console + "/api/state", timeout=10).json()
        assert state["tenants"][0]["name"] == "demo"
        assert sorted(q["name"] for q in state["queues"]) == ["jobs",
                                                                "mail.inbox"]
        assert any(p["name"] == "http:console" and p["state"] == "RUNNING"
                   for p in state["processes"])
        assert f"smtp://127.0.0.1:{up.mail_port}" in banner
        with smtplib.SMTP("127.0.0.1", up.mail_port, timeout=10) as smtp:
            smtp.sendmail("a@example.org", ["b@example.org"],
                          "Subject: hello\r\n\r\nfrom the test\r\n")
        with up.client() as c:
            ports = sorted(listener.port for listener in c.listen.list())
            assert ports == sorted([up.http_port, up.mail_port])
            [notice] = c.queue.receive("mail.inbox", wait=5)
            assert b"mail/in/" in notice.body
    finally:
        code = up.interrupt()
    assert code == 0, up.read()
    assert "stopping" in up.read()
    with pytest.raises(httpx.HTTPError):
        httpx.get(up.console + "/", timeout=2)


def test_up_rejects_bad_options(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "nubis.cli.main", "up", "--zmq",
         "tcp://127.0.0.1:1", "--http-port", "8080"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 2 and "needs a ZeroMQ ipc:// endpoint" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "nubis.cli.main", "up", "--http-port", "70000"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 2 and "not a TCP port" in out.stderr
