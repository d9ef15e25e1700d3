"""The crash harness, short: kill -9 a kernel with fsync=always under load over
both transports, five times, and check nothing acknowledged was lost; then
damage its journal and check it still boots and says what it dropped."""

import glob
import os

import pytest

from nubis._hot import built
from nubis.bench import crash
from nubis.client import Client


@pytest.mark.timeout(120)
def test_kill_nine_under_load_loses_nothing_acknowledged(tmp_path):
    folder = str(tmp_path)
    report = crash.run("always", kills=5, folder=folder, gap=(0.3, 0.9),
                       producers=3, consumers=2, putters=1, seed=8)
    assert report["kills"] == 6 and report["acknowledged_ops"] > 500, report
    assert report["lost"] == 0, report
    assert report["resurrected"] == 0, report
    assert report["blobs_bad"] == 0, report

    # Cut the newest segment in the middle of a record: the kernel boots,
    # warns with the file and the offset, and keeps the rest.
    segments = sorted(glob.glob(os.path.join(folder, "data", "journal.*")))
    segments = [s for s in segments if ".bad-" not in s]
    biggest = max(segments, key=os.path.getsize)
    size = os.path.getsize(biggest)
    with open(biggest, "r+b") as f:
        f.truncate(size - 5)
    kernel = crash.Kernel(folder, "always")
    kernel.start()
    try:
        with Client(kernel.urls[1], crash.TOKEN) as c:
            assert c.queue.attributes(crash.QUEUE).name == crash.QUEUE
    finally:
        assert kernel.stop() == 0
    with open(kernel.log_path) as f:
        log = f.read()
    assert f"{biggest} is damaged at offset" in log


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pure", [True, False], ids=["pure", "compiled"])
def test_compaction_by_fork_under_kills(tmp_path, pure):
    report = crash.run("always", kills=3, folder=str(tmp_path), gap=(1.5, 2.0),
                       producers=3, consumers=2, putters=1, seed=9,
                       compact_bytes=100_000, pure=pure)
    assert report["lost"] == report["blobs_bad"] == report["resurrected"] == 0
    with open(os.path.join(str(tmp_path), "kernel.log")) as f:
        log = f.read()
    assert "journal: snapshot done" in log
    if not pure and built("queue_store") and built("blob_store"):
        assert "hot paths: compiled" in log
    assert os.path.exists(os.path.join(str(tmp_path), "data", "snapshot"))
