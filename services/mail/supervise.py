"""A restart loop: keep a daemon's process running, as SPAWN does for
cloud processes, for a daemon that must stay outside the sandbox."""

import logging
import signal
import subprocess
import time

log = logging.getLogger("nubis.mail")

HEALTHY = 10.0     # seconds of running that reset the crash-loop backoff


def supervise(argv: list, backoff: tuple = (0.5, 30.0)) -> int:
    """Run argv, restarting it whenever it fails, with doubling backoff;
    SIGTERM and SIGINT are passed on and end the loop. Returns the last
    exit status (0 when stopped by a signal)."""
    stopping = []
    child = None

    def forward(signum, frame):
        stopping.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    delay = backoff[0]
    try:
        while True:
            started = time.monotonic()
            child = subprocess.Popen(argv)
            status = child.wait()
            if stopping or status == 0:
                return 0 if stopping else status
            if time.monotonic() - started > HEALTHY:
                delay = backoff[0]
            log.warning("daemon (pid %d) exited with status %d; restarting in "
                        "%.1fs", child.pid, status, delay)
            time.sleep(delay)
            if stopping:
                return 0
            delay = min(backoff[1], delay * 2)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
