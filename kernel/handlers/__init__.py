"""Handlers of the cloud calls, one module per primitive.

Importing this package registers every handler in the call table.
"""

from nubis.handlers import account, blob, listen, queue, spawn  # noqa: F401
