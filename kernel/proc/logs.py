"""The captured stdout and stderr of one cloud process.

Output is kept as chunks at absolute offsets of the process's combined log,
bounded in bytes: over the bound the oldest chunks are dropped, so offsets
never move, and a read from before the first kept byte starts at it.
Readers that follow the log wait on futures woken by each append and by the
process's end.
"""

import asyncio
from collections import deque


class ProcessLog:
    def __init__(self, limit: int):
        self.limit = limit
        self.chunks: deque = deque()    # (offset, stream, data)
        self.start = 0                  # offset of the first kept byte
        self.end = 0
        self.closed = False
        self._waiters: list = []

    def append(self, stream: int, data: bytes) -> None:
        self.chunks.append((self.end, stream, data))
        self.end += len(data)
        while self.end - self.start > self.limit and len(self.chunks) > 1:
            offset, _, old = self.chunks.popleft()
            self.start = offset + len(old)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def read(self, offset: int) -> list[tuple[int, bytes, int]]:
        """(stream, data, offset past it) from `offset` to the end."""
        out = []
        for start, stream, data in self.chunks:
            stop = start + len(data)
            if stop <= offset:
                continue
            if start < offset:
                data = data[offset - start:]
            out.append((stream, data, stop))
        return out

    async def changed(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter
