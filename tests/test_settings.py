from __future__ import annotations

import pytest

from loadgen.errors import OptionError
from loadgen.settings import Settings, parse_range, parse_shape


@pytest.mark.parametrize(
    ("text", "levels"),
    [("4", (4,)), ("1:4", (1, 2, 3, 4)), ("1:8:3", (1, 4, 7)), ("2:2", (2,))],
)
def test_parse_range_follows_perf_analyzer(text: str, levels: tuple[int, ...]) -> None:
    assert parse_range(text) == levels


@pytest.mark.parametrize("text", ["8:1", "0", "-1", "a", "1:2:0", "1:2:3:4", ""])
def test_parse_range_rejects_nonsense(text: str) -> None:
    with pytest.raises(OptionError, match="--concurrency-range"):
        parse_range(text)


def test_parse_shape() -> None:
    assert parse_shape("INPUT:1,3,224") == ("INPUT", (1, 3, 224))
    assert parse_shape("a:b:4") == ("a:b", (4,))
    for bad in ("INPUT", "INPUT:", ":3", "INPUT:x", "INPUT:-2"):
        with pytest.raises(OptionError, match="--shape"):
            parse_shape(bad)


def test_settings_accept_string_int_and_list_levels() -> None:
    assert Settings(concurrency_range="1:3").levels == (1, 2, 3)
    assert Settings(concurrency_range=5).levels == (5,)
    assert Settings(concurrency_range=[1, 4]).levels == (1, 4)
    with pytest.raises(OptionError):
        Settings(concurrency_range=[0])


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"measurement_interval": 0}, {"stability_percentage": 0}, {"max_trials": 2}],
)
def test_settings_reject_bad_values(options: dict[str, int]) -> None:
    with pytest.raises(OptionError):
        Settings(**options)  # type: ignore[arg-type]
