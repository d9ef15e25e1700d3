"""A Redis-protocol (RESP2) daemon: keys are the tenant's blobs, lists its
queues.

    nubis listen run nubis.services.resp --port 20002 --processes 2
    redis-cli -p 20002 set greeting hello

Commands: PING, ECHO, GET, SET (with NX), DEL, EXISTS, KEYS (a prefix
pattern such as `user:*`), LPUSH (send), RPOP (receive, then ack), LLEN
(the queue's visible depth), and enough of CONFIG, CLIENT, SELECT and
COMMAND that redis-cli, redis-py and redis-benchmark connect. A list is a
queue whose name is the key, with each byte outside [A-Za-z0-9_-] written
as `.` and two hex digits (`jobs:new` is the queue `jobs.3anew`).

Replies keep the order of their commands, while the commands of one
connection (pipelined ones too) run concurrently: they are sent to the
kernel in order on one connection, which serves them in order.
"""

import asyncio
import re
from collections import deque

from nubis.errors import AlreadyExists, FailedPrecondition, NotFound, NubisError
from nubis.services import listen

MAX_BULK = 512 << 20
MAX_ARGS = 1 << 20
MAX_INLINE = 64 << 10
OK = b"+OK\r\n"
NIL = b"$-1\r\n"
_SAFE = re.compile(rb"[A-Za-z0-9_-]")
_GLOB = re.compile(r"[*?\[\\]")


class ProtocolError(Exception):
    """The peer broke RESP; the connection is closed after the error."""


class Parser:
    """RESP2 requests (multibulk or inline) from bytes; no I/O."""

    def __init__(self):
        self.buf = b""

    def feed(self, data: bytes) -> list:
        """The complete commands in the bytes so far, each a list of bytes."""
        buf = self.buf + data if self.buf else data
        commands, at = [], 0
        while at < len(buf):
            if buf[at] == 0x2A:            # "*": multibulk
                parsed = self._multibulk(buf, at)
            else:
                parsed = self._inline(buf, at)
            if parsed is None:
                break
            command, at = parsed
            if command:
                commands.append(command)
        self.buf = buf[at:]
        return commands

    def _multibulk(self, buf: bytes, at: int):
        end = buf.find(b"\r\n", at)
        if end < 0:
            return None
        count = _number(buf[at + 1:end], MAX_ARGS, "multibulk length")
        at = end + 2
        args = []
        for _ in range(count):
            end = buf.find(b"\r\n", at)
            if end < 0:
                return None
            if buf[at] != 0x24:            # "$"
                raise ProtocolError(f"expected '$', got {chr(buf[at])!r}")
            size = _number(buf[at + 1:end], MAX_BULK, "bulk length")
            start, stop = end + 2, end + 2 + size
            if len(buf) < stop + 2:
                return None
            args.append(buf[start:stop])
            at = stop + 2
        return args, at

    def _inline(self, buf: bytes, at: int):
        end = buf.find(b"\n", at)
        if end < 0:
            if len(buf) - at > MAX_INLINE:
                raise ProtocolError("too big inline request")
            return None
        return buf[at:end].split(), end + 1


def _number(text: bytes, limit: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ProtocolError(f"invalid {what} {text[:20]!r}") from None
    if not 0 <= value <= limit:
        raise ProtocolError(f"invalid {what} {value}")
    return value


def bulk(value: bytes | None) -> bytes:
    if value is None:
        return NIL
    return b"$%d\r\n%s\r\n" % (len(value), value)


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def array(items: list) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(bulk(i) for i in items)


def error(text: str) -> bytes:
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


def queue_name(key: bytes) -> str:
    """The queue holding the list `key`."""
    return "".join(chr(b) if _SAFE.match(bytes([b])) else f".{b:02x}"
                   for b in key)


def list_key(name: str) -> bytes:
    """The list key of a queue name (the inverse of queue_name)."""
    out, at = bytearray(), 0
    while at < len(name):
        if name[at] == "." and re.fullmatch(r"[0-9a-f]{2}", name[at + 1:at + 3]):
            out.append(int(name[at + 1:at + 3], 16))
            at += 3
        else:
            out += name[at].encode()
            at += 1
    return bytes(out)


class Commands:
    """The commands, each `async def name(self, args) -> reply bytes`; the
    table below gives each one's arity (negative: at least that many)."""

    def __init__(self, client):
        self.blob = client.blob
        self.queue = client.queue

    async def ping(self, args):
        return bulk(args[0]) if args else b"+PONG\r\n"

    async def echo(self, args):
        return bulk(args[0])

    async def get(self, args):
        try:
            return bulk((await self.blob.get(_key(args[0]))).data)
        except NotFound:
            return NIL

    async def set(self, args):
        options = [a.upper() for a in args[2:]]
        if any(o != b"NX" for o in options):
            return error("ERR syntax error: SET takes only NX here")
        try:
            await self.blob.put(_key(args[0]), args[1],
                                if_none_match=bool(options))
        except (AlreadyExists, FailedPrecondition):
            return NIL
        return OK

    async def delete(self, args):
        removed = 0
        for arg in args:
            for remove in (self._delete_blob, self._delete_list):
                removed += await remove(arg)
        return integer(removed)

    async def _delete_blob(self, key: bytes) -> int:
        try:
            await self.blob.delete(_key(key))
        except NotFound:
            return 0
        return 1

    async def _delete_list(self, key: bytes) -> int:
        try:
            await self.queue.delete(queue_name(key))
        except NotFound:
            return 0
        return 1

    async def exists(self, args):
        found = 0
        for arg in args:
            try:
                await self.blob.head(_key(arg))
                found += 1
            except NotFound:
                found += await self._depth(arg) is not None
        return integer(found)

    async def keys(self, args):
        pattern = _key(args[0])
        prefix = pattern[:-1] if pattern.endswith("*") else pattern
        if _GLOB.search(prefix):
            return error("ERR KEYS takes a prefix pattern here, as 'user:*'")
        found = await self._blob_keys(prefix)
        found += [k for k in await self._list_keys() if k.startswith(
            prefix.encode())]
        if prefix == pattern:
            found = [k for k in found if k == pattern.encode()]
        return array(sorted(set(found)))

    async def _blob_keys(self, prefix: str) -> list:
        keys, token = [], ""
        while True:
            page = await self.blob.list(prefix, page_token=token)
            keys += [b.key.encode() for b in page.blobs]
            token = page.next_page_token
            if not token:
                return keys

    async def _list_keys(self) -> list:
        keys, token = [], ""
        while True:
            page = await self.queue.list(page_token=token)
            keys += [list_key(n) for n in page.names]
            token = page.next_page_token
            if not token:
                return keys

    async def lpush(self, args):
        name = queue_name(args[0])
        try:
            await self.queue.send(name, *args[1:])
        except NotFound:
            await self.queue.create(name)
            await self.queue.send(name, *args[1:])
        return integer(await self._depth(args[0]) or 0)

    async def rpop(self, args):
        name = queue_name(args[0])
        try:
            got = await self.queue.receive(name, 1)
        except NotFound:
            return NIL
        if not got:
            return NIL
        await self.queue.ack(name, got[0].receipt)
        return bulk(got[0].body)

    async def llen(self, args):
        return integer(await self._depth(args[0]) or 0)

    async def _depth(self, key: bytes) -> int | None:
        try:
            return (await self.queue.attributes(queue_name(key))).depth
        except (NotFound, NubisError):
            return None

    async def ok(self, args):
        return OK

    async def hello(self, args):
        if args and args[0] not in (b"2",):
            return error("NOPROTO this server speaks RESP2 only")
        fields = [b"server", b"nubis-resp", b"version", b"7.0.0", b"proto"]
        return (b"*14\r\n" + b"".join(bulk(f) for f in fields) + integer(2)
                + bulk(b"id") + integer(0) + bulk(b"mode") + bulk(b"standalone")
                + bulk(b"role") + bulk(b"master") + bulk(b"modules") + b"*0\r\n")

    async def config(self, args):
        return b"*0\r\n"

    async def command(self, args):
        return b"*0\r\n"


TABLE = {
    b"PING": ("ping", -1), b"ECHO": ("echo", 2), b"GET": ("get", 2),
    b"SET": ("set", -3), b"DEL": ("delete", -2), b"EXISTS": ("exists", -2),
    b"KEYS": ("keys", 2), b"LPUSH": ("lpush", -3), b"RPOP": ("rpop", 2),
    b"LLEN": ("llen", 2), b"CONFIG": ("config", -2), b"CLIENT": ("ok", -2),
    b"SELECT": ("ok", 2), b"COMMAND": ("command", -1), b"QUIT": ("ok", 1),
    b"HELLO": ("hello", -1),
}


def _key(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise NubisErrorReply("ERR keys must be UTF-8 here") from None


class NubisErrorReply(Exception):
    """A command's error reply, raised from deep inside it."""


class RespProtocol(asyncio.Protocol):
    """One RESP connection: commands in, replies out in order."""

    def __init__(self, commands: Commands):
        self.commands = commands
        self.parser = Parser()
        self.replies: deque = deque()
        self.transport = None
        self.quit = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            commands = self.parser.feed(data)
        except ProtocolError as e:
            self._answer(error(f"ERR Protocol error: {e}"))
            self.quit = True
            commands = []
        for args in commands:
            self._run(args)
        if self.quit:
            self._answer(None)

    def _run(self, args: list) -> None:
        name = args[0].upper()
        entry = TABLE.get(name)
        if entry is None:
            return self._answer(error(f"ERR unknown command '{_text(args[0])}'"))
        method, arity = entry
        if (arity > 0 and len(args) != arity) or len(args) < -arity:
            return self._answer(error(f"ERR wrong number of arguments for "
                                      f"'{_text(args[0]).lower()}' command"))
        if name == b"QUIT":
            self.quit = True
        task = asyncio.ensure_future(_reply(getattr(self.commands, method),
                                            args[1:]))
        self.replies.append(task)
        task.add_done_callback(self._flush)

    def _answer(self, reply: bytes | None) -> None:
        """Queue a reply already known (None: close after the others)."""
        future = asyncio.get_running_loop().create_future()
        future.set_result(reply)
        self.replies.append(future)
        self._flush()

    def _flush(self, _=None) -> None:
        replies, out = self.replies, []
        while replies and replies[0].done():
            reply = replies.popleft().result()
            if reply is None:
                break
            out.append(reply)
        if out and not self.transport.is_closing():
            self.transport.write(b"".join(out))
        if self.quit and not replies:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        for task in self.replies:
            task.cancel()


async def _reply(command, args) -> bytes:
    try:
        return await command(args)
    except NubisErrorReply as e:
        return error(str(e))
    except NubisError as e:
        return error(f"ERR {e.code.name}: {e.message}")


def _text(raw: bytes) -> str:
    return raw.decode(errors="replace")[:64]


async def serve(port: int, mode: str = "handoff") -> None:
    """Serve RESP on `port` with this process's client."""
    client = await listen.connect()
    commands = Commands(client)
    try:
        await listen.serve(lambda: RespProtocol(commands), port, mode=mode,
                           client=client)
    finally:
        await client.close()


def main(args: bytes) -> None:
    port, _, mode = args.decode().partition(" ")
    listen.run_main(serve(int(port), mode.strip() or "handoff"))
