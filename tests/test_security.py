"""Security on the network: gRPC over TLS, ZeroMQ CURVE on tcp://.

One kernel serves gRPC with a self-signed certificate for 127.0.0.1 and
localhost, ZeroMQ ipc:// with PLAIN and tcp:// with CURVE; two tenants
have CURVE public keys, one given as Z85 text and one as a ZeroMQ
certificate file. Bad key material must stop a kernel at boot, naming the
option.
"""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner

from nubis import config
from nubis.cli.main import main
from nubis.client import AsyncClient, Client
from nubis.errors import InvalidArgument, NubisError, Unauthenticated, Unavailable
from tests.conftest import TOKENS, free_port

CLIENT_ENV = ("NUBIS_TLS_CA", "NUBIS_TLS_CERT", "NUBIS_TLS_KEY",
              "NUBIS_CURVE_SERVER_KEY", "NUBIS_CURVE_SECRET_KEY",
              "NUBIS_CURVE_PUBLIC_KEY")


def make_certificate(folder) -> tuple[str, str]:
    """A self-signed certificate and key for 127.0.0.1 and localhost."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    try:
        _with_cryptography(cert, key)
        return cert, key
    except ImportError:
        pass
    if shutil.which("openssl") is None:
        pytest.skip("making a test certificate needs `cryptography` or openssl")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
         "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


def _with_cryptography(cert_path: str, key_path: str) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName("localhost"),
             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(key, hashes.SHA256()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def write(folder, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class SecureKernel:
    """A kernel process with TLS and CURVE, and the keys to reach it."""

    def __init__(self, folder):
        self.folder = str(folder)
        self.cert, self.key = make_certificate(self.folder)
        # The kernel's keys: `nubis keygen` output saved as its key file.
        keys = CliRunner().invoke(main, ["keygen"]).output
        key_file = write(self.folder, "kernel.keys", keys)
        self.kernel_public = re.search(r'public_key = "(.+)"', keys)[1].encode()
        self.acme_public, self.acme_secret = zmq.curve_keypair()
        other_public_file, self.other_secret_file = zmq.auth.create_certificates(
            self.folder, "other")

        zmq_port, grpc_port = free_port(), free_port()
        self.urls = {
            "ipc": f"zmq+ipc://{self.folder}/kernel.sock",
            "curve": f"zmq+tcp://127.0.0.1:{zmq_port}",
            "grpcs": f"grpcs://127.0.0.1:{grpc_port}",
            "grpc": f"grpc://127.0.0.1:{grpc_port}",
        }
        path = os.path.join(self.folder, "nubis.toml")
        with open(path, "w") as f:
            f.write(f"""
[kernel]
zmq = ["ipc://{self.folder}/kernel.sock", "tcp://127.0.0.1:{zmq_port}"]
grpc = "127.0.0.1:{grpc_port}"
spawn = false
grpc_tls_cert = "{self.cert}"
grpc_tls_key = "{self.key}"
curve_secret_key = "{key_file}"
curve_public_key = "{key_file}"

[tenants.acme]
token = "{TOKENS['acme']}"
curve_public_key = "{self.acme_public.decode()}"

[tenants.other]
token = "{TOKENS['other']}"
curve_public_key = "{other_public_file}"
""")
        self.log_path = os.path.join(self.folder, "kernel.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nubis.cli.main", "kernel", "--config", path],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k not in CLIENT_ENV})
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kernel exited: {self.read_log()}")
            try:
                with Client(self.urls["ipc"], TOKENS["acme"], timeout=2) as c:
                    c.account.info()
                return
            except NubisError:
                time.sleep(0.2)
        raise RuntimeError(f"kernel did not start: {self.read_log()}")

    def curve(self, secret=None, **options) -> dict:
        """Client options for CURVE as acme, or with another secret key."""
        return dict(curve_server_key=self.kernel_public.decode(),
                    curve_secret_key=(secret or self.acme_secret).decode(),
                    **options)

    def read_log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    kernel = SecureKernel(tmp_path_factory.mktemp("sec", numbered=True))
    yield kernel
    assert kernel.stop() == 0, kernel.read_log()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Tests choose their keys; none come from the caller's environment."""
    for var in CLIENT_ENV:
        monkeypatch.delenv(var, raising=False)


# -- gRPC over TLS ----------------------------------------------------------


def test_grpcs_with_the_ca_works_and_names_the_tenant(secure):
    with Client(secure.urls["grpcs"], TOKENS["acme"], tls_ca=secure.cert) as c:
        info = c.account.info()
    assert info.tenant == "acme"
    assert secure.urls["grpcs"] in info.endpoints


def test_grpcs_takes_the_ca_from_the_environment(secure, monkeypatch):
    monkeypatch.setenv("NUBIS_TLS_CA", secure.cert)
    with Client(secure.urls["grpcs"], TOKENS["other"]) as c:
        assert c.account.info().tenant == "other"


def test_grpcs_still_needs_a_valid_token(secure):
    with Client(secure.urls["grpcs"], "not-a-token-at-all",
                tls_ca=secure.cert) as c, pytest.raises(Unauthenticated):
        c.account.info()


def test_grpcs_without_the_ca_is_unavailable(secure):
    with Client(secure.urls["grpcs"], TOKENS["acme"], timeout=5) as c, \
            pytest.raises(Unavailable):
        c.account.info()


def test_plaintext_grpc_to_the_tls_port_fails(secure):
    with Client(secure.urls["grpc"], TOKENS["acme"], timeout=5) as c, \
            pytest.raises(Unavailable):
        c.account.info()


# -- ZeroMQ CURVE on tcp:// -------------------------------------------------


def test_curve_client_is_bound_to_its_tenant_without_a_token(secure):
    with Client(secure.urls["curve"], "", **secure.curve()) as c:
        assert c.account.info().tenant == "acme"


def test_curve_keys_may_be_certificate_files(secure):
    with Client(secure.urls["curve"], "", curve_server_key=secure.kernel_public
                .decode(), curve_secret_key=secure.other_secret_file) as c:
        assert c.account.info().tenant == "other"


def test_curve_keys_come_from_the_environment(secure, monkeypatch):
    monkeypatch.setenv("NUBIS_CURVE_SERVER_KEY", secure.kernel_public.decode())
    monkeypatch.setenv("NUBIS_CURVE_SECRET_KEY", secure.acme_secret.decode())
    monkeypatch.setenv("NUBIS_CURVE_PUBLIC_KEY", secure.acme_public.decode())
    with Client(secure.urls["curve"], "") as c:
        assert c.account.info().tenant == "acme"


async def test_async_curve_client(secure):
    async with AsyncClient(secure.urls["curve"], "", **secure.curve()) as c:
        assert (await c.account.info()).tenant == "acme"


def test_curve_client_with_an_unknown_key_is_refused(secure):
    _, stranger = zmq.curve_keypair()
    with pytest.raises(Unauthenticated, match="refused"):
        Client(secure.urls["curve"], "", **secure.curve(stranger), timeout=5)


def test_plain_on_the_curve_endpoint_is_refused(secure):
    with pytest.raises(Unauthenticated, match="security mechanism"):
        Client(secure.urls["curve"], TOKENS["acme"], timeout=5)


def test_ipc_keeps_plain(secure):
    with Client(secure.urls["ipc"], TOKENS["other"]) as c:
        assert c.account.info().tenant == "other"


def test_a_public_key_not_of_the_secret_key_is_refused(secure):
    public, _ = zmq.curve_keypair()
    with pytest.raises(InvalidArgument, match="curve_public_key"):
        Client(secure.urls["curve"], "",
               **secure.curve(curve_public_key=public.decode()))


# -- bad key material stops the kernel at boot ------------------------------


def test_bad_key_material_names_the_option(tmp_path):
    cert, key = make_certificate(str(tmp_path))
    not_pem = write(tmp_path, "not.pem", "hello\n")
    cases = [
        ({"curve_secret_key": "not a key"}, "curve_secret_key"),
        ({"curve_secret_key": "x" * 39 + "~"}, "curve_secret_key"),
        ({"curve_public_key": zmq.curve_keypair()[0].decode()},
         "curve_public_key"),
        ({"curve_secret_key": zmq.curve_keypair()[1].decode(),
          "curve_public_key": zmq.curve_keypair()[0].decode()},
         "curve_public_key"),
        ({"grpc_tls_cert": cert}, "grpc_tls_key"),
        ({"grpc_tls_cert": not_pem, "grpc_tls_key": key}, "grpc_tls_cert"),
        ({"grpc_tls_cert": cert, "grpc_tls_key": str(tmp_path / "missing")},
         "grpc_tls_key"),
        ({"grpc_tls_cert": key, "grpc_tls_key": cert}, "grpc_tls_cert"),
        ({"grpc_tls_client_ca": cert}, "grpc_tls_client_ca"),
        ({"grpc_tls_cert": cert, "grpc_tls_key": key,
          "grpc_tls_client_ca": not_pem}, "grpc_tls_client_ca"),
    ]
    for overrides, option in cases:
        with pytest.raises(InvalidArgument, match=option):
            config.load(None, overrides, environ={})


def test_a_bad_tenant_key_names_the_tenant(tmp_path):
    path = write(tmp_path, "nubis.toml",
                 '[tenants.acme]\ncurve_public_key = "short"\n')
    with pytest.raises(InvalidArgument, match=r"tenants\.acme.*curve_public_key"):
        config.load(path, environ={})


def test_good_keys_load(tmp_path):
    cert, key = make_certificate(str(tmp_path))
    public, secret = zmq.curve_keypair()
    cfg = config.load(None, {"grpc_tls_cert": cert, "grpc_tls_key": key,
                             "curve_secret_key": secret.decode()}, environ={})
    assert cfg.curve_secret_key == secret.decode()


def test_nubis_kernel_exits_2_on_bad_key_material(tmp_path):
    path = write(tmp_path, "nubis.toml",
                 '[kernel]\nspawn = false\ncurve_secret_key = "nonsense"\n')
    done = subprocess.run(
        [sys.executable, "-m", "nubis.cli.main", "kernel", "--config", path],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "curve_secret_key" in done.stderr


async def test_mutual_tls_needs_a_client_certificate(tmp_path):
    from nubis.config import KernelConfig, TenantConfig
    from nubis.server import Server

    cert, key = make_certificate(str(tmp_path))
    server = Server(KernelConfig(
        zmq=[], grpc="127.0.0.1:0", grpc_tls_cert=cert, grpc_tls_key=key,
        grpc_tls_client_ca=cert,
        tenants=[TenantConfig(name="acme", token=TOKENS["acme"])]))
    await server.start()
    url = f"grpcs://{server.transports[0].bound}"
    try:
        async with AsyncClient(url, TOKENS["acme"], tls_ca=cert, tls_cert=cert,
                               tls_key=key) as c:
            assert (await c.account.info()).tenant == "acme"
        async with AsyncClient(url, TOKENS["acme"], tls_ca=cert, timeout=5) as c:
            with pytest.raises(Unavailable):
                await c.account.info()
    finally:
        await server.stop()
