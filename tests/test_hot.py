"""The hot paths: each compiled twin behaves as its pure twin, and is used.

The store tests run their whole bodies against both twins; here the twins
are also driven side by side through random calls, and every answer and
every error must be the same.
"""

import gc
import glob
import os
import random
import struct
import subprocess
import sys

import pytest

from nubis import _hot
from nubis import calls as call_table
from nubis.blob import store as pure_blob
from nubis.histogram import PureHistogram
from nubis.queue import QueueLimits, QueueSettings, Received
from nubis.queue import store as pure_queue
from nubis.transport import dispatch, frames
from nubis.v1 import blob_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_BUILT = "the extension is not built (pip install . with a C compiler)"


def compiled(module: str):
    ext = _hot.built(module)
    if ext is None:
        pytest.skip(f"nubis._ext.{module}: {NOT_BUILT}")
    return ext


def outcome(call, *args):
    """What a call gives, or the type and message of what it raises."""
    try:
        return "ok", plain(call(*args))
    except Exception as e:  # noqa: BLE001 - the error is what is compared
        return "error", type(e), str(e)


def plain(value):
    """A value with its objects turned into comparable tuples."""
    if isinstance(value, Received):
        return ("received", value.message_id, value.body, value.receipt,
                value.receive_count, value.sent_unix_ms, value.group)
    if isinstance(value, pure_blob.Blob):
        return ("blob", value.key, value.data, value.size, value.etag,
                value.content_type, value.metadata, value.created_unix_ms)
    if isinstance(value, memoryview):
        return ("view", bytes(value), value.readonly)
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def same(stores, method, *args):
    """Call `method` on both twins; they must answer alike. Returns the answer."""
    pure, twin = (outcome(getattr(s, method), *args) for s in stores)
    assert twin == pure, (method, args)
    return pure


# -- frames -------------------------------------------------------------------


HEADERS = [(1, 0, 0), (16, 3, 1), (255, 65535, 2**64 - 1), (2, 7, 2**32),
           (frames.REPLY, 16, 2**63)]


@pytest.mark.parametrize("kind, code, rid", HEADERS)
def test_headers_round_trip_alike(kind, code, rid):
    ext = compiled("frames")

    head = ext.encode_header(kind, code, rid)

    assert head == frames.pure_encode_header(kind, code, rid)
    assert ext.decode_header(head) == frames.pure_decode_header(head)
    assert ext.decode_header(head) == (1, kind, code, rid)


def test_random_headers_round_trip_alike():
    ext = compiled("frames")
    rng = random.Random(5)
    for _ in range(2000):
        args = rng.randrange(256), rng.randrange(65536), rng.randrange(2**64)
        head = ext.encode_header(*args)
        assert head == frames.pure_encode_header(*args)
        assert ext.decode_header(head) == (1, *args)


@pytest.mark.parametrize("args", [
    (256, 0, 0), (-1, 0, 0), (1, 65536, 0), (1, -1, 0), (1, 0, 2**64),
    (1, 0, -1), (1.0, 0, 0), (1, 0, "7"), (1, 0, None),
])
def test_bad_header_fields_fail_alike(args):
    ext = compiled("frames")

    assert outcome(ext.encode_header, *args) == outcome(
        frames.pure_encode_header, *args)
    assert outcome(ext.encode_header, *args)[1] is struct.error


def test_int_subclasses_encode_alike():
    ext = compiled("frames")
    from nubis.errors import Code

    assert ext.encode_header(True, Code.NOT_FOUND, 9) == (
        frames.pure_encode_header(True, Code.NOT_FOUND, 9))


@pytest.mark.parametrize("frame", [
    b"", b"\x01" * 11, b"\x01" * 13, bytearray(12), memoryview(b"x" * 40)[3:15],
    memoryview(b"\x01\x02" * 6), memoryview(b"x" * 24)[::2], "twelve chars", 12,
])
def test_header_frames_decode_alike(frame):
    ext = compiled("frames")

    assert outcome(ext.decode_header, frame) == outcome(
        frames.pure_decode_header, frame)


def test_wrong_header_length_says_so():
    ext = compiled("frames")

    with pytest.raises(ValueError, match="header frame is 11 bytes, not 12"):
        ext.decode_header(b"\x01" * 11)


def test_a_zmq_frame_decodes_in_place():
    ext = compiled("frames")
    zmq = pytest.importorskip("zmq")
    head = frames.pure_encode_header(frames.REQUEST, 5, 77)

    assert ext.decode_header(zmq.Frame(head)) == (1, frames.REQUEST, 5, 77)


# -- dispatch -----------------------------------------------------------------


CALLS = call_table.build()
HEAD = blob_pb2.HeadBlobRequest(key="k" * 60).SerializeToString()
PUT = blob_pb2.PutBlobRequest(key="k", data=b"abc").SerializeToString()
GARBAGE = b"\xff\xff\xff"


@pytest.mark.parametrize("call_id, frames_, streamed", [
    (203, [b"p", b"h", HEAD], False),
    (203, [b"p", b"h", b""], False),
    (201, [b"p", b"h", PUT], False),
    (201, [b"p", b"h", PUT, b"de", memoryview(b"fgh")], False),
    (201, [b"p", b"h", PUT], True),
    (999, [b"p", b"h", HEAD], False),
    (203, [b"p", b"h"], False),
    (999, [b"p", b"h"], False),
    (203, [b"p", b"h", GARBAGE], False),
    (201, [b"p", b"h", GARBAGE, b"x"], False),
    (203, [b"p", b"h", HEAD, b"x"], False),
    (203, [b"p", b"h", HEAD], True),
    (203, [b"p", b"h", HEAD, b""], False),
    (305, [b"p", b"h", b""], False),
])
def test_requests_parse_alike(call_id, frames_, streamed):
    ext = compiled("dispatch")
    args = CALLS, call_id, frames_, streamed

    got = outcome(ext.parse_request, *args)

    assert got == outcome(dispatch.pure_parse_request, *args)
    if got[0] == "ok":
        assert got[1][0] is CALLS[call_id]


def test_request_errors_say_what_the_wire_says():
    ext = compiled("dispatch")
    for parse in (ext.parse_request, dispatch.pure_parse_request):
        for args, error, text in [
            ((999, [b"p", b"h"], False), "Unimplemented", "unknown call id 999"),
            ((203, [b"p", b"h"], False), "InvalidArgument",
             "blob.HeadBlob: missing the request message frame"),
            ((203, [b"p", b"h", GARBAGE], False), "InvalidArgument",
             "blob.HeadBlob: request is not a valid HeadBlobRequest: "),
            ((203, [b"p", b"h", HEAD], True), "InvalidArgument",
             "blob.HeadBlob takes no content"),
        ]:
            got = outcome(parse, CALLS, *args)
            assert (got[0], got[1].__name__) == ("error", error)
            assert text in got[2]


@pytest.mark.parametrize("rid", [0, 7, 2**63, 2**64 - 2, 2**64 - 1, 2**64, -1,
                                 1.0, None, True])
def test_replies_frame_alike(rid):
    ext = compiled("dispatch")
    response = blob_pb2.HeadBlobResponse()
    response.info.key = "k"
    response.info.size = 64

    got = outcome(ext.reply_frames, b"peer", rid, response)

    assert got == outcome(dispatch.pure_reply_frames, b"peer", rid, response)
    if got[0] == "ok":
        assert got[1][1] == frames.pure_encode_header(frames.REPLY, 0, rid)


def test_a_reply_of_no_message_fails_alike():
    ext = compiled("dispatch")

    assert outcome(ext.reply_frames, b"p", 1, "text") == outcome(
        dispatch.pure_reply_frames, b"p", 1, "text")


# -- histogram ----------------------------------------------------------------


PERCENTILES = [0, 0.1, 1, 25, 50, 90, 99, 99.9, 99.99, 100, 150, -5]


def fill(hist, values):
    for v in values:
        hist.record(v)
    return hist


def summary(hist):
    return (hist.total, hist.max, list(hist.counts),
            [hist.percentile(p) for p in PERCENTILES])


@pytest.mark.parametrize("seed", range(4))
def test_histograms_agree_on_random_latencies(seed):
    ext = compiled("histogram")
    rng = random.Random(seed)
    values = [int(rng.lognormvariate(9, 1.5)) for _ in range(5000)]
    values += [0, -3, 1, 31, 32, 33, 63, 64, 2**40, 2**48 + 5, 2**53 - 1,
               2**53, 2**62, 2**64, 2**70, -(2**70)]

    twin, pure = fill(ext.Histogram(), values), fill(PureHistogram(), values)

    assert summary(twin) == summary(pure)


def test_histograms_agree_when_empty_and_after_reset():
    ext = compiled("histogram")
    twin, pure = fill(ext.Histogram(), [5, 500]), fill(PureHistogram(), [5, 500])

    assert summary(ext.Histogram()) == summary(PureHistogram())
    twin.reset()
    pure.reset()
    assert summary(twin) == summary(pure)


@pytest.mark.parametrize("p", [float("nan"), float("inf")])
def test_histogram_percentile_errors_alike(p):
    ext = compiled("histogram")
    twin, pure = fill(ext.Histogram(), [5]), fill(PureHistogram(), [5])

    assert outcome(twin.percentile, p)[:2] == outcome(pure.percentile, p)[:2]


# -- queue store, side by side ------------------------------------------------


def rare(rng, usual: list, *odd):
    """One of `usual`, or one time in ten one of the `odd` values."""
    return rng.choice(odd) if odd and rng.random() < 0.1 else rng.choice(usual)


class FakeClock:
    def __init__(self):
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def queue_step(rng, stores, clock, receipts):
    """One random call on both twins; receipts gathers what receives give."""
    name = rare(rng, ["q", "q", "f", "f", "dead", "fdead"], "nope", "bad name")
    op = rng.random()
    if op < 0.25:
        fifo = name.startswith("f")
        entries = [(bytes(rng.randrange(12)), rare(rng, [0, 0, 250, 1000], -1),
                    rare(rng, ["a", "b", "b"] if fifo else [""], "g"[fifo:]),
                    rng.choice(["", "d1", "d2", "d3"]) if fifo else "")
                   for _ in range(rare(rng, [1, 1, 2, 3], 0))]
        same(stores, "send", name, entries)
    elif op < 0.5:
        got = same(stores, "receive", name, rare(rng, [0, 1, 3], 1001),
                   rare(rng, [0, 250, 500], -1))
        if got[0] == "ok":
            receipts += [(name, r[3]) for r in got[1]]
    elif op < 0.62 and receipts:
        recent = receipts[-8:]  # older ones are mostly stale by now
        picked = rng.sample(recent, min(len(recent), rng.randrange(1, 4)))
        queue = rng.choice([picked[0][0], name])
        same(stores, "ack", queue, [r for _, r in picked] + ["junk"])
    elif op < 0.72 and receipts:
        queue, receipt = rng.choice(receipts[-8:])
        receipt = rare(rng, [receipt], receipt + "0", "1-1.1", None)
        same(stores, "change_lease", queue, receipt, rare(rng, [0, 250], -1))
    elif op < 0.75 and receipts:
        same(stores, "release_receipts", [rng.choice(receipts[-8:])])
    elif op < 0.8:
        same(stores, "attributes", name)
        same(stores, "next_wakeup", name)
    elif op < 0.82:
        same(stores, "purge", name)
    elif op < 0.84:
        same(stores, "names", rng.choice(["", "f", "d"]), rng.randrange(3))
    else:
        clock.now += rng.choice([0.125, 0.25, 0.5, 1.0])
    same(stores, "message_count")
    assert stores[0].bytes_stored == stores[1].bytes_stored


@pytest.mark.parametrize("seed", range(6))
def test_queue_twins_answer_alike(seed):
    ext = compiled("queue_store")
    rng = random.Random(seed)
    clock = FakeClock()
    limits = dict(max_depth=30, max_bytes=200, max_queues=4)
    stores = [cls(QueueLimits(**limits), clock=clock, wall=lambda: clock.now + 1e9)
              for cls in (pure_queue.QueueStore, ext.QueueStore)]
    for name, settings in [
        ("dead", QueueSettings()),
        ("fdead", QueueSettings(fifo=True)),
        ("q", QueueSettings(max_receive_count=3, dead_letter_queue="dead",
                            retention_ms=4000, default_lease_ms=1000)),
        ("f", QueueSettings(fifo=True, max_receive_count=2,
                            dead_letter_queue="fdead", dedup_window_ms=2000,
                            default_delay_ms=125)),
        ("more", QueueSettings()),
    ]:
        same(stores, "create", name, settings)

    receipts = []
    for _ in range(3000):
        queue_step(rng, stores, clock, receipts)
    same(stores, "delete", "dead")
    same(stores, "delete", "q")
    same(stores, "delete", "dead")


def test_queue_twins_rebuild_lease_heaps_alike():
    ext = compiled("queue_store")
    clock = FakeClock()
    stores = [cls(clock=clock, wall=lambda: 1e9)
              for cls in (pure_queue.QueueStore, ext.QueueStore)]
    same(stores, "create", "q", QueueSettings())
    same(stores, "send", "q", [(b"x", 0, "", "")] * 300)
    got = same(stores, "receive", "q", 300, 1000)[1]

    for i in range(1500):
        # Every change leaves a stale entry; the heaps are rebuilt on the way.
        same(stores, "change_lease", "q", got[i % 300][3], 1000 + 125 * (i % 3))
    clock.now += 1.125
    same(stores, "receive", "q", 300, 250)
    same(stores, "ack", "q", [r[3] for r in got[:200]])
    clock.now += 0.25
    same(stores, "receive", "q", 1000, 250)
    same(stores, "send", "q", [(b"y", 0, "", "")])
    same(stores, "purge", "q")


@pytest.mark.parametrize("call, args", [
    ("send", ("q", [(b"x", 0, "")])),
    ("send", ("q", [(b"x", 0, "", "", 5)])),
    ("send", ("q", [[b"x", 0, "", ""], 7])),
    ("send", ("q", ((b"x", 0, "", ""),))),
    ("send", ("q", 7)),
    ("send", ("q", [(b"x", 1.5, "", "")])),
    ("send", ("q", [(b"x", 2**70, "", "")])),
    ("send", ("q", [("text", 0, "", "")])),
    ("receive", ("q", 2.5, 0)),
    ("receive", ("q", "1", 0)),
    ("receive", ("q", True, 2**64)),
    ("ack", ("q", "ab")),
    ("ack", ("q", 5)),
    ("ack", ("q", [["list"]])),
    ("change_lease", ("q", "r", 0.5)),
    ("release_receipts", ([("q",)],)),
    ("release_receipts", ([("q", "r", "x")],)),
    ("release_receipts", ([7],)),
    ("names", ("", 1.5)),
])
def test_odd_arguments_fail_or_pass_alike(call, args):
    ext = compiled("queue_store")
    clock = FakeClock()
    stores = [cls(clock=clock, wall=lambda: 1e9)
              for cls in (pure_queue.QueueStore, ext.QueueStore)]
    same(stores, "create", "q", QueueSettings())
    same(stores, "send", "q", [(b"ready", 0, "", "")])

    same(stores, call, *args)
    same(stores, "receive", "q", 10, 0)
    same(stores, "attributes", "q")


@pytest.mark.parametrize("fifo", [False, True])
def test_compiled_queue_store_lets_go_of_every_message(fifo):
    ext = compiled("queue_store")
    body = bytes(range(99))  # made at run time: no other code holds it
    alone = sys.getrefcount(body)
    store = ext.QueueStore(clock=FakeClock())
    store.create("dead", QueueSettings(fifo=fifo))
    store.create("q", QueueSettings(fifo=fifo, max_receive_count=1,
                                    dead_letter_queue="dead"))
    store.send("q", [(body, 0, f"g{i % 9}" if fifo else "", "") for i in range(60)]
               + [(body, 250, "g" if fifo else "", "")] * 5)

    got = store.receive("q", 40, 100)
    store.ack("q", [r.receipt for r in got[:5]])
    for r in got[5:8]:
        store.change_lease("q", r.receipt, 0)
    store.receive("q", 3)
    del got, r
    assert sys.getrefcount(body) > alone

    # No cycle is left for the collector: refcounting alone frees it all.
    gc.disable()
    try:
        del store
        assert sys.getrefcount(body) == alone
    finally:
        gc.enable()


def test_compiled_blob_store_lets_go_of_every_object():
    ext = compiled("blob_store")
    data = bytes(range(98))  # made at run time: no other code holds it
    alone = sys.getrefcount(data)
    store = ext.BlobStore()
    for i in range(3000):
        store.put(f"k/{i}", data)
    for i in range(0, 3000, 2):
        store.delete(f"k/{i}")
    del store

    assert sys.getrefcount(data) == alone


# -- blob store, side by side -------------------------------------------------


def blob_step(rng, stores):
    key = rare(rng, ["a", "a/b", "a/c/d", "b", "b/", "é/x", "k" * 300,
                     f"p/{rng.randrange(60)}", f"p/s/{rng.randrange(9)}"],
               "", "a\nb")
    op = rng.random()
    if op < 0.35:
        data = bytes(rng.randrange(40))
        same(stores, "put", key, data, rare(rng, ["", "text/plain"], 7),
             rare(rng, [None, {}, {"a": "1"}], {"b": 2}),
             rng.random() < 0.1,
             rare(rng, [""] * 4, pure_blob.hashlib.sha256(data).hexdigest()),
             rare(rng, ["", "", "ab" * 32], "AB" * 32))
    elif op < 0.55:
        same(stores, "get", key, rare(rng, [0, 0, 1, 5, 100], -1),
             rare(rng, [0, 0, 2], -1), rare(rng, [""], "0" * 64))
    elif op < 0.6:
        same(stores, "head", key)
    elif op < 0.7:
        same(stores, "delete", key, rare(rng, [""], "0" * 64))
    else:
        prefix = rng.choice(["", "a", "p/", "p/s", "zz"])
        delimiter = rng.choice(["", "/", "s"])
        size = rare(rng, [0, 1, 2, 5], 1001)
        token = ""
        for _ in range(100):
            page = same(stores, "list", prefix, delimiter, size, token)
            if page[0] != "ok" or not page[1][2]:
                break
            token = page[1][2]
        if rng.random() < 0.1:
            same(stores, "list", prefix, delimiter, 1, rng.choice(["AYCA", 5, "!"]))
    assert (stores[0].count, stores[0].bytes_stored) == (
        stores[1].count, stores[1].bytes_stored)


@pytest.mark.parametrize("seed", range(4))
def test_blob_twins_answer_alike(seed):
    ext = compiled("blob_store")
    rng = random.Random(seed)
    limits = pure_blob.BlobLimits(max_bytes=900, max_blob_bytes=30, max_blobs=50,
                                  max_metadata_bytes=6)
    walls = [iter(range(10**6)).__next__, iter(range(10**6)).__next__]
    stores = [cls(limits, wall=wall) for cls, wall in zip(
        (pure_blob.BlobStore, ext.BlobStore), walls, strict=True)]

    for _ in range(2500):
        blob_step(rng, stores)
    same(stores, "clear")
    same(stores, "list")


def test_blob_index_splits_and_merges_in_order():
    ext = compiled("blob_store")
    stores = [cls(wall=lambda: 1.0) for cls in (pure_blob.BlobStore, ext.BlobStore)]
    keys = [f"{i:05d}" for i in range(5000)]
    random.Random(1).shuffle(keys)

    for key in keys:
        same(stores, "put", key, b"")
    for key in keys[::3]:
        same(stores, "delete", key)

    listed, token = [], ""
    while True:
        page = same(stores, "list", "0", "", 1000, token)[1]
        listed += [b[1] for b in page[0]]
        token = page[2]
        if not token:
            break
    assert listed == sorted(set(keys) - set(keys[::3]))


# -- which build runs ---------------------------------------------------------


PROBE = """
import logging
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
from nubis import _hot, blob, histogram, queue
from nubis.transport import dispatch, frames
print(_hot.BUILD, queue.QueueStore.__module__, blob.BlobStore.__module__,
      histogram.Histogram.__module__,
      frames.encode_header is frames.pure_encode_header,
      dispatch.parse_request is dispatch.pure_parse_request)
"""


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "NUBIS_PURE"}
    out = subprocess.run([sys.executable, "-c", code], env={**environ, **env},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def test_nubis_pure_forces_the_pure_twins():
    out = run_python(PROBE, NUBIS_PURE="1")

    assert out.stdout.split() == ["pure", "nubis.queue.store", "nubis.blob.store",
                                  "nubis.histogram", "True", "True"]
    assert "nubis.hot hot paths: pure Python, as NUBIS_PURE=1 asks" in out.stderr


def test_the_compiled_build_is_used_where_built():
    for module in _hot.MODULES:
        compiled(module)

    out = run_python(PROBE)

    assert out.stdout.split() == [
        "compiled", "nubis._ext.queue_store", "nubis._ext.blob_store",
        "nubis._ext.histogram", "False", "False"]
    assert "nubis.hot hot paths: compiled" in out.stderr


@pytest.mark.parametrize("module, package, name", [
    ("queue_store", "queue", "QueueStore"), ("blob_store", "blob", "BlobStore"),
])
def test_an_extension_imported_first_is_still_the_one_used(module, package, name):
    compiled(module)

    out = run_python(f"import nubis._ext.{module} as ext, nubis.{package} as p\n"
                     f"print(p.{name} is ext.{name})")

    assert out.stdout.strip() == "True"


def test_ext_sources_stay_within_88_columns():
    """ruff does not read .pyx and .pxd, so their width is checked here."""
    long_lines = []
    paths = glob.glob(os.path.join(ROOT, "ext", "*.pyx"))
    for path in sorted(paths + glob.glob(os.path.join(ROOT, "ext", "*.pxd"))):
        with open(path, encoding="utf-8") as f:
            long_lines += [f"{path}:{n}" for n, line in enumerate(f, 1)
                           if len(line.rstrip("\n")) > 88]
    assert not long_lines
