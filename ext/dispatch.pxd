# The C side of ext/dispatch.pyx, twin of nubis.transport.dispatch.
#
# It declares nothing for other extensions: its two def functions,
# parse_request and reply_frames, are the module's whole interface. The
# REPLY header is written in place by write_header, which it cimports from
# nubis._ext.frames (see ext/frames.pxd), so a reply costs no Python call
# for its header.

cdef enum:
    # The kind byte of a whole reply; the pure twin's frames.REPLY.
    REPLY_KIND = 16
