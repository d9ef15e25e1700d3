"""BLOB calls: protobuf in, the tenant's blob store, protobuf out.

Content travels beside the protobuf messages: the transport hands a put's
assembled content in `body`, and a get returns `(response, content)` for the
transport to send in chunks. Hashing a large object happens on a worker
thread (hashlib releases the GIL), so a big put does not stall other calls.
"""

import asyncio
import hashlib

from nubis.calls import handler
from nubis.errors import InvalidArgument
from nubis.v1 import blob_pb2 as pb

HASH_OFF_LOOP_BYTES = 1 << 20


def info_of(blob) -> pb.BlobInfo:
    return pb.BlobInfo(
        key=blob.key, size=blob.size, etag=blob.etag,
        content_type=blob.content_type, metadata=blob.metadata,
        created_unix_ms=blob.created_unix_ms,
    )


@handler("PutBlob")
def put_blob(kernel, tenant, req, body):
    content = body if body is not None else req.data
    if req.size and len(content) != req.size:
        raise InvalidArgument(f"blob {req.key!r}: content is {len(content)} "
                              f"bytes, not the {req.size} declared")
    if len(content) < HASH_OFF_LOOP_BYTES:
        return _put(tenant, req, content, "")
    return _put_large(tenant, req, content)


async def _put_large(tenant, req, content):
    etag = await asyncio.to_thread(_sha256, content)
    return _put(tenant, req, content, etag)


def _sha256(content) -> str:
    return hashlib.sha256(content).hexdigest()


def _put(tenant, req, content, etag: str) -> pb.PutBlobResponse:
    blob = tenant.blobs.put(
        req.key, bytes(content), req.content_type, dict(req.metadata),
        req.if_none_match, req.if_match, etag,
    )
    return pb.PutBlobResponse(info=info_of(blob))


@handler("GetBlob")
def get_blob(kernel, tenant, req, body):
    blob, content = tenant.blobs.get(req.key, req.offset, req.length, req.if_match)
    return pb.GetBlobResponse(info=info_of(blob)), content


@handler("HeadBlob")
def head_blob(kernel, tenant, req, body):
    return pb.HeadBlobResponse(info=info_of(tenant.blobs.head(req.key)))


@handler("DeleteBlob")
def delete_blob(kernel, tenant, req, body):
    tenant.blobs.delete(req.key, req.if_match)
    return pb.DeleteBlobResponse()


@handler("ListBlobs")
def list_blobs(kernel, tenant, req, body):
    blobs, prefixes, token = tenant.blobs.list(
        req.prefix, req.delimiter, req.page_size, req.page_token)
    return pb.ListBlobsResponse(
        blobs=[info_of(b) for b in blobs], common_prefixes=prefixes,
        next_page_token=token,
    )
