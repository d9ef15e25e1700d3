"""BLOB: whole immutable objects by key, held in RAM, one store per tenant."""

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
