"""The blob store: objects, conditions, ranges, listing, limits."""

import hashlib
import random
import types

import pytest

from nubis._hot import built
from nubis.blob import Blob, BlobLimits
from nubis.blob import store as pure
from nubis.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)

# Every test runs against each twin: the pure one, and the compiled one where
# it is built (whatever NUBIS_PURE says).
IMPLS = [pure.BlobStore] + [m.BlobStore for m in [built("blob_store")] if m]


@pytest.fixture(params=IMPLS, ids=lambda cls: cls.__module__)
def make(request):
    def make(wall=lambda: 1234.5678, **limits):
        return request.param(BlobLimits(**limits), wall=wall)
    return make


@pytest.fixture
def store(make):
    return make()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def list_all(store, prefix="", delimiter="", page_size=0):
    """Every page of a listing, as (blob keys, common prefixes) pairs."""
    pages, token = [], ""
    while True:
        blobs, prefixes, token = store.list(prefix, delimiter, page_size, token)
        pages.append(([b.key for b in blobs], prefixes))
        if not token:
            return pages
        assert len(pages) < 10_000, "listing does not end"


def reference_list(keys, prefix="", delimiter=""):
    """The listing worked out by brute force, as (blob keys, common prefixes)."""
    blobs, prefixes = [], []
    for key in sorted(keys):
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut < 0:
            blobs.append(key)
        elif key[:cut + len(delimiter)] not in prefixes:
            prefixes.append(key[:cut + len(delimiter)])
    return blobs, prefixes


# -- put, get, head, delete ---------------------------------------------------


def test_put_then_get_head_delete(store):
    blob = store.put("photos/cat.jpg", b"meow", "image/jpeg", {"owner": "ann"})

    assert isinstance(blob, Blob)
    assert (blob.key, blob.size, blob.content_type) == ("photos/cat.jpg", 4,
                                                        "image/jpeg")
    assert blob.metadata == {"owner": "ann"}
    assert blob.created_unix_ms == 1234567
    got, view = store.get("photos/cat.jpg")
    assert got is blob
    assert bytes(view) == b"meow"
    assert store.head("photos/cat.jpg") is blob

    store.delete("photos/cat.jpg")
    with pytest.raises(NotFound, match="blob 'photos/cat.jpg' not found"):
        store.head("photos/cat.jpg")
    with pytest.raises(NotFound, match="photos/cat.jpg"):
        store.get("photos/cat.jpg")
    with pytest.raises(NotFound, match="photos/cat.jpg"):
        store.delete("photos/cat.jpg")
    assert (store.count, store.bytes_stored) == (0, 0)


def test_etag_is_sha256_of_content(store):
    data = bytes(range(256)) * 3
    assert store.put("k", data).etag == sha(data)
    assert store.put("empty", b"").etag == sha(b"")


def test_precomputed_etag_is_trusted(store):
    given = "ab" * 32
    assert store.put("k", b"data", etag=given).etag == given
    assert store.head("k").etag == given


@pytest.mark.parametrize("etag", ["AB" * 32, "ab" * 31, "zz" * 32, 7])
def test_malformed_precomputed_etag_is_refused(store, etag):
    with pytest.raises(InvalidArgument, match="etag"):
        store.put("k", b"data", etag=etag)
    assert store.count == 0


def test_content_type_defaults_to_octet_stream(store):
    assert store.put("k", b"x").content_type == "application/octet-stream"


def test_content_type_too_long_is_refused(store):
    with pytest.raises(InvalidArgument, match="content type .* 1025 bytes"):
        store.put("k", b"x", content_type="t" * 1025)
    assert store.put("k", b"x", content_type="t" * 1024).size == 1


def test_overwrite_replaces_whole_object_and_accounting(make):
    store = make(wall=iter([1.0, 1.5, 2.0]).__next__)
    store.put("k", b"12345", "text/plain", {"a": "1"})
    store.put("other", b"xyz")

    blob = store.put("k", b"12")

    assert bytes(store.get("k")[1]) == b"12"
    assert (blob.content_type, blob.metadata) == ("application/octet-stream", {})
    assert blob.created_unix_ms == 2000
    assert (store.count, store.bytes_stored) == (2, 2 + 3)
    store.delete("k")
    assert (store.count, store.bytes_stored) == (1, 3)


def test_stored_data_is_not_copied_and_views_share_it(store):
    data = b"0123456789" * 100
    blob = store.put("k", data)

    _, whole = store.get("k")
    _, part = store.get("k", 10, 20)

    assert blob.data is data
    assert whole.obj is data and part.obj is data
    assert whole.readonly and part.readonly


def test_mutable_data_is_frozen_at_put(store):
    data = bytearray(b"abc")
    store.put("k", data)
    data[0] = ord("z")
    assert bytes(store.get("k")[1]) == b"abc"
    assert type(store.head("k").data) is bytes


def test_data_that_is_not_bytes_is_refused(store):
    with pytest.raises(InvalidArgument, match="data must be bytes, not str"):
        store.put("k", "text")


def test_metadata_is_copied_at_put(store):
    meta = {"a": "1"}
    store.put("k", b"", metadata=meta)
    meta["a"] = "2"
    assert store.head("k").metadata == {"a": "1"}


def test_metadata_from_any_mapping(store):
    proxy = types.MappingProxyType({"a": "1"})
    assert store.put("k", b"", metadata=proxy).metadata == {"a": "1"}
    assert type(store.head("k").metadata) is dict


def test_metadata_from_a_protobuf_map(store):
    blob_pb2 = pytest.importorskip("nubis.v1.blob_pb2")
    request = blob_pb2.PutBlobRequest(metadata={"a": "1", "b": "2"})
    assert store.put("k", b"", metadata=request.metadata).metadata == {
        "a": "1", "b": "2"}


def test_clear_forgets_everything(store):
    for i in range(5):
        store.put(f"k{i}", b"abc")
    store.clear()
    assert (store.count, store.bytes_stored) == (0, 0)
    assert store.list() == ([], [], "")
    store.put("k0", b"z")
    assert store.count == 1


def test_random_operations_keep_index_and_accounting_exact(store):
    rng = random.Random(7)
    model = {}
    for _ in range(2000):
        key = f"{rng.choice('abc')}/{rng.randrange(40)}"
        if rng.random() < 0.6:
            data = bytes(rng.randrange(20))
            store.put(key, data)
            model[key] = data
        elif key in model:
            store.delete(key)
            del model[key]
        else:
            with pytest.raises(NotFound):
                store.delete(key)
    assert store.count == len(model)
    assert store.bytes_stored == sum(map(len, model.values()))
    assert [b.key for b in store.list(page_size=1000)[0]] == sorted(model)
    assert all(bytes(store.get(k)[1]) == v for k, v in model.items())


# -- keys ---------------------------------------------------------------------


@pytest.mark.parametrize("key,match", [
    ("", "key is empty"),
    ("a\x00b", "control character"),
    ("a\nb", "control character"),
    ("tab\there", "control character"),
    ("del\x7f", "control character"),
    ("c1\x85", "control character"),
    ("x" * 1025, "1025 bytes, over the limit of 1024"),
    ("é" * 513, "1026 bytes, over the limit of 1024"),
    ("half\ud800", "not valid utf-8"),
    (b"bytes", "key must be a string, not bytes"),
    (None, "key must be a string, not NoneType"),
])
def test_bad_keys_are_refused(store, key, match):
    with pytest.raises(InvalidArgument, match=match):
        store.put(key, b"x")
    assert store.count == 0


@pytest.mark.parametrize("key", [
    "x" * 1024, "é" * 512, "a b", "日本/語.txt", "emoji/\U0001f600", "/", ".",
])
def test_good_keys_are_stored(store, key):
    assert store.put(key, b"x").key == key
    assert store.head(key).size == 1


# -- conditional writes -------------------------------------------------------


def test_create_only_put(store):
    store.put("k", b"first", if_none_match=True)
    with pytest.raises(FailedPrecondition, match="blob 'k' already exists"):
        store.put("k", b"second", if_none_match=True)
    assert bytes(store.get("k")[1]) == b"first"


def test_put_if_match_replaces_only_that_version(store):
    old = store.put("k", b"v1")
    new = store.put("k", b"v2", if_match=old.etag)
    assert new.etag == sha(b"v2")

    with pytest.raises(FailedPrecondition) as info:
        store.put("k", b"v3", if_match=old.etag)
    assert new.etag in info.value.message and old.etag in info.value.message
    assert bytes(store.get("k")[1]) == b"v2"


def test_put_if_match_on_missing_key_fails(store):
    with pytest.raises(FailedPrecondition, match="blob 'k' not found"):
        store.put("k", b"v", if_match=sha(b"v"))
    assert store.count == 0


def test_put_with_both_conditions_is_refused(store):
    store.put("k", b"v")
    with pytest.raises(InvalidArgument, match="if_none_match and if_match"):
        store.put("k", b"w", if_none_match=True, if_match=sha(b"v"))
    assert bytes(store.get("k")[1]) == b"v"


def test_get_and_delete_if_match(store):
    blob = store.put("k", b"v")
    assert store.get("k", if_match=blob.etag)[0] is blob

    with pytest.raises(FailedPrecondition, match=blob.etag):
        store.get("k", if_match="0" * 64)
    with pytest.raises(FailedPrecondition, match="0" * 64):
        store.delete("k", if_match="0" * 64)
    assert store.count == 1
    store.delete("k", if_match=blob.etag)
    assert store.count == 0


# -- ranges -------------------------------------------------------------------


DATA = bytes(range(256)) * 4


@pytest.mark.parametrize("offset,length,expect", [
    (10, 20, DATA[10:30]),
    (0, 5, DATA[:5]),
    (1000, 0, DATA[1000:]),
    (1000, 100, DATA[1000:]),
    (0, 10**9, DATA),
    (len(DATA), 0, b""),
    (len(DATA), 7, b""),
])
def test_ranges(store, offset, length, expect):
    store.put("k", DATA)
    blob, view = store.get("k", offset, length)
    assert bytes(view) == expect
    assert blob.size == len(DATA)


def test_offset_past_the_end_is_out_of_range(store):
    store.put("k", DATA)
    with pytest.raises(OutOfRange, match="offset 1025 .* 'k' of 1024 bytes"):
        store.get("k", len(DATA) + 1)


def test_negative_range_is_refused(store):
    store.put("k", DATA)
    with pytest.raises(InvalidArgument, match="negative"):
        store.get("k", -1)
    with pytest.raises(InvalidArgument, match="negative"):
        store.get("k", 0, -1)


# -- listing ------------------------------------------------------------------


def tree_keys():
    """A few hundred keys, nested several directories deep."""
    keys = [f"top{i:02d}" for i in range(20)]
    for d in ("a", "b", "c", "d/e", "d/f", "x/y/z"):
        keys += [f"{d}/{i:03d}" for i in range(35)]
        keys += [f"{d}/sub{j}/{i}" for j in range(3) for i in range(4)]
    keys += ["a/", "a//double", "d/", "d/e/", "aa", "a-b", "a0"]
    return keys


@pytest.fixture
def tree(store):
    keys = tree_keys()
    for key in random.Random(3).sample(keys, len(keys)):
        store.put(key, key.encode())
    return store, keys


@pytest.mark.parametrize("prefix,delimiter", [
    ("", ""), ("", "/"), ("a", "/"), ("a/", "/"), ("d/", "/"), ("d/e", "/"),
    ("x/", "/"), ("nothing", "/"), ("a", ""), ("", "sub"), ("d/", "/s"),
])
def test_unpaged_listing_matches_brute_force(tree, prefix, delimiter):
    store, keys = tree
    blobs, prefixes, token = store.list(prefix, delimiter, 1000)
    assert ([b.key for b in blobs], prefixes) == reference_list(
        keys, prefix, delimiter)
    assert token == ""


def test_listing_returns_the_stored_blobs(tree):
    store, _ = tree
    blobs, _, _ = store.list("b/sub1/")
    assert [b.key for b in blobs] == [f"b/sub1/{i}" for i in range(4)]
    assert all(b is store.head(b.key) for b in blobs)


@pytest.mark.parametrize("page_size", [1, 2, 3, 7, 50])
@pytest.mark.parametrize("prefix,delimiter", [
    ("", "/"), ("", ""), ("d/", "/"), ("a", "/"), ("", "sub"),
])
def test_pages_add_up_to_the_unpaged_listing(tree, page_size, prefix, delimiter):
    store, keys = tree
    pages = list_all(store, prefix, delimiter, page_size)

    blobs = [k for page_blobs, _ in pages for k in page_blobs]
    prefixes = [p for _, page_prefixes in pages for p in page_prefixes]
    assert len(blobs) == len(set(blobs))
    assert len(prefixes) == len(set(prefixes))
    assert (blobs, prefixes) == reference_list(keys, prefix, delimiter)
    for page_blobs, page_prefixes in pages[:-1]:
        assert len(page_blobs) + len(page_prefixes) == page_size
    assert 0 < len(pages[-1][0]) + len(pages[-1][1]) <= page_size


def test_pages_are_in_key_order(tree):
    store, _ = tree
    pages = list_all(store, "", "/", 4)
    bounds = [(min(b + p), max(b + p)) for b, p in pages]
    assert all(hi < lo for (_, hi), (lo, _) in zip(bounds, bounds[1:], strict=False))


def test_page_ending_on_a_common_prefix_skips_its_keys(store):
    for i in range(50):
        store.put(f"a/{i:02d}", b"")
    store.put("b", b"")

    first = store.list("", "/", 1)
    second = store.list("", "/", 1, first[2])

    assert first[:2] == ([], ["a/"]) and first[2]
    assert ([b.key for b in second[0]], second[1], second[2]) == (["b"], [], "")


def test_listing_survives_changes_between_pages(store):
    for key in ("a", "b", "c", "d"):
        store.put(key, b"")
    _, _, token = store.list(page_size=2)
    store.delete("b")
    store.put("bb", b"")
    store.put("a0", b"")

    blobs, _, token = store.list(page_size=10, page_token=token)
    assert [b.key for b in blobs] == ["bb", "c", "d"]
    assert token == ""


def test_token_before_the_prefix_starts_at_the_prefix(store):
    for key in ("a", "a2", "b1", "b2", "c"):
        store.put(key, b"")
    _, _, token = store.list(page_size=1)

    blobs, _, token = store.list("b", page_token=token)

    assert ([b.key for b in blobs], token) == (["b1", "b2"], "")


def test_full_last_page_has_no_token(store):
    for key in ("a", "b", "c", "d"):
        store.put(key, b"")
    blobs, _, token = store.list(page_size=2)
    blobs, _, token = store.list(page_size=2, page_token=token)
    assert [b.key for b in blobs] == ["c", "d"]
    assert token == ""


def test_delimiter_at_the_top_code_point(store):
    top = "\U0010ffff"
    keys = ["a" + top + "1", "a" + top + "2", "b" + top, top + "x", "c"]
    for key in keys:
        store.put(key, b"")
    pages = list_all(store, "", top, 1)
    blobs = [key for page_blobs, _ in pages for key in page_blobs]
    prefixes = [cp for _, page_prefixes in pages for cp in page_prefixes]
    assert (blobs, prefixes) == reference_list(keys, "", top)
    assert prefixes == ["a" + top, "b" + top, top]


def test_default_and_largest_page_size(store):
    for i in range(1001):
        store.put(f"k{i:04d}", b"")
    blobs, _, token = store.list()
    assert len(blobs) == 1000 and token
    blobs, _, token = store.list(page_size=1000, page_token=token)
    assert [b.key for b in blobs] == ["k1000"] and token == ""


@pytest.mark.parametrize("page_size", [1001, -1, 2.5])
def test_bad_page_size_is_refused(store, page_size):
    with pytest.raises(InvalidArgument, match="page size"):
        store.list(page_size=page_size)


@pytest.mark.parametrize("token", [
    "!!!!", "AAAA", "A", "AWI=", "AWI ", "AYCA", "a+b/", 5,
])
def test_malformed_page_token_is_refused(store, token):
    store.put("a", b"")
    store.put("b", b"")
    assert store.list(page_size=1)[2] == "AWE"
    with pytest.raises(InvalidArgument, match="page token"):
        store.list(page_token=token)


# -- limits -------------------------------------------------------------------


def test_blob_over_size_limit(make):
    store = make(max_blob_bytes=10)
    store.put("k", b"x" * 10)
    with pytest.raises(ResourceExhausted, match="'big' of 11 bytes .* limit of 10"):
        store.put("big", b"x" * 11)
    assert (store.count, store.bytes_stored) == (1, 10)


def test_total_bytes_limit_counts_the_replaced_object(make):
    store = make(max_bytes=10)
    store.put("a", b"x" * 8)
    store.put("a", b"x" * 10)
    assert store.bytes_stored == 10

    with pytest.raises(ResourceExhausted, match="bring the bytes stored to 11, "
                                                "over the limit of 10"):
        store.put("b", b"x")
    store.put("a", b"x" * 4)
    store.put("b", b"x" * 6)
    assert (store.count, store.bytes_stored) == (2, 10)


def test_blob_count_limit(make):
    store = make(max_blobs=2)
    store.put("a", b"")
    store.put("b", b"")
    with pytest.raises(ResourceExhausted, match="'c' would be blob 3, over the "
                                                "limit of 2 blobs"):
        store.put("c", b"")
    store.put("a", b"again")
    store.delete("b")
    store.put("c", b"")
    assert store.count == 2


def test_failed_put_changes_nothing(make):
    store = make(max_bytes=5)
    old = store.put("k", b"12345", metadata={"v": "1"})
    with pytest.raises(ResourceExhausted):
        store.put("k", b"123456")
    with pytest.raises(InvalidArgument):
        store.put("k", b"1", metadata={"v": 2})
    assert store.head("k") is old
    assert (store.count, store.bytes_stored) == (1, 5)
    assert [b.key for b in store.list()[0]] == ["k"]


def test_metadata_at_its_limit(make):
    store = make(max_metadata_bytes=10)
    assert store.put("k", b"", metadata={"ab": "cd", "é": "xyzw"}).metadata
    with pytest.raises(InvalidArgument,
                       match="metadata 'big' brings the metadata to 11 bytes, "
                             "over the limit of 10"):
        store.put("k", b"", metadata={"ab": "cd", "big": "xyzw"})


@pytest.mark.parametrize("metadata,match", [
    ({"n": 1}, "metadata 'n' is a int, not a string"),
    ({1: "v"}, "metadata name 1 is not a non-empty string"),
    ({"": "v"}, "metadata name '' is not a non-empty string"),
    ({"n": "\ud800"}, "metadata 'n' is not valid utf-8"),
    (["n", "v"], "metadata must be a mapping, not list"),
])
def test_bad_metadata_is_refused(store, metadata, match):
    with pytest.raises(InvalidArgument, match=match):
        store.put("k", b"", metadata=metadata)
    assert store.count == 0
