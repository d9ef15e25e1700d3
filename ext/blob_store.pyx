# cython: language_level=3, auto_pickle=False
# cython: boundscheck=True, wraparound=True
"""The blob store in C: the twin of nubis.blob.store, call for call.

The rules and invariants are those of the pure twin's theory of operation:
the same calls give the same blobs, views, listings, page tokens, errors and
messages. The sorted key index is held in C (see blob_store.pxd), and the
checks every put makes (key, etag, content type) have C fast paths for the
common case; any value they do not pass goes to the pure twin's own check,
so that the error is the same.

The value types (Blob, BlobLimits) and the checks and page tokens of the
cold paths are the pure twin's own, imported.
"""

import hashlib
import time

from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.unicode cimport (
    Py_UNICODE_ISPRINTABLE,
    PyUnicode_1BYTE_DATA,
    PyUnicode_CheckExact,
    PyUnicode_Find,
    PyUnicode_GET_LENGTH,
    PyUnicode_READ_CHAR,
    PyUnicode_Tailmatch,
)

from nubis.blob.store import (
    DEFAULT_CONTENT_TYPE,
    MAX_CONTENT_TYPE_BYTES,
    MAX_KEY_BYTES,
    MAX_PAGE_SIZE,
    Blob,
    BlobLimits,
    _as_bytes,
    _check_key,
    _checked_content_type,
    _checked_metadata,
    _checked_page_size,
    _decode_token,
    _encode_token,
    _resume_point,
    _successor,
)
from nubis.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    # Keys are always str here, so the compare cannot fail.
    int PyUnicode_Compare(object, object) noexcept

cdef enum:
    # Keys per chunk of the index; a chunk splits past twice this.
    LOAD = 512

# Up to this many characters a str is within the limit of UTF-8 bytes
# whatever it holds (4 bytes per character at most).
cdef Py_ssize_t _SHORT_KEY = MAX_KEY_BYTES // 4
cdef Py_ssize_t _SHORT_CONTENT_TYPE = MAX_CONTENT_TYPE_BYTES // 4
cdef object _sha256 = hashlib.sha256


# -- the key index ------------------------------------------------------------


cdef Py_ssize_t _bisect(list keys, object key, bint right) noexcept:
    """Where key goes in sorted keys: before equal ones, or after them."""
    cdef Py_ssize_t lo = 0, hi = PyList_GET_SIZE(keys), mid
    cdef int c
    while lo < hi:
        mid = (lo + hi) >> 1
        c = PyUnicode_Compare(<object>PyList_GET_ITEM(keys, mid), key)
        if c < 0 or (right and c == 0):
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef class _Keys:

    def __cinit__(self):
        self.chunks = []
        self.maxes = []
        self.count = 0

    cdef int add(self, object key) except -1:
        cdef Py_ssize_t pos
        cdef list chunk
        if not self.chunks:
            self.chunks.append([key])
            self.maxes.append(key)
            self.count = 1
            return 0

        pos = _bisect(self.maxes, key, True)
        if pos == len(self.maxes):
            pos -= 1
            chunk = self.chunks[pos]
            chunk.append(key)
            self.maxes[pos] = key
        else:
            chunk = self.chunks[pos]
            chunk.insert(_bisect(chunk, key, True), key)
        self.count += 1
        if len(chunk) > 2 * LOAD:
            self.chunks.insert(pos + 1, chunk[LOAD:])
            del chunk[LOAD:]
            self.maxes.insert(pos, chunk[LOAD - 1])
        return 0

    cdef int remove(self, object key) except -1:
        cdef Py_ssize_t pos = _bisect(self.maxes, key, False)
        cdef list chunk = self.chunks[pos]
        cdef Py_ssize_t index = _bisect(chunk, key, False)
        del chunk[index]
        self.count -= 1
        if not chunk:
            del self.chunks[pos]
            del self.maxes[pos]
        elif index == len(chunk):
            self.maxes[pos] = chunk[index - 1]
        return 0

    cdef void clear(self) noexcept:
        self.chunks = []
        self.maxes = []
        self.count = 0

    cdef Py_ssize_t find(self, object lo, bint inclusive,
                         Py_ssize_t *index) except -1:
        cdef Py_ssize_t pos = _bisect(self.maxes, lo, not inclusive)
        index[0] = 0
        if pos < len(self.chunks):
            index[0] = _bisect(self.chunks[pos], lo, not inclusive)
        return pos


# -- checks with a fast path --------------------------------------------------


cdef bint _plain_key(object key) except -1:
    """Whether a key is a str of 1 to 256 printable characters."""
    cdef Py_ssize_t n, i
    cdef const unsigned char *ascii
    if not PyUnicode_CheckExact(key):
        return False
    n = PyUnicode_GET_LENGTH(key)
    if not 0 < n <= _SHORT_KEY:
        return False
    if PyUnicode_IS_ASCII(key):
        ascii = PyUnicode_1BYTE_DATA(key)
        for i in range(n):
            if not 0x20 <= ascii[i] < 0x7F:
                return False
        return True
    for i in range(n):
        if not Py_UNICODE_ISPRINTABLE(PyUnicode_READ_CHAR(key, i)):
            return False
    return True


cdef bint _hex_sha256(object etag) except -1:
    """Whether etag is 64 lower-case hex digits (the pure twin's _ETAG_RE)."""
    cdef const unsigned char *ascii
    cdef Py_ssize_t i
    if (not PyUnicode_CheckExact(etag) or PyUnicode_GET_LENGTH(etag) != 64
            or not PyUnicode_IS_ASCII(etag)):
        return False
    ascii = PyUnicode_1BYTE_DATA(etag)
    for i in range(64):
        if not (0x30 <= ascii[i] <= 0x39 or 0x61 <= ascii[i] <= 0x66):
            return False
    return True


# -- the store ----------------------------------------------------------------


cdef class BlobStore:
    """A tenant's blobs: put, get, head, delete and list by key."""

    def __init__(self, limits=None, wall=time.time):
        self._limits = limits if limits is not None else BlobLimits()
        self._wall = wall
        self._blobs = {}
        self._keys = _Keys()
        self._bytes = 0

    @property
    def limits(self):
        return self._limits

    @property
    def bytes_stored(self):
        """Total size of the stored objects' content."""
        return self._bytes

    @property
    def count(self):
        """Number of stored objects."""
        return len(self._blobs)

    def put(self, key, data, content_type="", metadata=None,
            if_none_match=False, if_match="", etag=""):
        """Store `data` under `key`, replacing any object there; return it.

        `etag`, when given, is the content's hex SHA-256 computed by the
        caller, and is trusted.
        """
        cdef Py_ssize_t size
        cdef long long total
        if not _plain_key(key):
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
        meta = (_checked_metadata(metadata, limits.max_metadata_bytes)
                if metadata else {})
        if not content_type:
            content_type = DEFAULT_CONTENT_TYPE
        elif not (PyUnicode_CheckExact(content_type)
                  and PyUnicode_GET_LENGTH(content_type) <= _SHORT_CONTENT_TYPE):
            content_type = _checked_content_type(content_type)
        if etag and not _hex_sha256(etag):
            raise InvalidArgument(f"etag {etag!r} is not a hex sha-256")

        old = self._blobs.get(key)
        _check_condition(key, old, if_none_match, if_match)
        total = self._bytes + size - (old.size if old is not None else 0)
        _check_quota(self, key, old, size, total)

        blob = Blob(key, data, size, etag or _sha256(data).hexdigest(),
                    content_type, meta, int(self._wall() * 1000))
        self._blobs[key] = blob
        if old is None:
            self._keys.add(key)
        self._bytes = total
        return blob

    def get(self, key, offset=0, length=0, if_match=""):
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
            return blob, PyMemoryView_FromObject(blob.data)

        if offset < 0 or length < 0:
            raise InvalidArgument(
                f"range offset {offset} length {length} is negative")
        size = blob.size
        if offset > size:
            raise OutOfRange(f"offset {offset} is past the end of blob {key!r} "
                             f"of {size} bytes")
        end = offset + length if length else size
        return blob, PyMemoryView_FromObject(blob.data)[offset:end]

    def head(self, key):
        """The object, for its info; its content is not read."""
        blob = self._blobs.get(key)
        if blob is None:
            raise NotFound(f"blob {key!r} not found")
        return blob

    def delete(self, key, if_match=""):
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

    def list(self, prefix="", delimiter="", page_size=0, page_token=""):
        """One page of the objects whose keys start with `prefix`, in order.

        With a delimiter, keys holding it after the prefix are folded into
        one common prefix (the key up to and including the delimiter),
        reported once in the whole listing. A page holds at most `page_size`
        blobs and common prefixes together. The returned token, empty on
        the last page, asks for the next page.
        """
        cdef Py_ssize_t limit
        if type(page_size) is int and 0 < page_size <= MAX_PAGE_SIZE:
            limit = page_size
        else:
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

    def clear(self):
        """Remove every object."""
        self._blobs.clear()
        self._keys.clear()
        self._bytes = 0

    def __reduce__(self):
        """Pickle as plain data and the clock, for the journal's snapshots."""
        return _load_blob_store, (_export_store(self),)

    cdef tuple _list_from(self, object lo, bint inclusive, str prefix,
                          str delimiter, Py_ssize_t limit):
        # Each pass walks the index from `lo` until it folds a common prefix,
        # then restarts past every key under it: a bisection, not a scan.
        # The page is closed only on seeing one more entry, so a token is
        # never handed out for an empty page.
        cdef list blobs = [], prefixes = [], chunks = self._keys.chunks
        cdef list chunk
        cdef object key, folded, last = ""
        cdef Py_ssize_t start = len(prefix), pos, index, cut
        cdef Py_ssize_t n_delimiter = len(delimiter)
        cdef dict stored = self._blobs
        while lo is not None:
            folded = None
            pos = self._keys.find(lo, inclusive, &index)
            while pos < len(chunks):
                chunk = chunks[pos]
                key = chunk[index]
                if PyUnicode_Tailmatch(key, prefix, 0, PY_SSIZE_T_MAX, -1) != 1:
                    break
                if len(blobs) + len(prefixes) == limit:
                    return blobs, prefixes, _encode_token(last)
                cut = (PyUnicode_Find(key, delimiter, start,
                                      PyUnicode_GET_LENGTH(key), 1)
                       if n_delimiter else -1)
                if cut >= 0:
                    folded = key[:cut + n_delimiter]
                    break
                blobs.append(stored[key])
                last = key
                index += 1
                if index == len(chunk):
                    pos, index = pos + 1, 0
            if folded is None:
                break
            prefixes.append(folded)
            last = folded
            lo, inclusive = _successor(folded), True
        return blobs, prefixes, ""


cdef int _check_condition(object key, object old, object if_none_match,
                          object if_match) except -1:
    if old is None:
        if if_match:
            raise FailedPrecondition(
                f"blob {key!r} not found, so it has no etag {if_match}")
        return 0
    if if_none_match:
        raise FailedPrecondition(f"blob {key!r} already exists")
    if if_match and if_match != old.etag:
        raise FailedPrecondition(
            f"blob {key!r} has etag {old.etag}, not {if_match}")
    return 0


cdef int _check_quota(BlobStore store, object key, object old,
                      Py_ssize_t size, long long total) except -1:
    limits = store._limits
    count = len(store._blobs)
    if old is None and count >= limits.max_blobs:
        raise ResourceExhausted(
            f"blob {key!r} would be blob {count + 1}, over the "
            f"limit of {limits.max_blobs} blobs")
    if total > limits.max_bytes:
        raise ResourceExhausted(
            f"blob {key!r} of {size} bytes would bring the bytes stored to "
            f"{total}, over the limit of {limits.max_bytes}")
    return 0


# -- snapshots ----------------------------------------------------------------
#
# A store pickles as plain data (each blob a tuple of its fields) and its
# clock as given; _load_blob_store, the one name of this module a snapshot
# may hold, builds it again. The key index is rebuilt from the sorted keys.


cdef tuple _export_store(BlobStore store):
    cdef list blobs = []
    limits = store._limits
    for b in store._blobs.values():
        blobs.append((b.key, b.data, b.size, b.etag, b.content_type, b.metadata,
                      b.created_unix_ms))
    return (tuple([getattr(limits, f) for f in BlobLimits.__slots__]),
            store._wall, store._bytes, blobs)


def _load_blob_store(state):
    """A BlobStore from the state BlobStore.__reduce__ exports."""
    cdef BlobStore store
    cdef _Keys index
    cdef list keys
    limits, wall, total, blobs = state
    store = BlobStore(BlobLimits(*limits), wall)
    for fields in blobs:
        b = Blob(*fields)
        store._blobs[b.key] = b

    keys = sorted(store._blobs)
    index = store._keys
    index.chunks = [keys[i:i + LOAD] for i in range(0, len(keys), LOAD)]
    index.maxes = [chunk[-1] for chunk in index.chunks]
    index.count = len(keys)
    store._bytes = total
    return store
