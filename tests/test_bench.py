"""The benchmark suite: its plan, its flags, and one short run end to end.

The run goes through `nubis bench` in-process, with nats-server hidden so
that the missing-peer path is taken, and checks the files it writes and the
sanity of its figures, never their size: tests check behaviour, not speed.
"""

import json
import os

import pytest
from click.testing import CliRunner

from nubis.bench import servers
from nubis.bench.plan import Options, format_size, parse_size, plan
from nubis.cli.main import main

CALLS = ("blob.get", "queue.send")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short run without NATS; returns (report, output folder, result)."""
    out = str(tmp_path_factory.mktemp("bench"))
    patch = pytest.MonkeyPatch()
    real = servers.which
    patch.setattr(servers, "which",
                  lambda name: None if name == "nats-server" else real(name))
    try:
        result = CliRunner().invoke(main, [
            "bench", "--quick", "--quiet", "--duration", "0.1", "--warmup",
            "0.05", "--call", ",".join(CALLS), "--memory-messages", "5000",
            "--out", out])
    finally:
        patch.undo()
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f), out, result


def test_run_writes_json_markdown_and_plots(run):
    report, out, result = run
    assert result.exit_code == 0, result.output
    files = os.listdir(out)
    assert {"results.json", "results.md"} <= set(files)
    assert [f for f in files if f.endswith(".png")]
    assert set(report["plots"]) <= set(files)
    with open(os.path.join(out, "results.md")) as f:
        text = f.read()
    assert "| pyzmq | echo | zmq+ipc |" in text
    assert "| nubis | blob.get | zmq+ipc |" in text
    assert "## Goals" in text and "## Memory" in text


def test_floors_and_calls_have_sane_figures(run):
    report, _, _ = run
    rows = report["rows"]
    floors = {(r["system"], r["transport"]) for r in rows if r["kind"] == "floor"}
    assert floors == {("pyzmq", "zmq+ipc"), ("pyzmq", "zmq+tcp"),
                      ("grpcio", "grpc")}
    calls = [r for r in rows if r["system"] == "nubis"]
    assert {r["call"] for r in calls} == set(CALLS)
    for row in rows:
        assert row["error"] is None, row
        assert row["count"] > 0 and row["calls_per_s"] > 0, row
        assert 0 < row["p50_us"] <= row["p90_us"] <= row["p99_us"], row
        assert row["p99_us"] <= row["p999_us"] <= row["max_us"], row
    for row in calls:
        # The kernel's figure covers the calls the client timed, and only
        # those (one call may still be on its way to the ledger).
        assert abs(row["kernel"]["count"] - row["count"]) <= 1, row
        assert 0 < row["kernel"]["p50_us"] <= row["kernel"]["max_us"]


def test_default_plan_adds_one_pipelined_case(run):
    report, _, _ = run
    piped = [r for r in report["rows"] if r["mode"] == "pipelined"]
    assert {(r["system"], r["call"], r["transport"]) for r in piped} == {
        ("pyzmq", "echo", "zmq+ipc"), ("nubis", "blob.get", "zmq+ipc")}
    assert all(r["depth"] == 32 for r in piped)


def test_missing_peer_is_skipped_with_a_note(run):
    report, out, result = run
    [note] = [n for n in report["notes"] if n.startswith("nats")]
    assert "nats-server not found" in note and "install" in note
    assert not [r for r in report["rows"] if r["system"] == "nats"]
    with open(os.path.join(out, "results.md")) as f:
        assert note in f.read()
    if servers.which("redis-server"):
        assert {r["call"] for r in report["rows"] if r["system"] == "redis"} == {
            "SET", "GET", "LPUSH", "RPOP"}


def test_goals_and_memory_are_reported(run):
    report, _, _ = run
    assert len(report["goals"]) == 8
    assert {g["status"] for g in report["goals"]} <= {
        "met", "not met", "not measured"}
    kernel = report["memory"]["kernel"]
    assert report["memory"]["messages"] == 5000 and kernel["growth"] > 0


def test_peer_notes_say_how_to_install(monkeypatch):
    monkeypatch.setattr(servers, "which", lambda name: None)
    notes = servers.peer_notes()
    assert "apt-get install redis-server" in notes["redis"]
    assert "nats-server not found" in notes["nats"]


def test_plan_with_modes_covers_the_matrix():
    options = Options(calls=("blob.put",), transports=("grpc",),
                      payloads=(64, 4096), modes=("processes", "open"))
    cases = plan(options, {"redis": True, "nats": False})
    kernel = [c for c in cases if c.system == "nubis"]
    assert {(c.mode, c.payload) for c in kernel} == {
        ("processes", 64), ("processes", 4096), ("open", 64), ("open", 4096)}
    assert all(c.processes == 4 for c in cases if c.mode == "processes")
    # redis-py keeps one command in flight, so Redis has no open loop.
    assert {c.mode for c in cases if c.system == "redis"} == {"processes"}
    assert all(c.system != "nats" for c in cases)


def test_sizes():
    assert [parse_size(s) for s in ("64", "4K", "4KiB", "1M", "1MiB")] == [
        64, 4096, 4096, 1 << 20, 1 << 20]
    assert format_size(4096) == "4 KiB" and format_size(100) == "100 B"
    with pytest.raises(ValueError, match="'12Q'"):
        parse_size("12Q")


@pytest.mark.parametrize("args, message", [
    (["--payload", "12Q"], "'12Q'"),
    (["--payload", "64M"], "out of range"),
    (["--transport", "zmq+ipc,tcp"], "unknown transport 'tcp'"),
    (["--call", "blob.list"], "unknown call 'blob.list'"),
    (["--mode", "burst"], "unknown mode 'burst'"),
    (["--depth", "0"], "0 is not in the range"),
])
def test_bad_flags_name_the_value(args, message):
    result = CliRunner().invoke(main, ["bench", *args])
    assert result.exit_code == 2
    assert message in result.output
