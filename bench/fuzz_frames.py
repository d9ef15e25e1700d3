"""An atheris (libFuzzer) target for the ZeroMQ frame decoder.

Each input is cut into frames at every 0xFF 0x00 pair; the first frame goes
to the header decoder, both twins (pure and compiled, when built), which
must agree and may raise only ValueError; the second is parsed as the
request message of the call the header names, which may raise only
protobuf's DecodeError. Anything else is a crash libFuzzer reports.

Run: pip install atheris; python -m nubis.bench.fuzz_frames -atheris_runs=N
(other libFuzzer flags pass through). Without atheris it says so and exits
with status 0.
"""

import sys

from google.protobuf.message import DecodeError

from nubis import _hot, abi
from nubis.transport import frames

_compiled = _hot.built("frames")
_requests = {m.id: m.request for m in abi.METHODS}


def _decode(decoder, frame: bytes):
    try:
        return decoder(frame)
    except ValueError:
        return None


def check(data: bytes) -> None:
    """One fuzz input; raises on a finding."""
    parts = data.split(b"\xff\x00")
    header = parts[0]
    pure = _decode(frames.pure_decode_header, header)
    if _compiled is not None:
        other = _decode(_compiled.decode_header, header)
        if other != pure:
            raise AssertionError(f"twins disagree on {header!r}: {pure} {other}")
    if pure is None or len(parts) < 2:
        return
    version, kind, code, rid = pure
    if frames.encode_header(kind, code, rid)[1:] != header[1:]:
        raise AssertionError(f"header {header!r} does not round-trip")
    request = _requests.get(code)
    if request is not None:
        try:
            request.FromString(parts[1])
        except DecodeError:
            pass


def main(argv=None) -> int:
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 0
    atheris.Setup(list(argv or sys.argv), check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
