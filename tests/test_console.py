"""The console, deployed by `nubis up`, seen through headless Chromium.

The page draws itself with JavaScript from /api/state, so the test lets the
browser run its script (--virtual-time-budget) and reads the DOM it built.
"""

import os
import re
import subprocess

import httpx
import pytest

from tests.test_up import Up

pytestmark = pytest.mark.timeout(60)

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    up = Up(tmp_path_factory.mktemp("c", numbered=True))
    with up.client() as c:
        c.queue.create("orders")
        c.queue.send("orders", b"a", b"b", b"c")
        c.blob.put("reports/q3.csv", b"x" * 1234, content_type="text/csv")
        reply = c.spawn.spawn("main", "def main(args):\n    return b'done'\n",
                              name="adder")
        c.spawn.wait(reply.pid, 10)
    yield up
    assert up.interrupt() == 0, up.read()


def cells(dom: str, column: str) -> list[str]:
    return re.findall(rf'data-col="{re.escape(column)}">([^<]*)</td>', dom)


def test_state_json_shows_the_kernel(up):
    state = httpx.get(up.console + "/api/state", timeout=10).json()
    orders = next(q for q in state["queues"] if q["name"] == "orders")
    assert orders["depth"] == 3 and orders["in_flight"] == 0
    assert any(b["key"] == "reports/q3.csv" and b["size"] == 1234
               for b in state["blobs"])
    assert {"adder", "http:console"} <= {p["name"] for p in state["processes"]}
    assert state["usage"][0]["tenant"] == "demo"
    assert state["latency"]["calls"] > 0 and state["latency"]["p99_us"] > 0
    assert any(s["call"].endswith("SendMessages") for s in state["calls"])
    assert httpx.post(up.console + "/").status_code == 405
    assert httpx.get(up.console + "/nothere").status_code == 404


@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason="headless Chromium (Debian's chromium) is not installed")
def test_page_in_headless_chromium(up, tmp_path):
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path}", "--virtual-time-budget=8000",
         "--dump-dom", up.console + "/"],
        capture_output=True, text=True, timeout=45)
    dom = out.stdout
    assert "Nubis console" in dom, out.stderr[-2000:]
    assert "demo" in cells(dom, "tenant")
    queues = cells(dom, "queue")
    assert "orders" in queues
    assert cells(dom, "depth")[queues.index("orders")] == "3"
    assert "reports/q3.csv" in cells(dom, "key")
    names = cells(dom, "name")
    assert "adder" in names and "http:console" in names
    assert "SUCCEEDED" in cells(dom, "state") and "RUNNING" in cells(dom, "state")
    assert str(up.http_port) in cells(dom, "port")
    assert int(cells(dom, "calls")[0]) > 0          # usage of the demo tenant
    assert float(cells(dom, "p99 us")[0]) > 0       # round trips, measured
    assert "<path" in dom                           # the chart was drawn
