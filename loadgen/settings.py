"""The settings of one profiling run, shared by the command line and the library."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loadgen.errors import OptionError

DEFAULT_URL = "localhost:8001"


def parse_range(text: str, option: str = "--concurrency-range") -> tuple[int, ...]:
    """Parse perf_analyzer's `START[:END[:STEP]]` into the levels it names."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 3:
        raise OptionError(f"{option} {text!r}: expected START[:END[:STEP]]")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise OptionError(f"{option} {text!r}: expected whole numbers as START[:END[:STEP]]") from None
    start = numbers[0]
    end = numbers[1] if len(numbers) > 1 else start
    step = numbers[2] if len(numbers) > 2 else 1
    if start < 1 or step < 1:
        raise OptionError(f"{option} {text!r}: START and STEP must be at least 1")
    if end < start:
        raise OptionError(f"{option} {text!r}: END must not be below START")
    return tuple(range(start, end + 1, step))


def parse_rate_range(text: str) -> tuple[float, ...]:
    """Parse `--request-rate-range START[:END[:STEP]]` (requests per second, floats)."""
    option = "--request-rate-range"
    parts = text.split(":")
    if not 1 <= len(parts) <= 3:
        raise OptionError(f"{option} {text!r}: expected START[:END[:STEP]]")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        raise OptionError(f"{option} {text!r}: expected numbers as START[:END[:STEP]]") from None
    start = numbers[0]
    end = numbers[1] if len(numbers) > 1 else start
    step = numbers[2] if len(numbers) > 2 else 1.0
    if not all(math.isfinite(n) for n in numbers) or start <= 0 or step <= 0:
        raise OptionError(f"{option} {text!r}: START and STEP must be above 0")
    if end < start:
        raise OptionError(f"{option} {text!r}: END must not be below START")
    count = math.floor((end - start) / step + 1e-9) + 1
    return tuple(round(start + i * step, 9) for i in range(count))


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse perf_analyzer's `--shape NAME:D1[,D2...]`."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name or not dims:
        raise OptionError(f"--shape {text!r}: expected NAME:D1[,D2,...]")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise OptionError(f"--shape {text!r}: dimensions must be whole numbers") from None
    if any(d < 0 for d in shape):
        raise OptionError(f"--shape {text!r}: dimensions must not be negative")
    return name, shape


def _rates(value: str | float | Sequence[float]) -> tuple[float, ...]:
    if isinstance(value, str):
        return parse_rate_range(value)
    if isinstance(value, (int, float)):
        return parse_rate_range(str(value))
    rates = tuple(float(v) for v in value)
    if not rates or any(not math.isfinite(r) or r <= 0 for r in rates):
        raise OptionError(f"request rate {value!r}: expected numbers above 0")
    return rates


def read_intervals(path: str) -> tuple[int, ...]:
    """Gaps between requests in microseconds, one per line, from a `--request-intervals` file."""
    try:
        lines = Path(path).read_text().split()
    except OSError as error:
        raise OptionError(f"--request-intervals {path}: cannot read: {error.strerror}") from None
    gaps = []
    for number, line in enumerate(lines, 1):
        try:
            gap = int(line)
        except ValueError:
            raise OptionError(
                f"--request-intervals {path}: entry {number} {line!r} is not whole microseconds"
            ) from None
        if gap < 0:
            raise OptionError(f"--request-intervals {path}: entry {number} is negative")
        gaps.append(gap)
    if not gaps or not any(gaps):
        raise OptionError(f"--request-intervals {path}: needs at least one gap above 0")
    return tuple(gaps)


def _levels(value: str | int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(value, str):
        return parse_range(value)
    if isinstance(value, int):
        return parse_range(str(value))
    levels = tuple(value)
    if not levels or any(not isinstance(c, int) or c < 1 for c in levels):
        raise OptionError(f"concurrency {value!r}: expected whole numbers of at least 1")
    return levels


MODES = ("concurrency", "request_rate", "request_intervals")
LOAD_FIELDS = ("concurrency_range", "request_rate_range", "request_intervals")
# Short names the library and the command line accept for these fields (`--concurrency` is `--concurrency-range`).
ALIASES = {"model": "model_name", "concurrency": "concurrency_range", "request_rate": "request_rate_range"}
DISTRIBUTIONS = ("constant", "poisson")
MEASUREMENT_MODES = ("time_windows", "count_windows")


@dataclass(frozen=True)
class Settings:
    """What to profile and how; every field is a CLI flag (long name in snake case)."""

    model_name: str | None = None
    model_version: str = ""
    url: str = DEFAULT_URL
    concurrency_range: str | int | Sequence[int] | None = None
    request_rate_range: str | float | Sequence[float] | None = None
    request_distribution: str = "constant"
    request_intervals: str | None = None
    max_in_flight: int = 1024
    input_data: str = "random"
    shape: Mapping[str, Sequence[int]] = field(default_factory=dict)
    batch_size: int = 1
    measurement_interval: int = 5000
    measurement_mode: str = "time_windows"
    measurement_request_count: int = 50
    request_count: int = 0
    warmup_request_count: int = 0
    stability_percentage: float = 10.0
    max_trials: int = 10
    percentile: int | None = None
    latency_threshold: float | None = None
    binary_search: bool = False

    def __post_init__(self) -> None:
        given = [
            name
            for name, value in (
                ("--concurrency-range", self.concurrency_range),
                ("--request-rate-range", self.request_rate_range),
                ("--request-intervals", self.request_intervals),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise OptionError(f"{' and '.join(given)} cannot be combined: choose one load mode")
        if self.request_rate_range is not None:
            object.__setattr__(self, "request_rate_range", _rates(self.request_rate_range))
        elif self.request_intervals is None:
            object.__setattr__(self, "concurrency_range", _levels(self.concurrency_range or 1))
        object.__setattr__(self, "shape", {k: tuple(v) for k, v in dict(self.shape).items()})
        self._check()

    def _check(self) -> None:
        checks = [
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: must be at least 1"),
            (
                self.measurement_interval >= 1,
                f"--measurement-interval {self.measurement_interval}: must be at least 1 ms",
            ),
            (self.stability_percentage > 0, f"--stability-percentage {self.stability_percentage}: must be above 0"),
            (self.max_trials >= 3, f"--max-trials {self.max_trials}: must be at least 3 (stability needs 3 windows)"),
            (self.max_in_flight >= 1, f"--max-in-flight {self.max_in_flight}: must be at least 1"),
            (
                self.request_distribution in DISTRIBUTIONS,
                f"--request-distribution {self.request_distribution!r}: choose constant or poisson",
            ),
            (
                self.measurement_mode in MEASUREMENT_MODES,
                f"--measurement-mode {self.measurement_mode!r}: choose time_windows or count_windows",
            ),
            (
                self.measurement_request_count >= 1,
                f"--measurement-request-count {self.measurement_request_count}: must be at least 1",
            ),
            (self.request_count >= 0, f"--request-count {self.request_count}: must not be negative"),
            (
                self.warmup_request_count >= 0,
                f"--warmup-request-count {self.warmup_request_count}: must not be negative",
            ),
            (
                self.percentile is None or 1 <= self.percentile <= 99,
                f"--percentile {self.percentile}: must be between 1 and 99",
            ),
            (
                self.latency_threshold is None or self.latency_threshold > 0,
                f"--latency-threshold {self.latency_threshold}: must be above 0 ms",
            ),
            (
                not self.binary_search or self.latency_threshold is not None,
                "--binary-search needs --latency-threshold (the search finds the highest load under it)",
            ),
            (
                not self.binary_search or self.mode != "request_intervals",
                "--binary-search searches a --concurrency-range or --request-rate-range",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(message)
        if self.request_intervals is not None:
            read_intervals(self.request_intervals)

    @property
    def mode(self) -> str:
        """concurrency, request_rate or request_intervals."""
        if self.request_rate_range is not None:
            return "request_rate"
        if self.request_intervals is not None:
            return "request_intervals"
        return "concurrency"

    @property
    def levels(self) -> tuple[float, ...]:
        """The load levels of the sweep, in order: concurrencies or request rates (one level for intervals)."""
        if self.mode == "request_intervals":
            return (0.0,)
        levels = self.request_rate_range if self.mode == "request_rate" else self.concurrency_range
        assert isinstance(levels, tuple)
        return levels

    def to_dict(self) -> dict[str, object]:
        """The settings as recorded in a result."""
        recorded = {name: getattr(self, name) for name in self.__dataclass_fields__}
        recorded["shape"] = {k: list(v) for k, v in self.shape.items()}
        for name in ("concurrency_range", "request_rate_range"):
            if isinstance(recorded[name], tuple):
                recorded[name] = list(recorded[name])
        return recorded


def make_settings(base: Settings | None = None, **options: Any) -> Settings:
    """Settings from keyword options (field names or their `ALIASES`), over `base` when given.

    Naming one load mode replaces the base's: `make_settings(base, request_rate=10)` sweeps rates.
    """
    given: dict[str, Any] = {}
    for key, value in options.items():
        name = ALIASES.get(key, key)
        if name not in Settings.__dataclass_fields__:
            raise OptionError(f"unknown option {key!r}; options are the fields of loadgen.Settings")
        if name in given:
            raise OptionError(f"{key!r} and {name!r} are the same option: give one")
        given[name] = value
    if base is None:
        return Settings(**given)
    if any(name in given for name in LOAD_FIELDS):
        given = {name: None for name in LOAD_FIELDS} | given
    return replace(base, **given)
