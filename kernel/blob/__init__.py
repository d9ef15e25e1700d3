"""BLOB: whole immutable objects by key, held in RAM, one store per tenant.

`BlobStore` is the compiled twin (ext/blob_store.pyx) where it is built and
NUBIS_PURE is not 1, else the pure one, always at nubis.blob.store. The
value types are the pure module's in both builds.
"""

from nubis import _hot
from nubis.blob.store import (
    DEFAULT_CONTENT_TYPE,
    MAX_KEY_BYTES,
    MAX_PAGE_SIZE,
    Blob,
    BlobLimits,
    BlobStore,
)

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "MAX_KEY_BYTES",
    "MAX_PAGE_SIZE",
    "Blob",
    "BlobLimits",
    "BlobStore",
]

_ext = _hot.compiled("blob_store")
if _ext is not None:
    BlobStore = _ext.BlobStore
