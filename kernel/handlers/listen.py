"""LISTEN calls: check the request, hand it to the kernel's network, reply.

Checks that need no state (ports, modes, paths, limits) raise before a
stream opens, so a bad AttachListener is a plain error reply, not a stream
that ends at once.
"""

from nubis.calls import handler
from nubis.v1 import listen_pb2 as pb


@handler("Listen")
def listen(kernel, tenant, req, body):
    listener = kernel.net.listen(tenant, req)
    return pb.ListenResponse(port=listener.port)


@handler("Unlisten")
def unlisten(kernel, tenant, req, body):
    kernel.net.unlisten(tenant, req.port)
    return pb.UnlistenResponse()


@handler("AttachListener")
def attach_listener(kernel, tenant, req, body):
    return kernel.net.attach(tenant, req).stream()


@handler("RelayWrite")
def relay_write(kernel, tenant, req, body):
    drained = kernel.net.relay_write(tenant, req)
    if drained is None:
        return pb.RelayWriteResponse()
    return _after(drained)


async def _after(drained):
    await drained
    return pb.RelayWriteResponse()


@handler("ListListeners")
def list_listeners(kernel, tenant, req, body):
    return pb.ListListenersResponse(listeners=kernel.net.list(tenant))
