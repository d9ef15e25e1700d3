"""A log-linear latency histogram cheap enough for every cloud call.

Recording must cost far less than the microsecond calls it measures; the
HdrHistogram package costs about 1.5 us per value in pure Python, so the
kernel keeps its own fixed layout and reports percentiles from it. A value
falls in bucket (e, m): e is the power of two below it and m the next
SUB_BITS bits, giving a relative error under 1/2**SUB_BITS (about 3%).
Values are integers (nanoseconds); zero and negatives count as zero.

This is the pure twin of `ext/histogram.pyx`, which keeps the same layout in
a C array; `Histogram` is the compiled class where it is built, and
`PureHistogram` is always this one.
"""

from nubis import _hot

SUB_BITS = 5
SUB = 1 << SUB_BITS
MAX_EXP = 48          # values up to 2**48 ns, about 3 days
SIZE = (MAX_EXP + 1) * SUB


class Histogram:
    __slots__ = ("counts", "total", "max")

    def __init__(self):
        self.counts = [0] * SIZE
        self.total = 0
        self.max = 0

    def record(self, value: int) -> None:
        if value < SUB:
            index = value if value > 0 else 0
        else:
            e = value.bit_length() - SUB_BITS
            if e > MAX_EXP:
                e, value = MAX_EXP, (1 << (MAX_EXP + SUB_BITS)) - 1
            index = (e << SUB_BITS) | ((value >> (e - 1)) & (SUB - 1))
        self.counts[index] += 1
        self.total += 1
        if value > self.max:
            self.max = value

    def percentile(self, p: float) -> int:
        """Upper bound of the bucket holding the p-th percentile value."""
        if not self.total:
            return 0
        rank = max(1, int(p / 100.0 * self.total + 0.5))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return min(_upper(index), self.max)
        return self.max

    def reset(self) -> None:
        self.counts = [0] * SIZE
        self.total = 0
        self.max = 0


def _upper(index: int) -> int:
    e, m = divmod(index, SUB)
    if e == 0:
        return m
    return ((SUB | m) << (e - 1)) + (1 << (e - 1)) - 1


PureHistogram = Histogram
_ext = _hot.compiled("histogram")
if _ext is not None:
    Histogram = _ext.Histogram
