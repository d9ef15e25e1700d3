"""Snapshots: every tenant's stores and the journal's own state, in one file.

A snapshot is written by a forked child of the kernel (as Redis's BGSAVE
is): the fork freezes the state at a record boundary at no cost to the
parent, which goes on serving and appending to a new segment. The child
pickles, writes `snapshot.tmp`, fsyncs it, renames it over `snapshot`,
fsyncs the folder and exits; only then does the parent delete the segments
the snapshot covers. A crash at any point leaves either the old snapshot
and all its segments, or the new one and the segments after it.

The file is MAGIC, a u64 length, a u32 CRC-32, and a pickle. It is loaded
with an unpickler that builds only the store classes of ALLOWED; the kernel
clock the stores hold is written as a reference and bound again on load.
The compiled stores pickle as plain data and a loader of their module
(nubis._ext), so a snapshot they write loads where that module is built.
"""

import io
import os
import pickle
import struct
import types
import zlib

from nubis import _hot

MAGIC = b"NUBISS1\n"
HEADER = struct.Struct("<QI")
NAME = "snapshot"

ALLOWED = {
    ("collections", "OrderedDict"), ("collections", "deque"),
    ("sortedcontainers.sortedlist", "SortedList"),
    ("nubis.queue.store", "QueueStore"), ("nubis.queue.store", "_Queue"),
    ("nubis.queue.store", "_Message"), ("nubis.queue.store", "QueueSettings"),
    ("nubis.queue.store", "QueueLimits"),
    ("nubis.blob.store", "BlobStore"), ("nubis.blob.store", "Blob"),
    ("nubis.blob.store", "BlobLimits"),
    ("nubis._ext.queue_store", "_load_queue_store"),
    ("nubis._ext.blob_store", "_load_blob_store"),
}


class SnapshotError(Exception):
    """A snapshot that cannot be read; the message says why."""


class _Pickler(pickle.Pickler):
    def __init__(self, file, clock):
        super().__init__(file, protocol=5)
        self.clock = clock

    def persistent_id(self, obj):
        if type(obj) is types.MethodType and obj.__self__ is self.clock:
            return "clock"
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, clock):
        super().__init__(file)
        self.clock = clock

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"snapshot may not hold {module}.{name}")
        ext = module.startswith("nubis._ext.") and module.rpartition(".")[2]
        if ext and not _hot.built(ext):
            raise pickle.UnpicklingError(
                f"snapshot was written by the compiled stores, and {module} "
                "is not built here; rebuild it with `pip install .`")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if pid != "clock":
            raise pickle.UnpicklingError(f"unknown reference {pid!r}")
        return self.clock.now


def dumps(state: dict, clock) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, clock).dump(state)
    return buffer.getvalue()


def loads(payload, clock) -> dict:
    """The state in a pickle `dumps` made; raises pickle's errors."""
    return _Unpickler(io.BytesIO(payload), clock).load()


def write(folder: str, state: dict, clock) -> None:
    """Write a snapshot atomically: tmp file, fsync, rename, fsync folder."""
    payload = dumps(state, clock)
    tmp = os.path.join(folder, NAME + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC + HEADER.pack(len(payload), zlib.crc32(payload)))
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(folder, NAME))
    sync_folder(folder)


def read(folder: str, clock) -> dict | None:
    """The snapshot in `folder`, None if there is none; raises SnapshotError."""
    path = os.path.join(folder, NAME)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    head = len(MAGIC) + HEADER.size
    if len(data) < head or not data.startswith(MAGIC):
        raise SnapshotError(f"{path} is not a nubis snapshot")
    length, crc = HEADER.unpack_from(data, len(MAGIC))
    payload = memoryview(data)[head:]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise SnapshotError(f"{path} is damaged (length or checksum)")
    try:
        return loads(payload, clock)
    except Exception as e:
        raise SnapshotError(f"{path} does not load: {e}") from None


def sync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
