"""CPU and memory of live workers, read from /proc (the kernel's own view).

A worker's tenant code could lie about its usage, so the kernel measures it:
/proc/PID/stat before and after each attempt on a warm worker, and the
rusage the zygote reports from wait4 when the worker exits.
"""

import os

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system seconds of a process and its reaped children."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    # fields[0] is field 3 of proc(5): utime is 14, stime 15, cutime 16, cstime 17
    user = int(fields[11]) + int(fields[13])
    system = int(fields[12]) + int(fields[14])
    return user / _TICK, system / _TICK


def peak_memory(pid: int) -> int:
    """Peak resident bytes of a process (VmHWM), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
