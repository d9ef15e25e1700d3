# The C side of ext/frames.pyx, twin of nubis.transport.frames.
#
# The header is 12 bytes, all big-endian: version (u8), kind (u8), code
# (u16) and request id (u64). These C-level helpers take and give plain C
# values, so another extension could build or read a header without a
# Python call; the module's def functions wrap them with the checks and
# errors of the pure twin.

cdef enum:
    # Bytes in a header frame; the pure twin's HEADER_SIZE.
    HEADER_BYTES = 12


# Write a header into out[0:12]; the caller has checked the ranges.
cdef void write_header(unsigned char *out, unsigned int version,
                       unsigned int kind, unsigned int code,
                       unsigned long long request_id) noexcept nogil

# The (version, kind, code, request id) tuple of the 12 bytes at p.
cdef tuple read_header(const unsigned char *p)
