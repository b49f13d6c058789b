"""The settings of one profiling run, shared by the command line and the library."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loadgen.errors import OptionError

DEFAULT_URL = "localhost:8001"
REDACTED = "<redacted>"


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


def parse_shard(text: str | None) -> tuple[int, int]:
    """Parse `--shard i/K` (0 <= i < K); no shard is 0/1."""
    if text is None:
        return 0, 1
    index, sep, count = text.partition("/")
    try:
        i, k = int(index), int(count)
    except ValueError:
        raise OptionError(f"--shard {text!r}: expected i/K, e.g. 0/4") from None
    if not sep or not 0 <= i < k:
        raise OptionError(f"--shard {text!r}: expected i/K with 0 <= i < K")
    return i, k


def parse_header(text: str) -> tuple[str, str]:
    """Parse `-H 'Name: value'` (sent as gRPC metadata)."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise OptionError("-H: expected 'Name: value'")  # the value may be a secret: never echo it
    return name.strip(), value.strip()


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
    workers: int = 1
    request_timeout: float | None = None
    max_error_rate: float = 0.1
    ssl_grpc_use_ssl: bool = False
    ssl_grpc_root_certifications_file: str | None = None
    ssl_grpc_private_key_file: str | None = None
    ssl_grpc_certificate_chain_file: str | None = None
    header: Mapping[str, str] = field(default_factory=dict)
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
    shard: str | None = None  # "i/K": this run's part of a load split over K processes or machines
    start_at: float | None = None  # UNIX time at which every shard starts, so that their windows align
    hdr_log: str | None = None  # directory for this run's window log, merged later by `loadgen merge`

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
        object.__setattr__(self, "header", {k.strip().lower(): v.strip() for k, v in dict(self.header).items()})
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
            (self.workers >= 1, f"--workers {self.workers}: must be at least 1"),
            (
                self.request_timeout is None or self.request_timeout > 0,
                f"--request-timeout {self.request_timeout}: must be above 0 ms",
            ),
            (0 <= self.max_error_rate <= 1, f"--max-error-rate {self.max_error_rate}: must be between 0 and 1"),
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
            (
                self.shard_count == 1 or self.hdr_log is not None,
                "--shard needs --hdr-log DIR: each shard logs its windows there for `loadgen merge`",
            ),
            (
                self.hdr_log is None
                or (self.measurement_mode == "time_windows" and not self.request_count and not self.binary_search),
                "--hdr-log logs time windows of a fixed sweep: not with count windows, --request-count or "
                "--binary-search",
            ),
            (self.shard_count == 1 or self.workers == 1, "--shard and --workers cannot be combined"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(message)
        if self.request_intervals is not None:
            read_intervals(self.request_intervals)
        for option in ("root_certifications", "private_key", "certificate_chain"):
            path = getattr(self, f"ssl_grpc_{option}_file")
            flag = f"--ssl-grpc-{option.replace('_', '-')}-file"
            if path is not None and not self.ssl_grpc_use_ssl:
                raise OptionError(f"{flag} needs --ssl-grpc-use-ssl")
            if path is not None and not Path(path).is_file():
                raise OptionError(f"{flag} {path}: no such file")
            what, marker = (
                ("private key", b"PRIVATE KEY-----")
                if option == "private_key"
                else ("certificate", b"-----BEGIN CERTIFICATE-----")
            )
            if path is not None and marker not in Path(path).read_bytes():
                raise OptionError(f"{flag} {path}: not a PEM {what}")
        if (self.ssl_grpc_private_key_file is None) != (self.ssl_grpc_certificate_chain_file is None):
            raise OptionError(
                "--ssl-grpc-private-key-file and --ssl-grpc-certificate-chain-file go together (the client identity)"
            )

    @property
    def shard_index(self) -> int:
        return parse_shard(self.shard)[0]

    @property
    def shard_count(self) -> int:
        return parse_shard(self.shard)[1]

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
        recorded["header"] = {name: REDACTED for name in self.header}  # values are often credentials
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
