"""The floors and the NATS responder, each run as a process of its own.

    python -m nubis.bench.echo zmq ENDPOINT...    a bare pyzmq ROUTER echo
    python -m nubis.bench.echo grpc HOST:PORT     a bare grpcio unary echo
    python -m nubis.bench.echo nats URL SUBJECT   a NATS request responder

A floor is what a cloud call cannot beat on its transport. The pyzmq echo
gets the frames a Nubis call carries (routing id, 12-byte header, body)
with the kernel's copy rules, on a blocking loop with nothing else to do.
The gRPC echo is one unary method of bytes, from a generic handler (no
generated code), on a grpc.aio server on uvloop, as the kernel's. Each
exits on SIGTERM or SIGINT, and when the process that started it is gone.
"""

import asyncio
import logging
import os
import sys

log = logging.getLogger("nubis.bench.echo")

GRPC_METHOD = "/nubis.bench.Echo/Echo"
MAX_MESSAGE = 16 << 20


def serve_zmq(endpoints: list[str]) -> None:
    """Echo every message back to its sender, frame for frame."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.linger = 0
    sock.sndhwm = 0
    sock.maxmsgsize = MAX_MESSAGE
    for endpoint in endpoints:
        sock.bind(endpoint)
    parent = os.getppid()
    recv, send = sock.recv, sock.send_multipart

    while True:
        if not sock.poll(1000):
            if os.getppid() != parent:
                return
            continue
        frames = [recv(), recv()]
        while sock.rcvmore:
            frames.append(recv(copy=False))
        send(frames, copy=False)


async def serve_grpc(address: str) -> None:
    """Answer every unary call with its own request bytes."""
    import grpc

    async def echo(request: bytes, context) -> bytes:
        return request

    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.so_reuseport", 0),
    ])
    service, method = GRPC_METHOD.strip("/").split("/")
    handler = grpc.unary_unary_rpc_method_handler(echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),))
    if not server.add_insecure_port(address):
        raise SystemExit(f"echo: cannot bind gRPC on {address}")
    await server.start()
    try:
        await _until_orphaned()
    finally:
        await server.stop(0)


async def serve_nats(url: str, subject: str) -> None:
    """Reply to every request on `subject` with its own payload."""
    import nats

    nc = await nats.connect(url, max_reconnect_attempts=0)

    async def respond(msg) -> None:
        await nc.publish(msg.reply, msg.data)

    await nc.subscribe(subject, cb=respond)
    await nc.flush()
    try:
        await _until_orphaned()
    finally:
        await nc.close()


async def _until_orphaned() -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    if len(argv) < 2 or argv[0] not in ("zmq", "grpc", "nats"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[0] == "zmq":
            serve_zmq(argv[1:])
            return 0
        import uvloop

        if argv[0] == "grpc":
            uvloop.run(serve_grpc(argv[1]))
        else:
            uvloop.run(serve_nats(argv[1], argv[2]))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
