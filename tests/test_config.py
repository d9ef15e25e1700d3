"""Configuration: flags beat the TOML file, which beats the environment."""

import pytest

from nubis.config import load
from nubis.errors import InvalidArgument


def write(tmp_path, text: str) -> str:
    path = tmp_path / "nubis.toml"
    path.write_text(text)
    return str(path)


def test_precedence(tmp_path):
    path = write(tmp_path, '[kernel]\ngrpc = "127.0.0.1:9001"\n'
                 'max_message_bytes = 1000\n')
    env = {"NUBIS_GRPC": "127.0.0.1:9000", "NUBIS_LOG_LEVEL": "DEBUG",
           "NUBIS_ZMQ": "tcp://127.0.0.1:9100,ipc:///tmp/x.sock"}
    config = load(path, {"max_message_bytes": 2000}, environ=env)
    assert config.grpc == "127.0.0.1:9001"         # file beats env
    assert config.max_message_bytes == 2000        # flag beats file
    assert config.log_level == "DEBUG"             # env beats default
    assert config.zmq == ["tcp://127.0.0.1:9100", "ipc:///tmp/x.sock"]


def test_tenants_from_toml(tmp_path):
    path = write(tmp_path, """
[tenants.acme]
token = "a-long-token-1"
ports = ["8000-8099", "9000"]
[tenants.acme.quotas]
max_queues = 7
[tenants.ops]
token = "a-long-token-2"
admin = true
""")
    config = load(path, environ={})
    acme, ops = config.tenants
    assert acme.name == "acme" and acme.ports == ((8000, 8099), (9000, 9000))
    assert acme.quotas.max_queues == 7 and not acme.admin
    assert ops.admin


@pytest.mark.parametrize("text, words", [
    ("[kernel]\nnope = 1\n", "unknown kernel option 'nope'"),
    ("[kernel]\nmax_message_bytes = 'big'\n", "must be an integer"),
    ("[other]\n", "unknown sections"),
    ("[tenants.a]\ncolour = 'red'\n", "unknown keys"),
    ("[tenants.a]\nports = ['90000']\n", "bad port range"),
    ("[tenants.a.quotas]\nmax_queues = -1\n", "max_queues"),
    ("[tenants.a.quotas]\nmax_cats = 1\n", "unknown quota 'max_cats'"),
    ("this is not toml", "not valid TOML"),
])
def test_bad_config_names_the_fault(tmp_path, text, words):
    with pytest.raises(InvalidArgument, match=words):
        load(write(tmp_path, text), environ={})


def test_missing_file(tmp_path):
    with pytest.raises(InvalidArgument, match="cannot read config"):
        load(str(tmp_path / "absent.toml"), environ={})


def test_bad_environment_value():
    with pytest.raises(InvalidArgument, match=r"\$NUBIS_MAX_MESSAGE_BYTES"):
        load(None, environ={"NUBIS_MAX_MESSAGE_BYTES": "lots"})
