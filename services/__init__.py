"""User-space services built on the four cloud calls.

Everything here uses only the public client library (`nubis.client` and the
exceptions of `nubis.errors`), exactly as a tenant's own code would; a test
keeps it so.
"""
