"""Key material for the network transports: CURVE keys and TLS files.

Each function raises InvalidArgument naming the option at fault, so a
kernel with bad key material stops at boot with a message an operator can
act on, instead of failing every handshake later. Kernel and client share
the CURVE key reader: a key is given as its 40-character Z85 text, or as
the path of a file holding that text, the output of `nubis keygen`, or a
ZeroMQ certificate (as `zmq.auth.create_certificates` writes).
"""

import re
import ssl
from dataclasses import dataclass

from nubis.errors import InvalidArgument

Z85_KEY_CHARS = 40


@dataclass(frozen=True)
class TlsFiles:
    """A gRPC server's certificate chain and key, and the CA of its clients."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None


def curve_key(value: str, option: str, kind: str = "public") -> bytes:
    """A CURVE key as Z85 bytes, from Z85 text or a key file's path.

    `kind` ("public" or "secret") picks the key of a ZeroMQ certificate.
    """
    from zmq.utils import z85

    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{option}: expected a Z85 key or a key file path, "
                              f"got {value!r}")
    text = value.strip()
    if len(text) != Z85_KEY_CHARS:
        text = _key_file(text, option, kind)
    try:
        raw = z85.decode(text)
    except (KeyError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise InvalidArgument(f"{option}: not a CURVE {kind} key (expected 40 "
                              "characters of Z85, as `nubis keygen` prints)")
    return text.encode()


def _key_file(path: str, option: str, kind: str) -> str:
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or "not text"
        raise InvalidArgument(f"{option}: {path!r} is neither a 40-character "
                              f"Z85 key nor a readable key file ({reason})"
                              ) from None
    # A ZeroMQ certificate says `secret-key = "..."`; `nubis keygen` output,
    # saved to a file, says `curve_secret_key = "..."`.
    found = re.search(rf'{kind}[-_]key\s*=\s*"([^"]*)"', text)
    return found.group(1) if found else text.strip()


def public_of(secret: bytes, option: str) -> bytes:
    """The public key of a CURVE secret key (both Z85)."""
    import zmq

    try:
        return zmq.curve_public(secret)
    except zmq.ZMQError as e:
        raise InvalidArgument(f"{option}: cannot derive the public key: {e}"
                              ) from None


def server_curve(config) -> tuple[bytes, bytes] | None:
    """The kernel's CURVE (public, secret) keys, or None when it has none."""
    if not config.curve_secret_key:
        if config.curve_public_key:
            raise InvalidArgument("curve_public_key is set without "
                                  "curve_secret_key; set both, or neither")
        return None
    secret = curve_key(config.curve_secret_key, "curve_secret_key", "secret")
    public = public_of(secret, "curve_secret_key")
    if config.curve_public_key:
        given = curve_key(config.curve_public_key, "curve_public_key")
        if given != public:
            raise InvalidArgument("curve_public_key does not belong to "
                                  "curve_secret_key; leave it out to derive it")
    return public, secret


def server_tls(config) -> TlsFiles | None:
    """The gRPC server's TLS files, checked, or None for plaintext."""
    cert, key = config.grpc_tls_cert, config.grpc_tls_key
    if not cert and not key:
        if config.grpc_tls_client_ca:
            raise InvalidArgument("grpc_tls_client_ca needs grpc_tls_cert and "
                                  "grpc_tls_key")
        return None
    if not cert or not key:
        missing = "grpc_tls_key" if cert else "grpc_tls_cert"
        raise InvalidArgument(f"{missing} is not set; TLS needs both "
                              "grpc_tls_cert and grpc_tls_key")
    files = TlsFiles(read_pem(cert, "grpc_tls_cert"), read_pem(key, "grpc_tls_key"),
                     read_pem(config.grpc_tls_client_ca, "grpc_tls_client_ca")
                     if config.grpc_tls_client_ca else None)

    # grpc would accept a mismatched pair and fail each handshake; the ssl
    # module checks the pair now.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise InvalidArgument(f"grpc_tls_cert and grpc_tls_key: {cert!r} and "
                              f"{key!r} are not a certificate and its key "
                              f"({e.reason or e})") from None
    if config.grpc_tls_client_ca:
        try:
            context.load_verify_locations(config.grpc_tls_client_ca)
        except ssl.SSLError as e:
            raise InvalidArgument(f"grpc_tls_client_ca: {config.grpc_tls_client_ca!r}"
                                  f" holds no CA certificate ({e.reason or e})"
                                  ) from None
    return files


def read_pem(path: str, option: str) -> bytes:
    """A PEM file's bytes; INVALID_ARGUMENT names the option if it is not one."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InvalidArgument(f"{option}: cannot read {path!r}: {e.strerror}"
                              ) from None
    if b"-----BEGIN " not in data:
        raise InvalidArgument(f"{option}: {path!r} is not a PEM file")
    return data


def check(config) -> None:
    """Load the kernel's key material once, so bad keys stop it at boot."""
    server_curve(config)
    server_tls(config)
