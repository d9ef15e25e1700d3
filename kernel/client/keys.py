"""A client's TLS files and CURVE keys: from arguments, else the environment.

    grpcs://    tls_ca ($NUBIS_TLS_CA): the PEM file of the CA that signed
                the kernel's certificate; without it, the system's roots.
                tls_cert and tls_key ($NUBIS_TLS_CERT, $NUBIS_TLS_KEY): a
                client certificate, for a kernel that asks for one.
    zmq+tcp://  curve_server_key ($NUBIS_CURVE_SERVER_KEY): the kernel's
                public key. With it the connection uses CURVE instead of
                PLAIN and is authenticated by the tenant's keypair,
                curve_secret_key ($NUBIS_CURVE_SECRET_KEY) and
                curve_public_key ($NUBIS_CURVE_PUBLIC_KEY, derived from the
                secret key when unset); no token is needed.

CURVE keys are Z85 text or key file paths, as for the kernel. Options that
do not apply to the URL's scheme are ignored: ipc:// always uses PLAIN.
"""

import os

from nubis import security
from nubis.errors import InvalidArgument

ENV = {
    "tls_ca": "NUBIS_TLS_CA",
    "tls_cert": "NUBIS_TLS_CERT",
    "tls_key": "NUBIS_TLS_KEY",
    "curve_server_key": "NUBIS_CURVE_SERVER_KEY",
    "curve_secret_key": "NUBIS_CURVE_SECRET_KEY",
    "curve_public_key": "NUBIS_CURVE_PUBLIC_KEY",
}


def connection_options(url, given: dict, environ=os.environ) -> dict:
    """The security keyword arguments of the connection for `url`."""
    unknown = set(given) - set(ENV)
    if unknown:
        raise TypeError(f"unknown client options {sorted(unknown)}")
    values = {key: given.get(key) or environ.get(var, "")
              for key, var in ENV.items()}
    if url.transport == "grpc":
        return {"credentials": _tls(values)} if url.tls else {}
    if url.address.startswith("tcp://") and values["curve_server_key"]:
        return {"curve": _curve(values)}
    return {}


def _tls(values: dict):
    """gRPC channel credentials; a missing file is INVALID_ARGUMENT."""
    import grpc

    ca, cert, key = values["tls_ca"], values["tls_cert"], values["tls_key"]
    if bool(cert) != bool(key):
        raise InvalidArgument("a client certificate needs both tls_cert and "
                              "tls_key")
    return grpc.ssl_channel_credentials(
        root_certificates=security.read_pem(ca, "tls_ca") if ca else None,
        private_key=security.read_pem(key, "tls_key") if key else None,
        certificate_chain=security.read_pem(cert, "tls_cert") if cert else None)


def _curve(values: dict) -> tuple[bytes, bytes, bytes]:
    """(kernel's public key, tenant's public key, tenant's secret key), Z85."""
    server = security.curve_key(values["curve_server_key"], "curve_server_key")
    if not values["curve_secret_key"]:
        raise InvalidArgument("CURVE needs the tenant's secret key: pass "
                              "curve_secret_key= or set NUBIS_CURVE_SECRET_KEY")
    secret = security.curve_key(values["curve_secret_key"], "curve_secret_key",
                                "secret")
    public = security.public_of(secret, "curve_secret_key")
    if values["curve_public_key"]:
        given = security.curve_key(values["curve_public_key"], "curve_public_key")
        if given != public:
            raise InvalidArgument("curve_public_key does not belong to "
                                  "curve_secret_key")
    return server, public, secret
