"""The sandbox a forked worker enters before it runs tenant code.

Runs in the zygote's children only. Order matters: a new session (so the
kernel can signal the whole process group), resource limits (hard limits,
which an unprivileged process cannot raise again), a private scratch folder
as the working directory, a fresh network namespace (it has only a loopback
that is down, so no TCP or UDP goes anywhere, while unix sockets still reach
the kernel's ipc endpoint), and last the tenant's unprivileged user id,
which drops every capability. `probe` tries the privileged steps once at
boot so the kernel can say plainly what is not isolated on this host.
"""

import ctypes
import os
import resource
import signal

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)

RLIMITS = {
    "memory_bytes": resource.RLIMIT_AS,
    "cpu_seconds": resource.RLIMIT_CPU,
    "open_files": resource.RLIMIT_NOFILE,
    "max_processes": resource.RLIMIT_NPROC,
    "file_bytes": resource.RLIMIT_FSIZE,
}


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), "prctl")


def unshare_network() -> None:
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")


def apply(spec: dict) -> None:
    """Enter the sandbox `spec` describes; raises OSError if a step fails."""
    os.setsid()
    for name, value in spec["limits"].items():
        if value:
            # CPU: the soft limit sends SIGXCPU, the hard one a second later
            # SIGKILL, so a handler of SIGXCPU cannot keep running.
            hard = value + 1 if name == "cpu_seconds" else value
            resource.setrlimit(RLIMITS[name], (value, hard))
    scratch = spec["scratch"]
    os.makedirs(scratch, mode=0o700, exist_ok=True)
    uid = spec.get("uid")
    if uid is not None:
        os.chown(scratch, uid, uid)
    os.chdir(scratch)
    if spec.get("netns"):
        unshare_network()
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def probe(uid: int) -> dict:
    """Which privileged steps work here, tried in a throwaway child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        result = {"netns": True, "setuid": os.geteuid() == 0}
        try:
            unshare_network()
        except OSError:
            result["netns"] = False
        if result["setuid"]:
            try:
                os.setgid(uid)
                os.setuid(uid)
            except OSError:
                result["setuid"] = False
        stdlib = os.path.dirname(os.__file__)
        result["stdlib"] = os.access(stdlib, os.R_OK | os.X_OK)
        os.write(write_end, bytes([result["netns"], result["setuid"],
                                   result["stdlib"]]))
        os._exit(0)
    os.close(write_end)
    got = os.read(read_end, 3)
    os.close(read_end)
    os.waitpid(pid, 0)
    if len(got) != 3:
        return {"netns": False, "setuid": False, "stdlib": True}
    return {"netns": bool(got[0]), "setuid": bool(got[1]),
            "stdlib": bool(got[2]), "stdlib_path": os.path.dirname(os.__file__)}
