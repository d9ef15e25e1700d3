"""The `nubis` command against a running kernel, as a person would use it."""

import json
import subprocess
import sys

import pytest

from .conftest import TOKENS


def nubis(kernel, *args, transport="zmq+ipc", input=None, token="acme"):
    env_args = ["--url", kernel.urls[transport], "--token", TOKENS[token]]
    return subprocess.run(
        [sys.executable, "-m", "nubis.cli.main", *env_args, *args],
        input=input, capture_output=True, timeout=60,
    )


@pytest.mark.parametrize("transport", ["zmq+ipc", "grpc"])
def test_blob_round_trip(kernel, tmp_path, name, transport):
    source = tmp_path / "in.bin"
    source.write_bytes(b"some bytes\n" * 100)
    put = nubis(kernel, "--json", "blob", "put", f"{name}/f", str(source),
                "--meta", "owner=me", transport=transport)
    assert put.returncode == 0, put.stderr
    info = json.loads(put.stdout)
    assert info["size"] == "1100" and info["metadata"] == {"owner": "me"}

    got = nubis(kernel, "blob", "get", f"{name}/f", transport=transport)
    assert got.stdout == source.read_bytes()
    part = nubis(kernel, "blob", "get", f"{name}/f", "--range", "0-9",
                 transport=transport)
    assert part.stdout == b"some bytes"

    listing = nubis(kernel, "blob", "ls", f"{name}/", transport=transport)
    assert f"{name}/f".encode() in listing.stdout
    assert nubis(kernel, "blob", "rm", f"{name}/f", transport=transport).returncode == 0


def test_blob_from_stdin(kernel, name):
    assert nubis(kernel, "blob", "put", name, "-", input=b"piped").returncode == 0
    assert nubis(kernel, "blob", "get", name).stdout == b"piped"


def test_queue_round_trip(kernel, name):
    assert nubis(kernel, "queue", "create", name).returncode == 0
    assert nubis(kernel, "queue", "send", name, "hello", "world").returncode == 0
    ls = nubis(kernel, "queue", "ls", name)
    assert name.encode() in ls.stdout and b"2" in ls.stdout
    got = nubis(kernel, "--json", "queue", "receive", name, "-n", "5", "--ack")
    assert got.returncode == 0, got.stderr
    assert sorted(m["body"] for m in json.loads(got.stdout)) == \
        ["aGVsbG8=", "d29ybGQ="]    # base64, as protobuf's JSON mapping says
    attrs = json.loads(nubis(kernel, "--json", "queue", "attrs", name).stdout)
    assert attrs["depth"] == "0" and attrs["in_flight"] == "0"


def test_errors_print_the_status_and_exit_1(kernel, name):
    got = nubis(kernel, "blob", "get", f"{name}/absent")
    assert got.returncode == 1
    assert b"NOT_FOUND" in got.stderr and name.encode() in got.stderr
    bad = nubis(kernel, "queue", "ls", token="other")
    assert bad.returncode == 0
    denied = nubis(kernel, "tenant", "ls")
    assert denied.returncode == 1 and b"PERMISSION_DENIED" in denied.stderr
    assert nubis(kernel, "tenant", "ls", token="ops").returncode == 0


def test_usage_and_stats(kernel):
    usage = nubis(kernel, "--json", "usage")
    assert json.loads(usage.stdout)[0]["tenant"] == "acme"
    stats = nubis(kernel, "stats")
    assert stats.returncode == 0 and b"P99.9" in stats.stdout


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "nubis.cli.main", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "nubis, version" in out.stdout
    out = subprocess.run([sys.executable, "-m", "nubis.cli.main", "--help"],
                         capture_output=True, text=True)
    for command in ("kernel", "blob", "queue", "usage"):
        assert command in out.stdout


def test_bad_url_and_bad_config(tmp_path):
    out = subprocess.run([sys.executable, "-m", "nubis.cli.main", "--url",
                          "http://x:1", "info"], capture_output=True, text=True)
    assert out.returncode == 1 and "unknown scheme 'http'" in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[kernel]\nbogus = 1\n")
    out = subprocess.run([sys.executable, "-m", "nubis.cli.main", "kernel",
                          "--config", str(bad)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "unknown kernel option 'bogus'" in out.stderr
