"""Which build of the hot paths runs: compiled (ext/) or the pure twins.

Each public module picks its twin at its bottom: it asks `compiled` for the
extension module and, when there is one, rebinds its names to it (frames,
dispatch, histogram, queue, blob). The pure twins stay importable by their
own paths for tests and benchmarks. Set NUBIS_PURE=1 to force the pure
twins even where the extension is built.

`BUILD` is "compiled" when every module of the extension is in use and
"pure" otherwise (each public module still uses its own twin when only some
are built); it is worked out on first read, when it is also logged.
"""

import glob
import importlib
import importlib.machinery
import logging
import os

log = logging.getLogger("nubis.hot")

# The modules of ext/, each the twin of a pure module.
MODULES = ("frames", "dispatch", "histogram", "queue_store", "blob_store")
PURE_FORCED = os.environ.get("NUBIS_PURE") == "1"

_EXT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext")
_FIX = ("rebuild it with `pip install .` where a C compiler and the Python "
        "headers are present")
_loaded: dict = {}  # module -> the extension module, or None
_errors: dict = {}  # module -> why a built extension module does not load


def built(module: str):
    """The extension module nubis._ext.<module>, or None where it is not built.

    Ignores NUBIS_PURE: the tests use it to run the compiled twin too.
    """
    if module in _loaded:
        return _loaded[module]
    try:
        ext = importlib.import_module(f"nubis._ext.{module}")
    except ImportError as e:
        ext = None
        if _has_file(module):
            _errors[module] = str(e)
    _loaded[module] = ext
    return ext


def compiled(module: str):
    """The extension module to use for `module`, or None for the pure twin."""
    if PURE_FORCED:
        return None
    return built(module)


def _has_file(module: str) -> bool:
    return any(glob.glob(os.path.join(_EXT_DIR, module + suffix))
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _build() -> str:
    if PURE_FORCED:
        log.info("hot paths: pure Python, as NUBIS_PURE=1 asks")
        return "pure"
    missing = [m for m in MODULES if compiled(m) is None]
    if not missing:
        log.info("hot paths: compiled (nubis._ext: %s)", ", ".join(MODULES))
        return "compiled"

    # Some of the extension is there, so all of it was meant to be.
    if _errors or len(missing) < len(MODULES):
        why = "; ".join(f"{m} does not load ({_errors[m]})" if m in _errors
                        else f"{m} is not built" for m in missing)
        log.warning("hot paths: part of the extension is missing and its pure "
                    "twins stand in: %s; %s", why, _FIX)
    else:
        log.info("hot paths: pure Python, the extension is not built; %s", _FIX)
    return "pure"


def __getattr__(name: str):
    if name == "BUILD":
        value = globals()["BUILD"] = _build()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
