"""The journal: acknowledged changes survive a crash of the kernel.

Theory of operation. The stores are deterministic state machines: given the
same calls with the same arguments at the same clock readings, they reach
the same state, in both twins. So the journal is a log of store calls (a
command log), not of state:

- When the kernel journals, each tenant's stores are wrapped
  (nubis.journal.stores). A wrapped call pins the kernel clock to one
  reading, runs, and appends the record (op, tenant, time, ok, args); the
  handlers do not change. Tenants made and deleted at run time, spawns
  accepted and processes ended are appended by their handlers.
- Boot loads the snapshot if there is one, then replays the segments after
  it in order, each call with the clock pinned to its recorded reading. The
  leases held at the crash are then released (a journaled call itself), so
  those messages are delivered again; acknowledged ones stay gone. Cloud
  processes accepted and not ended run again from their first attempt.
- Durability is the fsync policy: `always` answers a call only once the
  records it appended are on disk; records appended while one fsync runs
  share the next (group commit), so calls in flight share their fsyncs.
  `everysec` writes and fsyncs once a second and answers at once: a crash
  loses at most about the last second. `none` journals nothing.
- The records of one kernel are written in the order they were appended,
  so what survives a crash is always a prefix of what happened: a record a
  reply waited for never survives without the records before it.
- Records are framed and checksummed (nubis.journal.codec). A torn or
  damaged record ends replay there: the rest is cut off with a WARNING that
  names the file, the offset and what was dropped, set aside as `.bad-N`,
  and the kernel boots.
- Compaction: once the segments since the last snapshot pass
  `journal_compact_bytes`, the kernel starts a new segment and forks; the
  child writes a snapshot of every store as it was at that record, and the
  older segments are deleted once it is safely renamed into place
  (nubis.journal.snapshot). Replay then costs the snapshot plus the tail.

Invariants: a record is appended only for a call that ran, right after it
ran, with the clock reading it ran at; replay never appends; the clock is
pinned only inside a journaled call or a replayed one.
"""

from nubis.journal.log import ALWAYS, EVERYSEC, NONE, POLICIES, Journal

__all__ = ["ALWAYS", "EVERYSEC", "NONE", "POLICIES", "Journal"]
