"""The blob store: one tenant's whole immutable objects, by key, in RAM.

Theory of operation. The store is sans-I/O and single-threaded: the kernel
calls it from its one event loop, so it takes no locks and never blocks
longer than a hash of the content it is given.

- An object is immutable. A put stores a new `Blob` that replaces the whole
  object under its key; nothing ever changes a stored `Blob` or its data.
  The content is held as the `bytes` given to put and is never copied again:
  a get returns a memoryview over it.
- The etag is the hex SHA-256 of the content. A caller that hashed the
  content itself (the kernel does, off the loop, for big objects) passes it
  in; otherwise put computes it.
- Conditions are checked against the object as it is when the call runs:
  `if_none_match` creates only, `if_match` acts only on that version.
- Accounting is exact: `bytes_stored` is always the sum of the sizes of the
  stored objects, and quotas are checked against the total after the call,
  counting a replaced object as gone.
- `_keys`, the sorted key index, always holds exactly the keys of `_blobs`.
  Listing walks it in order of code points, which for valid keys (no lone
  surrogates) is the order of their UTF-8 bytes, as in S3.
- A failed call changes nothing: every check runs before the first change.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable

from sortedcontainers import SortedList

from nubis.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_KEY_BYTES = 1024
MAX_CONTENT_TYPE_BYTES = 1024
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 1000

# C0 controls, DEL and C1 controls: never valid in a key.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_ETAG_RE = re.compile("[0-9a-f]{64}")
# Tags the page token's payload, so that most strings that were never a
# token are refused instead of read as a key.
_TOKEN_TAG = b"\x01"
_MAX_CHAR = chr(0x10FFFF)


class BlobLimits:
    """What one tenant may store; a breach answers RESOURCE_EXHAUSTED."""

    __slots__ = ("max_bytes", "max_blob_bytes", "max_blobs", "max_metadata_bytes")

    def __init__(self, max_bytes: int = 1 << 30, max_blob_bytes: int = 1 << 30,
                 max_blobs: int = 1_000_000, max_metadata_bytes: int = 8192):
        self.max_bytes = max_bytes
        self.max_blob_bytes = max_blob_bytes
        self.max_blobs = max_blobs
        self.max_metadata_bytes = max_metadata_bytes

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)}" for name in self.__slots__)
        return f"BlobLimits({fields})"


class Blob:
    """One stored object and its info; never changed once stored."""

    __slots__ = ("key", "data", "size", "etag", "content_type", "metadata",
                 "created_unix_ms")

    def __init__(self, key: str, data: bytes, size: int, etag: str,
                 content_type: str, metadata: dict[str, str],
                 created_unix_ms: int):
        self.key = key
        self.data = data
        self.size = size
        self.etag = etag
        self.content_type = content_type
        self.metadata = metadata
        self.created_unix_ms = created_unix_ms

    def __repr__(self) -> str:
        return f"<Blob {self.key!r} size={self.size} etag={self.etag[:12]}>"


class BlobStore:
    """A tenant's blobs: put, get, head, delete and list by key."""

    __slots__ = ("_limits", "_wall", "_blobs", "_keys", "_bytes")

    def __init__(self, limits: BlobLimits | None = None,
                 wall: Callable[[], float] = time.time):
        self._limits = limits if limits is not None else BlobLimits()
        self._wall = wall
        self._blobs: dict[str, Blob] = {}
        self._keys = SortedList()
        self._bytes = 0

    @property
    def limits(self) -> BlobLimits:
        return self._limits

    @property
    def bytes_stored(self) -> int:
        """Total size of the stored objects' content."""
        return self._bytes

    @property
    def count(self) -> int:
        """Number of stored objects."""
        return len(self._blobs)

    def put(self, key: str, data: bytes, content_type: str = "",
            metadata: dict | None = None, if_none_match: bool = False,
            if_match: str = "", etag: str = "") -> Blob:
        """Store `data` under `key`, replacing any object there; return it.

        `etag`, when given, is the content's hex SHA-256 computed by the
        caller, and is trusted.
        """
        _check_key(key)
        if if_none_match and if_match:
            raise InvalidArgument("if_none_match and if_match are exclusive; "
                                  "set at most one")
        if type(data) is not bytes:
            data = _as_bytes(data)
        size = len(data)
        limits = self._limits
        if size > limits.max_blob_bytes:
            raise ResourceExhausted(
                f"blob {key!r} of {size} bytes is over the limit of "
                f"{limits.max_blob_bytes} bytes per blob")
        meta = _checked_metadata(metadata, limits.max_metadata_bytes)
        content_type = _checked_content_type(content_type)
        if etag and not (type(etag) is str and _ETAG_RE.fullmatch(etag)):
            raise InvalidArgument(f"etag {etag!r} is not a hex sha-256")

        old = self._blobs.get(key)
        self._check_condition(key, old, if_none_match, if_match)
        total = self._bytes + size - (old.size if old is not None else 0)
        self._check_quota(key, old, size, total)

        blob = Blob(key, data, size, etag or hashlib.sha256(data).hexdigest(),
                    content_type, meta, int(self._wall() * 1000))
        self._blobs[key] = blob
        if old is None:
            self._keys.add(key)
        self._bytes = total
        return blob

    def get(self, key: str, offset: int = 0, length: int = 0,
            if_match: str = "") -> tuple[Blob, memoryview]:
        """The object and a view of its bytes [offset, offset + length).

        A length of 0 reads to the end, and a range past the end is clipped.
        The view shares the stored buffer: no byte is copied.
        """
        blob = self._blobs.get(key)
        if blob is None:
            raise NotFound(f"blob {key!r} not found")
        if if_match and if_match != blob.etag:
            raise FailedPrecondition(
                f"blob {key!r} has etag {blob.etag}, not {if_match}")
        if not offset and not length:
            return blob, memoryview(blob.data)

        if offset < 0 or length < 0:
            raise InvalidArgument(
                f"range offset {offset} length {length} is negative")
        if offset > blob.size:
            raise OutOfRange(f"offset {offset} is past the end of blob {key!r} "
                             f"of {blob.size} bytes")
        end = offset + length if length else blob.size
        return blob, memoryview(blob.data)[offset:end]

    def head(self, key: str) -> Blob:
        """The object, for its info; its content is not read."""
        blob = self._blobs.get(key)
        if blob is None:
            raise NotFound(f"blob {key!r} not found")
        return blob

    def delete(self, key: str, if_match: str = "") -> None:
        """Remove the object, only if it has etag `if_match` when that is set."""
        blob = self._blobs.get(key)
        if blob is None:
            raise NotFound(f"blob {key!r} not found")
        if if_match and if_match != blob.etag:
            raise FailedPrecondition(
                f"blob {key!r} has etag {blob.etag}, not {if_match}")

        del self._blobs[key]
        self._keys.remove(key)
        self._bytes -= blob.size

    def list(self, prefix: str = "", delimiter: str = "", page_size: int = 0,
             page_token: str = "") -> tuple[list[Blob], list[str], str]:
        """One page of the objects whose keys start with `prefix`, in order.

        With a delimiter, keys holding it after the prefix are folded into
        one common prefix (the key up to and including the delimiter),
        reported once in the whole listing. A page holds at most `page_size`
        blobs and common prefixes together. The returned token, empty on
        the last page, asks for the next page.
        """
        limit = _checked_page_size(page_size)
        if type(prefix) is not str or type(delimiter) is not str:
            raise InvalidArgument("prefix and delimiter must be strings")
        lo, inclusive = prefix, True
        if page_token:
            lo, inclusive = _resume_point(_decode_token(page_token), prefix,
                                          delimiter)
            if lo is not None and lo < prefix:
                lo, inclusive = prefix, True

        return self._list_from(lo, inclusive, prefix, delimiter, limit)

    def clear(self) -> None:
        """Remove every object."""
        self._blobs.clear()
        self._keys.clear()
        self._bytes = 0

    def _check_condition(self, key: str, old: Blob | None, if_none_match: bool,
                         if_match: str) -> None:
        if old is None:
            if if_match:
                raise FailedPrecondition(
                    f"blob {key!r} not found, so it has no etag {if_match}")
            return
        if if_none_match:
            raise FailedPrecondition(f"blob {key!r} already exists")
        if if_match and if_match != old.etag:
            raise FailedPrecondition(
                f"blob {key!r} has etag {old.etag}, not {if_match}")

    def _check_quota(self, key: str, old: Blob | None, size: int,
                     total: int) -> None:
        limits = self._limits
        if old is None and len(self._blobs) >= limits.max_blobs:
            raise ResourceExhausted(
                f"blob {key!r} would be blob {len(self._blobs) + 1}, over the "
                f"limit of {limits.max_blobs} blobs")
        if total > limits.max_bytes:
            raise ResourceExhausted(
                f"blob {key!r} of {size} bytes would bring the bytes stored to "
                f"{total}, over the limit of {limits.max_bytes}")

    def _list_from(self, lo: str | None, inclusive: bool, prefix: str,
                   delimiter: str, limit: int) -> tuple[list[Blob], list[str], str]:
        # Each pass walks the index from `lo` until it folds a common prefix,
        # then restarts past every key under it: a bisection, not a scan.
        # The page is closed only on seeing one more entry, so a token is
        # never handed out for an empty page.
        blobs: list[Blob] = []
        prefixes: list[str] = []
        last = ""
        start = len(prefix)
        while lo is not None:
            folded = None
            for key in self._keys.irange(lo, inclusive=(inclusive, True)):
                if not key.startswith(prefix):
                    break
                if len(blobs) + len(prefixes) == limit:
                    return blobs, prefixes, _encode_token(last)
                cut = key.find(delimiter, start) if delimiter else -1
                if cut >= 0:
                    folded = key[:cut + len(delimiter)]
                    break
                blobs.append(self._blobs[key])
                last = key
            if folded is None:
                break
            prefixes.append(folded)
            last = folded
            lo, inclusive = _successor(folded), True
        return blobs, prefixes, ""


def _check_key(key: str) -> None:
    # Fast path: printable means no control characters and no surrogates,
    # and 256 characters are at most 1024 UTF-8 bytes.
    if type(key) is str and key.isprintable() and 0 < len(key) <= 256:
        return
    if not isinstance(key, str):
        raise InvalidArgument(f"key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidArgument("key is empty")
    try:
        n = len(key.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(f"key {key!r} is not valid utf-8") from None
    if n > MAX_KEY_BYTES:
        raise InvalidArgument(f"key {key[:32]!r}... is {n} bytes, over the limit "
                              f"of {MAX_KEY_BYTES}")
    bad = _CONTROL_RE.search(key)
    if bad:
        raise InvalidArgument(
            f"key {key!r} holds control character {bad.group()!r}")


def _as_bytes(data) -> bytes:
    # A bytearray or a view could change after the put; one copy makes the
    # stored object immutable.
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise InvalidArgument(
            f"data must be bytes, not {type(data).__name__}") from None


def _checked_metadata(metadata, limit: int) -> dict[str, str]:
    if not metadata:
        return {}
    try:
        items = list(metadata.items())
    except AttributeError:
        raise InvalidArgument(
            f"metadata must be a mapping, not {type(metadata).__name__}") from None

    total = 0
    for name, value in items:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(
                f"metadata name {name!r} is not a non-empty string")
        if not isinstance(value, str):
            raise InvalidArgument(
                f"metadata {name!r} is a {type(value).__name__}, not a string")
        try:
            total += len(name.encode()) + len(value.encode())
        except UnicodeEncodeError:
            raise InvalidArgument(f"metadata {name!r} is not valid utf-8") from None
        if total > limit:
            raise InvalidArgument(
                f"metadata {name!r} brings the metadata to {total} bytes, over "
                f"the limit of {limit}")
    return dict(items)


def _checked_content_type(content_type: str) -> str:
    if not content_type:
        return DEFAULT_CONTENT_TYPE
    if not isinstance(content_type, str):
        raise InvalidArgument(f"content type must be a string, "
                              f"not {type(content_type).__name__}")
    if len(content_type) > MAX_CONTENT_TYPE_BYTES // 4:
        try:
            n = len(content_type.encode())
        except UnicodeEncodeError:
            raise InvalidArgument("content type is not valid utf-8") from None
        if n > MAX_CONTENT_TYPE_BYTES:
            raise InvalidArgument(f"content type {content_type[:32]!r}... is "
                                  f"{n} bytes, over the limit of "
                                  f"{MAX_CONTENT_TYPE_BYTES}")
    return content_type


def _checked_page_size(page_size: int) -> int:
    if type(page_size) is not int or page_size < 0:
        raise InvalidArgument(f"page size {page_size!r} is not a count")
    if page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page size {page_size} is over the limit of {MAX_PAGE_SIZE}")
    return page_size or DEFAULT_PAGE_SIZE


def _successor(s: str) -> str | None:
    """The least string above every string that starts with `s`; None if none."""
    s = s.rstrip(_MAX_CHAR)
    if not s:
        return None
    return s[:-1] + chr(ord(s[-1]) + 1)


def _resume_point(last: str, prefix: str, delimiter: str) -> tuple[str | None, bool]:
    # The token holds the last key or common prefix a page consumed. A
    # common prefix is recognised by folding it again, and the next page
    # starts past all of its keys, so it is never reported twice.
    if delimiter and last.startswith(prefix):
        cut = last.find(delimiter, len(prefix))
        if cut >= 0:
            return _successor(last[:cut + len(delimiter)]), True
    return last, False


def _encode_token(last: str) -> str:
    raw = base64.urlsafe_b64encode(_TOKEN_TAG + last.encode())
    return raw.rstrip(b"=").decode("ascii")


def _decode_token(token: str) -> str:
    # Decoding must be exact: the token is re-encoded and compared, so that
    # padding, stray characters or a foreign alphabet are all refused.
    if not isinstance(token, str):
        raise InvalidArgument(f"page token {token!r} is not a string")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        last = raw[len(_TOKEN_TAG):].decode()
    except ValueError:
        raise InvalidArgument(f"page token {token[:64]!r} is malformed") from None
    if not raw.startswith(_TOKEN_TAG) or _encode_token(last) != token:
        raise InvalidArgument(f"page token {token[:64]!r} is malformed")
    return last
