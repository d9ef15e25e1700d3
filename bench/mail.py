"""Mail delivery: messages per second to a local aiosmtpd sink, and the time
from `mail.send` to the sink's 250, at p50 and p99.

    python -m nubis.bench.mail [--messages 2000] [--rate 50] [--json]

Processes: a kernel (ZeroMQ over ipc), the delivery daemon (`nubis mail
daemon --no-supervise`, --concurrency senders, each with its own SMTP
connection), an aiosmtpd sink that writes the arrival time of each message
(CLOCK_MONOTONIC, shared by every process of the machine) and this process,
which sends. Throughput: --messages are queued first, then the daemon
starts, and the rate is timed from the first arrival at the sink to the
last. Latency: with the daemon idle, --latency messages sent one at a time
at --rate per second, each stamped with its send time.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from email.message import EmailMessage

SINK = """
import sys, time
from aiosmtpd.controller import Controller

class Sink:
    async def handle_DATA(self, server, session, envelope):
        stamp = envelope.content.split(b"X-Sent: ", 1)[1].split(b"\\r\\n", 1)[0]
        print(stamp.decode(), time.monotonic(), flush=True)
        return "250 OK"

c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"""


class Arrivals:
    """Read the sink's lines: (send stamp, arrival) per delivered message."""

    def __init__(self, sink: subprocess.Popen):
        self.times = {}
        self.cond = threading.Condition()
        self.sink = sink
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.sink.stdout:
            stamp, arrived = line.split()
            with self.cond:
                self.times[stamp] = float(arrived)
                self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = 300) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.times) >= n, timeout):
                raise RuntimeError(f"{len(self.times)} of {n} messages arrived")


def message(stamp: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"] = "bench@example.com", "sink@example.com"
    msg["Subject"] = "x"
    msg["X-Sent"] = stamp
    msg.set_content("A short message from the Nubis mail benchmark.\n")
    return msg


def percentile(values: list, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--latency", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from nubis.bench.servers import Fleet, free_port
    from nubis.client import Client
    from nubis.services import mail

    port = free_port()
    with Fleet() as fleet:
        kernel = fleet.kernel(grpc=False)
        url, token = kernel["urls"]["zmq+ipc"], kernel["token"]
        sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        assert sink.stdout.readline().strip() == "ready"
        env = {**os.environ, "NUBIS_URL": url, "NUBIS_TOKEN": token}
        arrivals = Arrivals(sink)
        daemon = None
        try:
            with Client(url, token) as c:
                start = time.monotonic()
                for i in range(args.messages):
                    mail.send(message(f"t{i}"), client=c)
                sent = time.monotonic() - start
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "nubis.cli.main", "mail", "daemon",
                     "--relay", f"127.0.0.1:{port}", "--concurrency",
                     str(args.concurrency), "--no-supervise"], env=env,
                    stderr=subprocess.DEVNULL)
                arrivals.wait_for(args.messages)
                times = arrivals.times.values()
                throughput = (args.messages - 1) / (max(times) - min(times))

                latencies = []
                for i in range(args.latency):
                    at = time.monotonic()
                    mail.send(message(f"l{i}"), client=c)
                    time.sleep(max(0.0, at + 1 / args.rate - time.monotonic()))
                    latencies.append(at)
                arrivals.wait_for(args.messages + args.latency)
                lat = [arrivals.times[f"l{i}"] - at for i, at in enumerate(latencies)]
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait(15)
            sink.stdin.close()
            sink.wait(15)

    result = {"messages": args.messages, "concurrency": args.concurrency,
              "send_per_s": args.messages / sent, "delivered_per_s": throughput,
              "latency_rate_per_s": args.rate,
              "latency_p50_ms": percentile(lat, 0.5) * 1000,
              "latency_p99_ms": percentile(lat, 0.99) * 1000,
              "latency_max_ms": max(lat) * 1000}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"mail: {args.messages} messages, {args.concurrency} SMTP senders: "
          f"{throughput:.0f} delivered/s (queued at {result['send_per_s']:.0f}/s "
          "by one client)")
    print(f"send -> sink at {args.rate:.0f}/s: p50 {result['latency_p50_ms']:.2f} ms"
          f"  p99 {result['latency_p99_ms']:.2f} ms  max "
          f"{result['latency_max_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
