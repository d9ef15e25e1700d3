"""A client generated from proto/ alone, as any gRPC language would make one.

The stubs are generated here with protoc's gRPC plugin (grpc_tools), in a
scratch folder, from nothing but the .proto files; no Nubis code is used on
the client side.
"""

import hashlib
import importlib
import os
import sys

import grpc
import pytest
from grpc_tools import protoc

from .conftest import TOKENS

PROTO = os.path.join(os.path.dirname(os.path.dirname(__file__)), "proto")


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs")
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    protos = [os.path.join("nubis", "v1", f) for f in
              ("options.proto", "queue.proto", "blob.proto")]
    rc = protoc.main(["protoc", f"-I{PROTO}", f"-I{well_known}",
                      f"--python_out={out}", f"--grpc_python_out={out}",
                      *[os.path.join(PROTO, p) for p in protos]])
    assert rc == 0
    # The generated modules are named nubis.v1.*; load them from the
    # scratch folder under another top-level name so they cannot be
    # confused with the installed package.
    os.rename(out / "nubis", out / "genclient")
    for path in (out / "genclient" / "v1").glob("*.py"):
        text = path.read_text().replace("from nubis.v1", "from genclient.v1")
        path.write_text(text)
    sys.path.insert(0, str(out))
    try:
        yield {name: importlib.import_module(f"genclient.v1.{name}")
               for name in ("queue_pb2", "queue_pb2_grpc", "blob_pb2",
                            "blob_pb2_grpc")}
    finally:
        sys.path.remove(str(out))


@pytest.fixture
def channel(kernel):
    with grpc.insecure_channel(f"127.0.0.1:{kernel.grpc_port}") as ch:
        yield ch


AUTH = (("authorization", f"Bearer {TOKENS['acme']}"),)


def test_generated_blob_client(stubs, channel, name):
    pb, rpc = stubs["blob_pb2"], stubs["blob_pb2_grpc"]
    blobs = rpc.BlobServiceStub(channel)
    data = b"made by a generated stub" * 1000
    first = pb.PutBlobRequest(key=name, content_type="text/plain",
                              data=data[:10000], size=len(data))
    rest = pb.PutBlobRequest(data=data[10000:])
    reply = blobs.PutBlob(iter([first, rest]), metadata=AUTH)
    assert reply.info.etag == hashlib.sha256(data).hexdigest()

    parts = list(blobs.GetBlob(pb.GetBlobRequest(key=name), metadata=AUTH))
    assert parts[0].info.size == len(data)
    assert b"".join(p.data for p in parts) == data


def test_generated_queue_client(stubs, channel, name):
    pb, rpc = stubs["queue_pb2"], stubs["queue_pb2_grpc"]
    queues = rpc.QueueServiceStub(channel)
    queues.CreateQueue(pb.CreateQueueRequest(name=name), metadata=AUTH)
    queues.SendMessages(pb.SendMessagesRequest(
        queue=name, messages=[pb.MessageEntry(body=b"hi")]), metadata=AUTH)
    got = queues.ReceiveMessages(pb.ReceiveMessagesRequest(
        queue=name, max_messages=10, wait_ms=1000), metadata=AUTH)
    assert [m.body for m in got.messages] == [b"hi"]
    acked = queues.AckMessages(pb.AckMessagesRequest(
        queue=name, receipts=[got.messages[0].receipt]), metadata=AUTH)
    assert list(acked.stale_receipts) == []


def test_generated_client_without_token_is_refused(stubs, channel):
    rpc, pb = stubs["queue_pb2_grpc"], stubs["queue_pb2"]
    with pytest.raises(grpc.RpcError) as err:
        rpc.QueueServiceStub(channel).ListQueues(pb.ListQueuesRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
