"""How sure each figure is: an interval on a level's throughput (from its windows), bounds on its latency
percentiles (from its sample count, as MLPerf LoadGen's early stopping), and the tests that say whether two runs
differ (`loadgen compare`).

The percentile bounds are order statistics. Of n latencies drawn independently from one distribution, the number
below its p-quantile q is Binomial(n, p); so the k-th smallest is at or above q unless k or more fall below it:
P(X(k) >= q) = P(Binomial(n, p) <= k - 1). The upper bound at confidence c is the smallest k for which that is at
least c. It exists only when even the largest latency will do, 1 - p^n >= c: p99 at 0.99 needs 459 samples (fewer,
and the level says how many it lacks instead of a bound). The lower bound mirrors it. HDR histograms hold latencies to
3 significant digits: a bound is read as the edge of its bucket that keeps it a bound (the highest value of the
bucket for an upper one, the lowest for a lower one). What it assumes: latencies independent and alike within the
level's windows (a level that drifts is unstable, and says so).

The binomial and Student t tails are regularized incomplete beta functions, evaluated with a continued fraction in
log space: no table, any sample count.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from hdrh.histogram import HdrHistogram

from loadgen.errors import LoadgenError
from loadgen.measurement import Window, new_histogram

REPORTED = (50, 90, 95, 99)  # the percentiles every level reports (with --percentile's)
HISTOGRAMS = ("latency_us", "service_latency_us", "first_response_latency_us")  # each with its percentiles' bounds
MAX_ENCODED = 1_000_000  # characters of an encoded histogram read back from a file (an encoded one is a few KB)
MAX_SAMPLES = 10**12  # latencies in one histogram read back (the binomial tail loses its precision far beyond)
_TINY = 1e-300
_EPSILON = 1e-15
_MAX_TERMS = 1_000_000


def _continued_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), for x < (a + 1) / (a + b + 2)."""

    def guarded(value: float) -> float:
        return value if abs(value) > _TINY else _TINY

    c, d = 1.0, 1 / guarded(1 - (a + b) * x / (a + 1))
    result = d
    for m in range(1, _MAX_TERMS):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1 / guarded(1 + even * d)
        c = guarded(1 + even / c)
        result *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 / guarded(1 + odd * d)
        c = guarded(1 + odd / c)
        result *= d * c
        if abs(d * c - 1) < _EPSILON:
            break
    return result


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for a, b > 0."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast on this side only
        return 1 - regularized_beta(1 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    return math.exp(log_front) * _continued_fraction(x, a, b) / a


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return regularized_beta(1 - p, n - k, k + 1)


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom (any df > 0, not only whole ones)."""
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2, 0.5)
    return 1 - tail if t > 0 else tail


@functools.lru_cache(maxsize=256)
def student_t_quantile(probability: float, df: float) -> float:
    """The t with P(T <= t) = `probability` (above one half), by bisection on the distribution function."""
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < probability:
        low, high = high, high * 2
    for _ in range(200):
        middle = (low + high) / 2
        if student_t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * high:
            break
    return high


def _smallest(holds: Callable[[int], bool], low: int, high: int, guess: int) -> int:
    """The smallest k in [low, high] for which `holds` (false, then true, as k grows; true at `high`), searched
    outward from `guess` and then bisected."""
    guess = min(max(guess, low), high)
    step = 1
    if holds(guess):
        high = guess
        while high - step >= low and holds(high - step):
            high, step = high - step, step * 2
        low = max(high - step, low)
        if holds(low):
            return low
    else:
        low = guess
        while low + step < high and not holds(low + step):
            low, step = low + step, step * 2
        high = min(low + step, high)
    while high - low > 1:  # holds(high), not holds(low)
        middle = (low + high) // 2
        if holds(middle):
            high = middle
        else:
            low = middle
    return high


def _normal_rank(n: int, p: float, confidence: float, above: bool) -> int:
    """Where the binomial search starts: the normal approximation of the count under the p-quantile that is
    exceeded (`above`), or reached, with chance `confidence`."""
    z = statistics.NormalDist().inv_cdf(confidence)
    return round(n * p + (z if above else -z) * math.sqrt(n * p * (1 - p)))


def samples_needed(p: float, confidence: float) -> int:
    """The fewest samples for which an upper bound on the p-quantile at `confidence` exists: 1 - p^n >= c."""
    n = max(1, math.ceil(math.log1p(-confidence) / math.log(p)))
    while n > 1 and 1 - p ** (n - 1) >= confidence:  # (the closed form, corrected for rounding)
        n -= 1
    while 1 - p**n < confidence:
        n += 1
    return n


def upper_rank(n: int, p: float, confidence: float) -> int | None:
    """The smallest rank k (1-based) whose sample is at or above the p-quantile with at least `confidence`:
    P(Binomial(n, p) <= k - 1) >= c; None when no rank of n samples will do."""
    if n < 1 or 1 - p**n < confidence:
        return None
    guess = _normal_rank(n, p, confidence, above=True) + 1
    return _smallest(lambda k: binomial_cdf(k - 1, n, p) >= confidence, 1, n, guess)


def lower_rank(n: int, p: float, confidence: float) -> int | None:
    """The largest rank k (1-based) whose sample is at or below the p-quantile with at least `confidence`:
    P(Binomial(n, p) >= k) >= c; None when no rank of n samples will do."""
    if n < 1 or binomial_cdf(0, n, p) > 1 - confidence:
        return None
    guess = _normal_rank(n, p, confidence, above=False) + 1
    return _smallest(lambda k: binomial_cdf(k - 1, n, p) > 1 - confidence, 1, n + 1, guess) - 1


def value_at_rank(histogram: HdrHistogram, rank: int, upper: bool) -> int:
    """The rank-th smallest value (1-based) a histogram holds: its bucket's highest value for an upper bound, its
    lowest for a lower one (numpy over the counts: the library walks them in Python)."""
    counts = np.cumsum(np.ctypeslib.as_array(histogram.counts), dtype=np.int64)
    index = int(np.searchsorted(counts, rank, side="left"))
    value = histogram.get_value_from_index(index)
    return int(histogram.get_highest_equivalent_value(value) if upper else histogram.get_lowest_equivalent_value(value))


@dataclass(frozen=True)
class PercentileBound:
    """How sure a percentile is, from its sample count: bounds that each hold with the level's confidence (one-sided:
    the true percentile is at or under `upper_bound`, and at or over `lower_bound`)."""

    samples: int
    samples_needed: int  # the fewest samples for which an upper bound exists at the confidence
    upper_bound: int | None  # None: too few samples (MLPerf's early stopping refuses the tail)
    lower_bound: int | None = None

    @property
    def enough(self) -> bool:
        """Whether the samples bound the percentile from above at the confidence."""
        return self.upper_bound is not None


def percentile_key(percentile: float) -> str:
    """A percentile's name in the figures: "p99", "p99.9"."""
    return f"p{percentile:g}"


def _ranks(n: int, percentile: float, confidence: float) -> tuple[int | None, int | None]:
    p = percentile / 100
    return lower_rank(n, p, confidence), upper_rank(n, p, confidence)


def percentile_bound(histogram: HdrHistogram, percentile: float, confidence: float) -> PercentileBound:
    """The bounds on one percentile of the histogram's values that hold at `confidence`."""
    n = int(histogram.get_total_count())
    low, high = _ranks(n, percentile, confidence)
    return PercentileBound(
        samples=n,
        samples_needed=samples_needed(percentile / 100, confidence),
        upper_bound=value_at_rank(histogram, high, upper=True) if high is not None else None,
        lower_bound=value_at_rank(histogram, low, upper=False) if low is not None else None,
    )


def interval(histogram: HdrHistogram, percentile: float, confidence: float) -> tuple[int | None, int | None]:
    """A two-sided interval on a percentile at `confidence` (each end one-sided at (1 + c) / 2); an end is None when
    the samples are too few for it."""
    low, high = _ranks(int(histogram.get_total_count()), percentile, (1 + confidence) / 2)
    return (
        value_at_rank(histogram, low, upper=False) if low is not None else None,
        value_at_rank(histogram, high, upper=True) if high is not None else None,
    )


def mean_interval(values: Sequence[float], confidence: float) -> tuple[float, float] | None:
    """A two-sided Student t interval on the mean of `values` (never negative, as a rate) at `confidence`; None for
    fewer than two values.

    It assumes the values independent and about normal: for a level's throughput, its windows' throughputs, each the
    mean of many requests."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = student_t_quantile((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return max(mean - half, 0.0), mean + half


def percentiles_of(percentile: int | None) -> tuple[float, ...]:
    """The percentiles a level reports: 50, 90, 95, 99, and --percentile's."""
    return tuple(sorted({*REPORTED, percentile})) if percentile is not None else REPORTED


@dataclass(frozen=True)
class LevelConfidence:
    """A level's figures with their confidence: the throughput's interval (from the windows) and, per histogram, each
    reported percentile's bounds (from its sample count); the histograms themselves, encoded, so that `loadgen compare`
    can test at another confidence."""

    level: float
    throughput: tuple[float, float] | None  # two-sided, from the windows; None for one window
    latency_us: dict[str, PercentileBound]
    service_latency_us: dict[str, PercentileBound] | None = None  # open loop
    first_response_latency_us: dict[str, PercentileBound] | None = None  # streaming
    histograms: dict[str, str] = field(default_factory=dict)  # HdrHistogram's compressed base64, by figure

    def too_few(self) -> dict[str, PercentileBound]:
        """The latency percentiles whose samples are too few for a bound at the confidence."""
        return {name: bound for name, bound in self.latency_us.items() if not bound.enough}


def _bounds(histogram: HdrHistogram, percentiles: Iterable[float], confidence: float) -> dict[str, PercentileBound]:
    return {percentile_key(p): percentile_bound(histogram, p, confidence) for p in percentiles}


def level_confidence(
    window: Window, throughputs: Sequence[float], percentile: int | None, confidence: float
) -> LevelConfidence:
    """A level's confidence figures from its merged window and its windows' throughputs."""
    reported = percentiles_of(percentile)
    histograms = {"latency_us": window.histogram}
    if window.service is not None:
        histograms["service_latency_us"] = window.service
    if window.first_response is not None:
        histograms["first_response_latency_us"] = window.first_response
    bounds = {name: _bounds(histogram, reported, confidence) for name, histogram in histograms.items()}
    return LevelConfidence(
        level=confidence,
        throughput=mean_interval(throughputs, confidence),
        latency_us=bounds["latency_us"],
        service_latency_us=bounds.get("service_latency_us"),
        first_response_latency_us=bounds.get("first_response_latency_us"),
        histograms={name: histogram.encode().decode("ascii") for name, histogram in histograms.items()},
    )


def decode_histogram(encoded: str) -> HdrHistogram:
    """A histogram from a result file's encoding (untrusted: a bad one is a LoadgenError)."""
    if not isinstance(encoded, str) or len(encoded) > MAX_ENCODED:
        raise LoadgenError("a histogram in the file is not an encoded HdrHistogram")
    histogram = new_histogram()
    try:
        histogram.decode_and_add(encoded.encode("ascii"))
    except Exception as error:  # the decoder's errors are many and undocumented (base64, zlib, its own)
        raise LoadgenError(f"a histogram in the file cannot be decoded: {error}") from None
    if not 0 <= histogram.get_total_count() <= MAX_SAMPLES:
        raise LoadgenError(f"a histogram in the file holds {histogram.get_total_count()} latencies: not a run's")
    return histogram


@dataclass(frozen=True)
class Sample:
    """What a test of means reads of a sample: its mean, standard deviation (n - 1) and size."""

    mean: float
    stddev: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Sample:
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def mean_shift(before: Sample, after: Sample, confidence: float) -> int | None:
    """+1 when `after`'s mean is higher than `before`'s at `confidence`, -1 when lower, 0 when neither (Welch's
    one-sided t test each way: a false alarm in either direction has a chance of at most 1 - c); None when a sample
    has fewer than two values."""
    if before.count < 2 or after.count < 2:
        return None
    before_var, after_var = before.stddev**2 / before.count, after.stddev**2 / after.count
    variance = before_var + after_var
    difference = after.mean - before.mean
    if not variance > 0:  # both samples constant: any difference is one
        return (difference > 0) - (difference < 0)
    df = variance**2 / (before_var**2 / (before.count - 1) + after_var**2 / (after.count - 1))
    t = difference / math.sqrt(variance)
    critical = student_t_quantile(confidence, df)
    return 1 if t > critical else -1 if t < -critical else 0


def percentile_shift(before: HdrHistogram, after: HdrHistogram, percentile: float, confidence: float) -> int | None:
    """+1 when `after`'s percentile is higher than `before`'s at `confidence`, -1 when lower, 0 when neither: the
    two-sided intervals at c do not overlap (each end one-sided at (1 + c) / 2, so a false alarm in either direction
    has a chance of at most 1 - c, by the union bound); None when neither is established and the samples are too few
    to test one of the two directions."""
    before_low, before_high = interval(before, percentile, confidence)
    after_low, after_high = interval(after, percentile, confidence)
    higher = None if after_low is None or before_high is None else after_low > before_high
    lower = None if after_high is None or before_low is None else after_high < before_low
    if higher:
        return 1
    if lower:
        return -1
    return None if higher is None or lower is None else 0
