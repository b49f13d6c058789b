"""The settings of one profiling run, shared by the command line and the library."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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


def _levels(value: str | int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(value, str):
        return parse_range(value)
    if isinstance(value, int):
        return parse_range(str(value))
    levels = tuple(value)
    if not levels or any(not isinstance(c, int) or c < 1 for c in levels):
        raise OptionError(f"concurrency {value!r}: expected whole numbers of at least 1")
    return levels


@dataclass(frozen=True)
class Settings:
    """What to profile and how; every field is a CLI flag (long name in snake case)."""

    model_name: str | None = None
    model_version: str = ""
    url: str = DEFAULT_URL
    concurrency_range: str | int | Sequence[int] = 1
    input_data: str = "random"
    shape: Mapping[str, Sequence[int]] = field(default_factory=dict)
    batch_size: int = 1
    measurement_interval: int = 5000
    stability_percentage: float = 10.0
    max_trials: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "concurrency_range", _levels(self.concurrency_range))
        object.__setattr__(self, "shape", {k: tuple(v) for k, v in dict(self.shape).items()})
        if self.batch_size < 1:
            raise OptionError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.measurement_interval < 1:
            raise OptionError(f"--measurement-interval {self.measurement_interval}: must be at least 1 ms")
        if self.stability_percentage <= 0:
            raise OptionError(f"--stability-percentage {self.stability_percentage}: must be above 0")
        if self.max_trials < 3:
            raise OptionError(f"--max-trials {self.max_trials}: must be at least 3 (stability needs 3 windows)")

    @property
    def levels(self) -> tuple[int, ...]:
        """The concurrency levels of the sweep, in order."""
        levels = self.concurrency_range
        assert isinstance(levels, tuple)
        return levels

    def to_dict(self) -> dict[str, object]:
        """The settings as recorded in a result."""
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "url": self.url,
            "concurrency_range": list(self.levels),
            "input_data": self.input_data,
            "shape": {k: list(v) for k, v in self.shape.items()},
            "batch_size": self.batch_size,
            "measurement_interval": self.measurement_interval,
            "stability_percentage": self.stability_percentage,
            "max_trials": self.max_trials,
        }
