"""Which build of the hot paths runs: compiled (ext/) or the pure twins.

Set NUBIS_PURE=1 to force the pure-Python twins even where the extension is
built (the test suite runs both ways).
"""

import logging
import os

log = logging.getLogger("nubis.hot")

PURE_FORCED = os.environ.get("NUBIS_PURE") == "1"
BUILD = "pure"
