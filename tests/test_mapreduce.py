"""MapReduce in user space: real corpus, exact answers, a worker killed
mid-task, failing tasks, bad input, and the status command."""

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from nubis.client import Client
from nubis.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from nubis.services import mapreduce as mr
from nubis.services.mapreduce import examples

from .conftest import TOKENS

DOCS = examples.topics()
WC = dict(mapper="map", combiner="combine", reducer="reduce")


@pytest.fixture
def ipc(kernel):
    """A client over the unix socket: the driver's transport hardly matters,
    the workers always use theirs."""
    with Client(kernel.urls["zmq+ipc"], TOKENS["acme"]) as c:
        yield c


def upload(client, prefix: str, docs=DOCS) -> None:
    for key, data in docs.items():
        client.blob.put(prefix + key, data)


def word_count(docs=DOCS) -> dict:
    return dict(collections.Counter(
        w for data in docs.values() for w in data.decode().split()))


def lines_of(docs=DOCS) -> int:
    return sum(len(data.decode().splitlines()) for data in docs.values())


def test_word_count_is_exact_over_every_transport(client, name):
    upload(client, f"{name}/in/")
    s = mr.run(client, examples.WORD_COUNT, **WC, input_prefix=f"{name}/in/",
               output_prefix=f"{name}/out/", reducers=3, workers=2,
               split_bytes=32 << 10)
    assert s.state == "succeeded" and s.maps > len(DOCS) and s.reduces_done == 3
    output = list(mr.read_output(client, f"{name}/out/"))
    assert dict(output) == word_count()
    assert len(output) == len(dict(output))     # each word in one part, once
    assert s.counters["map_input_records"] == lines_of()
    assert s.counters["reduce_output_records"] == len(output)
    assert not client.blob.list(f"mapreduce/{s.job}/map/").blobs   # cleaned up


def test_inverted_index_is_exact(ipc, name):
    upload(ipc, f"{name}/in/")
    s = mr.run(ipc, examples.INVERTED_INDEX, **WC, input_prefix=f"{name}/in/",
               output_prefix=f"{name}/out/", reducers=4, workers=2)
    got = dict(mr.read_output(ipc, f"{name}/out/"))
    want = collections.defaultdict(set)
    for key, data in DOCS.items():
        for word in re.findall(r"[a-z][a-z0-9_]+", data.decode().lower()):
            want[word].add(f"{name}/in/{key}")
    assert got == {w: sorted(d) for w, d in want.items()}
    assert s.counters["reduce_output_records"] == len(want)
    spec = dict(job="local", source=examples.INVERTED_INDEX, reducers=2,
                spill_values=1000, **WC)
    inputs = {f"{name}/in/{k}": v for k, v in DOCS.items()}
    assert dict(mr.run_local(spec, inputs)) == got


# The mapper stops mid-task once, in the biggest document, after it has
# spilled partitions, and says where it is; the test kills it there.
STALL = examples.WORD_COUNT + '''
import os
import time

seen = {}


def stalling_map(key, line):
    seen[key] = seen.get(key, 0) + 1
    if key.endswith(TARGET) and seen[key] == 300:
        try:
            client.blob.put(FLAG, str(os.getpid()).encode(), if_none_match=True)
        except Exception:
            pass
        else:
            time.sleep(60)
    count("lines")
    yield from map(key, line)
'''


def test_worker_killed_mid_task_counts_nothing_twice(ipc, name):
    upload(ipc, f"{name}/in/")
    target = max(DOCS, key=lambda k: len(DOCS[k]))
    flag = f"{name}/stalled"
    source = STALL.replace("TARGET", repr(target)).replace("FLAG", repr(flag))
    job = mr.submit(ipc, source, mapper="stalling_map", combiner="combine",
                    reducer="reduce", input_prefix=f"{name}/in/",
                    output_prefix=f"{name}/out/", reducers=2, workers=2,
                    spill_values=500)
    deadline = time.monotonic() + 20
    while True:
        try:
            pid = int(ipc.blob.get(flag).data)
            break
        except NotFound:
            assert time.monotonic() < deadline, mr.status(ipc, job)
            time.sleep(0.05)

    spec = json.loads(ipc.blob.get(f"mapreduce/{job}/job.json").data)
    task = [s[0] for s in spec["splits"]].index(f"{name}/in/{target}")
    partial = ipc.blob.list(f"mapreduce/{job}/map/{task}/").blobs
    assert partial, "the stalled attempt has spilled"
    with pytest.raises(NotFound):
        ipc.blob.head(f"mapreduce/{job}/commit/map/{task}")
    running = mr.status(ipc, job)       # progress, read while it runs
    assert running.state == "running" and running.maps_done < running.maps
    assert running.counters.get("map_input_records", 0) < lines_of()
    os.kill(pid, signal.SIGKILL)

    s = mr.wait(ipc, job, timeout=40)
    assert s.state == "succeeded", s
    assert dict(mr.read_output(ipc, f"{name}/out/")) == word_count()
    assert s.counters["map_input_records"] == lines_of()
    assert s.counters["lines"] == lines_of()
    commit = json.loads(ipc.blob.get(f"mapreduce/{job}/commit/map/{task}").data)
    killed = partial[0].key.split("/")[4]
    assert commit["attempt"] != killed
    assert not any(killed in key for part in commit["parts"] for key in part)
    mr.cleanup(ipc, job)


FAILING = examples.WORD_COUNT + '''
def bad_map(key, line):
    if "lambda" in line:
        raise ValueError("cannot map " + key)
    return map(key, line)
'''


def test_a_task_that_always_fails_fails_the_job(ipc, name):
    upload(ipc, f"{name}/in/")
    with pytest.raises(mr.JobFailed) as failed:
        mr.run(ipc, FAILING, mapper="bad_map", reducer="reduce",
               input_prefix=f"{name}/in/", output_prefix=f"{name}/out/",
               max_attempts=2, timeout=40)
    s = failed.value.status
    assert s.state == "failed" and s.task_errors >= 2
    assert s.error.startswith("ValueError: cannot map ")
    assert not ipc.blob.list(f"{name}/out/").blobs


def test_bad_input_gets_clear_errors(ipc, name):
    def submit(**options):
        job = dict(WC, input_prefix=f"{name}/in/", output_prefix=f"{name}/out/")
        return mr.submit(ipc, examples.WORD_COUNT, **{**job, **options})

    with pytest.raises(InvalidArgument, match="no input blobs"):
        submit()
    ipc.blob.put(f"{name}/in/a", b"a b\n")
    with pytest.raises(InvalidArgument, match="reducers must be"):
        submit(reducers=0)
    with pytest.raises(InvalidArgument, match="mapper 'nope' is not defined"):
        submit(mapper="nope")
    with pytest.raises(InvalidArgument, match="does not compile"):
        mr.submit(ipc, "def (", mapper="m", reducer="r",
                  input_prefix=f"{name}/in/", output_prefix=f"{name}/out/")
    with pytest.raises(InvalidArgument, match="job name"):
        submit(name="Bad Name")
    with pytest.raises(NotFound, match="mapreduce job 'nosuchjob' not found"):
        mr.status(ipc, "nosuchjob")
    ipc.blob.put(f"{name}/out/x", b"")
    with pytest.raises(FailedPrecondition, match="is not empty"):
        submit()
    ipc.blob.delete(f"{name}/out/x")
    job = submit(name=name)
    with pytest.raises(AlreadyExists):
        submit(name=name, output_prefix=f"{name}/out2/")
    assert mr.wait(ipc, job, 20).state == "succeeded"


def test_cli_submit_and_status_with_progress(kernel, ipc, name, tmp_path):
    upload(ipc, f"{name}/in/")
    path = tmp_path / "wc.py"
    path.write_text(examples.WORD_COUNT)
    env = {**os.environ, "NUBIS_URL": kernel.urls["zmq+ipc"],
           "NUBIS_TOKEN": TOKENS["acme"]}

    def nubis(*args):
        return subprocess.run([sys.executable, "-m", "nubis.cli.main", *args],
                              capture_output=True, text=True, env=env, timeout=30)

    done = nubis("mapreduce", "submit", str(path), "--input", f"{name}/in/",
                 "--output", f"{name}/out/", "--combiner", "combine",
                 "--reducers", "2", "--name", name, "--wait")
    assert done.returncode == 0, done.stderr
    assert f"job {name}: succeeded" in done.stdout
    assert f"reduce  [{'#' * 30}] 2/2" in done.stdout
    shown = nubis("--json", "mapreduce", "status", name)
    s = json.loads(shown.stdout)
    assert s["state"] == "succeeded" and s["maps_done"] == s["maps"] == len(DOCS)
    assert s["counters"]["map_input_records"] == lines_of()
    assert name in nubis("mapreduce", "ls").stdout
    missing = nubis("mapreduce", "status", "nosuchjob")
    assert missing.returncode == 1
    assert "NOT_FOUND: mapreduce job 'nosuchjob' not found" in missing.stderr
