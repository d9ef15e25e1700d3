"""BLOB through the public client, over every transport."""

import hashlib
import os

import pytest

from nubis.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)


def test_put_get_head_delete(client, name):
    key = f"{name}/hello.txt"
    info = client.blob.put(key, b"hello, cloud", content_type="text/plain",
                           metadata={"lang": "en"})
    assert info.key == key
    assert info.size == 12
    assert info.etag == hashlib.sha256(b"hello, cloud").hexdigest()
    assert info.created_unix_ms > 0

    got = client.blob.get(key)
    assert got.data == b"hello, cloud"
    assert got.info.content_type == "text/plain"
    assert dict(got.info.metadata) == {"lang": "en"}

    head = client.blob.head(key)
    assert head.etag == info.etag and head.size == 12

    client.blob.delete(key)
    with pytest.raises(NotFound, match=key):
        client.blob.get(key)
    with pytest.raises(NotFound):
        client.blob.delete(key)


def test_ranges(client, name):
    data = bytes(range(256)) * 4
    client.blob.put(name, data)
    assert client.blob.get(name, offset=10, length=20).data == data[10:30]
    assert client.blob.get(name, offset=1000).data == data[1000:]
    assert client.blob.get(name, offset=1020, length=100).data == data[1020:]
    assert client.blob.get(name, offset=len(data)).data == b""
    with pytest.raises(OutOfRange, match="1025"):
        client.blob.get(name, offset=1025)


def test_conditional_writes(client, name):
    first = client.blob.put(name, b"v1", if_none_match=True)
    with pytest.raises(FailedPrecondition, match="already exists"):
        client.blob.put(name, b"v2", if_none_match=True)
    with pytest.raises(FailedPrecondition):
        client.blob.put(name, b"v2", if_match="0" * 64)
    second = client.blob.put(name, b"v2", if_match=first.etag)
    assert client.blob.get(name).data == b"v2"
    with pytest.raises(FailedPrecondition):
        client.blob.get(name, if_match=first.etag)
    with pytest.raises(FailedPrecondition):
        client.blob.delete(name, if_match=first.etag)
    client.blob.delete(name, if_match=second.etag)
    with pytest.raises(NotFound):
        client.blob.head(name)


def test_list_prefix_delimiter_and_pages(client, name):
    keys = [f"{name}/a/{i}" for i in range(5)] + [f"{name}/b/x", f"{name}/c"]
    for k in keys:
        client.blob.put(k, b".")
    page = client.blob.list(f"{name}/", delimiter="/")
    assert list(page.common_prefixes) == [f"{name}/a/", f"{name}/b/"]
    assert [b.key for b in page.blobs] == [f"{name}/c"]

    seen, token = [], ""
    while True:
        page = client.blob.list(f"{name}/", page_size=2, page_token=token)
        assert len(page.blobs) <= 2
        seen += [b.key for b in page.blobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(keys)


def test_bad_arguments(client, name):
    with pytest.raises(InvalidArgument, match="key"):
        client.blob.put("", b"x")
    with pytest.raises(InvalidArgument):
        client.blob.put(name, b"x", if_none_match=True, if_match="0" * 64)
    with pytest.raises(InvalidArgument, match="page"):
        client.blob.list(name, page_token="not a token!")
    with pytest.raises(InvalidArgument, match="page size 5000"):
        client.blob.list(name, page_size=5000)


def test_streamed_content_of_several_chunks(client, name):
    # Over the 1 MiB chunk and the 4 MiB message limit of the test kernel:
    # both directions must stream.
    data = os.urandom(9 << 20)
    info = client.blob.put(name, data)
    assert info.size == len(data)
    assert info.etag == hashlib.sha256(data).hexdigest()
    got = client.blob.get(name)
    assert got.info.etag == info.etag
    assert got.data == data
    assert client.blob.get(name, offset=5 << 20, length=3 << 20).data == \
        data[5 << 20:8 << 20]
    client.blob.delete(name)


@pytest.mark.slow
def test_object_of_several_hundred_mib(client, name):
    block = os.urandom(1 << 20)
    data = block * 300
    info = client.blob.put(name, data)
    assert info.size == 300 << 20
    assert info.etag == hashlib.sha256(data).hexdigest()
    got = client.blob.get(name)
    assert len(got.data) == len(data)
    assert hashlib.sha256(got.data).hexdigest() == info.etag
    client.blob.delete(name)


def test_quota_on_blob_size_and_total(small, name):
    with pytest.raises(ResourceExhausted, match="32768"):
        small.blob.put(name, b"x" * 40000)
    small.blob.put(f"{name}/1", b"x" * 30000)
    small.blob.put(f"{name}/2", b"x" * 30000)
    with pytest.raises(ResourceExhausted, match="65536"):
        small.blob.put(f"{name}/3", b"x" * 30000)
    small.blob.delete(f"{name}/1")
    small.blob.delete(f"{name}/2")


def test_streamed_put_over_quota_is_refused(small, name):
    with pytest.raises(ResourceExhausted):
        small.blob.put(name, b"x" * (2 << 20))
    with pytest.raises(NotFound):
        small.blob.head(name)


def test_declared_size_must_match_the_content(client, name):
    from nubis.v1 import blob_pb2

    request = blob_pb2.PutBlobRequest(key=name, size=100)
    with pytest.raises(InvalidArgument, match="not the 100 declared"):
        client._call("PutBlob", request, content=b"x" * 50)
    with pytest.raises(NotFound):
        client.blob.head(name)
