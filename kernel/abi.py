"""The cloud-call ABI as data, read from the generated protobuf descriptors.

Every cloud call is declared once, in proto/: its service, method, request
and response messages and its wire id (the `call_id` method option). This
module turns those declarations into `Method` rows, which the kernel's call
table, both transports and the client library all build on.
"""

from dataclasses import dataclass

from google.protobuf import descriptor, message_factory

from nubis.v1 import (
    account_pb2,
    blob_pb2,
    listen_pb2,
    options_pb2,
    queue_pb2,
    spawn_pb2,
)

PACKAGE = "nubis.v1"
SERVICE_MODULES = (queue_pb2, blob_pb2, spawn_pb2, listen_pb2, account_pb2)


@dataclass(frozen=True, slots=True)
class Method:
    """One cloud call as the ABI declares it."""

    id: int
    service: str          # "QueueService"
    name: str             # "SendMessages"
    path: str             # "/nubis.v1.QueueService/SendMessages", gRPC's name
    request: type
    response: type
    client_streaming: bool
    server_streaming: bool
    content_in: bool      # bulk content follows the request
    content_out: bool     # bulk content follows the response
    events: bool          # the response is a stream of event messages

    @property
    def key(self) -> str:
        """Short name used by the CLI and accounting: "queue.SendMessages"."""
        return f"{self.service.removesuffix('Service').lower()}.{self.name}"


def _methods_of(service: descriptor.ServiceDescriptor) -> list[Method]:
    rows = []
    for m in service.methods:
        opts = m.GetOptions()
        call_id = opts.Extensions[options_pb2.call_id]
        content = opts.Extensions[options_pb2.content]
        if not call_id:
            raise RuntimeError(f"{service.full_name}.{m.name} has no call_id")
        rows.append(Method(
            id=call_id,
            service=service.name,
            name=m.name,
            path=f"/{service.full_name}/{m.name}",
            request=message_factory.GetMessageClass(m.input_type),
            response=message_factory.GetMessageClass(m.output_type),
            client_streaming=m.client_streaming,
            server_streaming=m.server_streaming,
            content_in=content == options_pb2.CONTENT_IN,
            content_out=content == options_pb2.CONTENT_OUT,
            events=m.server_streaming and content != options_pb2.CONTENT_OUT,
        ))
    return rows


def _load() -> tuple[Method, ...]:
    rows = []
    for module in SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            rows.extend(_methods_of(service))
    ids = [m.id for m in rows]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"duplicate call ids in the ABI: {sorted(ids)}")
    return tuple(sorted(rows, key=lambda m: m.id))


METHODS: tuple[Method, ...] = _load()
BY_ID: dict[int, Method] = {m.id: m for m in METHODS}
BY_NAME: dict[str, Method] = {m.name: m for m in METHODS}
BY_PATH: dict[str, Method] = {m.path: m for m in METHODS}
SERVICE_NAMES: tuple[str, ...] = tuple(
    sorted({f"{PACKAGE}.{m.service}" for m in METHODS})
)
