"""Micro-benchmarks of the hot paths: each pure twin beside its compiled one.

    pytest bench/test_micro.py --benchmark-only

Every benchmark runs once per build: "pure" (the Python modules in kernel/)
and "compiled" (nubis._ext, built from ext/), which is skipped when the
extension cannot be imported. Benchmarks are grouped by what they time, so
pytest-benchmark prints the two builds side by side. These are not part of
the test run (its testpaths is tests/); they measure, they assert nothing
about speed.
"""

import importlib

import pytest

from nubis.queue.store import QueueSettings

BODY = b"m" * 64


def _pure(name: str):
    """The pure twin, by the path that always holds it."""
    if name == "frames":
        module = importlib.import_module("nubis.transport.frames")
        return (getattr(module, "pure_encode_header", module.encode_header),
                getattr(module, "pure_decode_header", module.decode_header))
    if name == "histogram":
        module = importlib.import_module("nubis.histogram")
        return getattr(module, "PureHistogram", module.Histogram)
    if name == "queue_store":
        return importlib.import_module("nubis.queue.store").QueueStore
    return importlib.import_module("nubis.blob.store").BlobStore


def _compiled(name: str):
    try:
        module = importlib.import_module(f"nubis._ext.{name}")
    except ImportError as e:
        pytest.skip(f"nubis._ext.{name} is not built ({e})")
    if name == "frames":
        return module.encode_header, module.decode_header
    return getattr(module, {"histogram": "Histogram", "queue_store": "QueueStore",
                            "blob_store": "BlobStore"}[name])


@pytest.fixture(params=("pure", "compiled"))
def twin(request):
    """A function taking a module name to that build's twin."""
    build = request.param
    return lambda name: _pure(name) if build == "pure" else _compiled(name)


# -- frames ----------------------------------------------------------------------

@pytest.mark.benchmark(group="frames.encode_header")
def test_encode_header(benchmark, twin):
    encode, _ = twin("frames")
    benchmark(encode, 1, 202, 123456789)


@pytest.mark.benchmark(group="frames.decode_header")
def test_decode_header(benchmark, twin):
    encode, decode = twin("frames")
    frame = encode(16, 0, 123456789)
    assert benchmark(decode, frame) == (1, 16, 0, 123456789)


# -- the kernel's service-time histogram -------------------------------------------

@pytest.mark.benchmark(group="histogram.record")
def test_histogram_record(benchmark, twin):
    hist = twin("histogram")()
    benchmark(hist.record, 48_213)


@pytest.mark.benchmark(group="histogram.percentile")
def test_histogram_percentile(benchmark, twin):
    hist = twin("histogram")()
    for value in range(1_000, 2_000_000, 97):
        hist.record(value)
    benchmark(hist.percentile, 99.9)


# -- the queue store ---------------------------------------------------------------

def _queue(twin):
    store = twin("queue_store")()
    store.create("q", QueueSettings())
    return store


@pytest.mark.benchmark(group="queue.send-receive-ack")
def test_queue_cycle(benchmark, twin):
    store = _queue(twin)
    entry = [(BODY, 0, "", "")]

    def cycle():
        store.send("q", entry)
        [got] = store.receive("q", 1)
        store.ack("q", [got.receipt])

    benchmark(cycle)
    assert store.message_count() == 0


@pytest.mark.benchmark(group="queue.batch-of-100")
def test_queue_batch(benchmark, twin):
    store = _queue(twin)
    entries = [(BODY, 0, "", "")] * 100

    def batch():
        store.send("q", entries)
        got = store.receive("q", 100)
        store.ack("q", [m.receipt for m in got])

    benchmark(batch)
    assert store.message_count() == 0


# -- the blob store ------------------------------------------------------------------

@pytest.mark.benchmark(group="blob.put")
def test_blob_put(benchmark, twin):
    store = twin("blob_store")()
    benchmark(store.put, "bench/key", BODY)


@pytest.mark.benchmark(group="blob.get")
def test_blob_get(benchmark, twin):
    store = twin("blob_store")()
    store.put("bench/key", BODY)
    benchmark(store.get, "bench/key")


@pytest.mark.benchmark(group="blob.head")
def test_blob_head(benchmark, twin):
    store = twin("blob_store")()
    store.put("bench/key", BODY)
    benchmark(store.head, "bench/key")
