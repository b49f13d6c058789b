from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from loadgen.errors import OptionError
from loadgen.plan import plan
from loadgen.settings import Settings, make_settings, parse_range, parse_rate_range, parse_shape


def _levels(settings: Settings) -> tuple[float, ...]:
    """The sweep's loads: concurrencies or request rates."""
    return tuple(load.concurrency or load.rate or 0 for load in plan(settings).loads)


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
    assert _levels(Settings(concurrency_range="1:3")) == (1, 2, 3)
    assert _levels(Settings(concurrency_range=5)) == (5,)
    assert _levels(Settings(concurrency_range=[1, 4])) == (1, 4)
    with pytest.raises(OptionError):
        Settings(concurrency_range=[0])


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"measurement_interval": 0}, {"stability_percentage": 0}, {"max_trials": 2}],
)
def test_settings_reject_bad_values(options: dict[str, int]) -> None:
    with pytest.raises(OptionError):
        Settings(**options)  # type: ignore[arg-type]


def test_request_rate_ranges_are_floats() -> None:
    assert parse_rate_range("10") == (10.0,)
    assert parse_rate_range("10:20:5") == (10.0, 15.0, 20.0)
    assert parse_rate_range("0.5:1.5:0.5") == (0.5, 1.0, 1.5)
    for bad in ("0", "-3", "20:10", "a:b", "1:2:0", "nan", "inf"):
        with pytest.raises(OptionError, match="--request-rate-range"):
            parse_rate_range(bad)


def test_one_load_mode_at_a_time() -> None:
    assert Settings().mode == "concurrency" and _levels(Settings()) == (1,)
    assert _levels(Settings(request_rate_range="5:10:5")) == (5.0, 10.0)
    with pytest.raises(OptionError, match="cannot be combined"):
        Settings(concurrency_range=2, request_rate_range=10)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"binary_search": True, "concurrency_range": "1:8"}, "needs --latency-threshold"),
        ({"request_distribution": "uniform"}, "constant or poisson"),
        ({"measurement_mode": "windows"}, "time_windows or count_windows"),
        ({"percentile": 100}, "between 1 and 99"),
        ({"latency_threshold": -1}, "must not be negative"),
        ({"max_in_flight": 0}, "at least 1"),
        ({"request_intervals": "/nonexistent/gaps.txt"}, "cannot read"),
    ],
)
def test_bad_load_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        plan(Settings(**options))  # type: ignore[arg-type]


def test_options_take_the_short_aliases_in_one_place() -> None:
    settings = make_settings(model="m", concurrency="1:3")
    assert settings.model_name == "m" and _levels(settings) == (1, 2, 3)
    assert _levels(make_settings(request_rate=[5, 10])) == (5.0, 10.0)
    with pytest.raises(OptionError, match="same option"):
        make_settings(concurrency=2, concurrency_range=3)
    with pytest.raises(OptionError, match="unknown option 'concurency'"):
        make_settings(concurency=2)


def test_options_over_base_settings_replace_its_load_mode() -> None:
    base = Settings(url="h:1", concurrency_range="1:4", measurement_interval=300)
    rates = make_settings(base, request_rate="10:20:10")
    assert (rates.url, rates.mode, _levels(rates), rates.measurement_interval) == (
        "h:1",
        "request_rate",
        (10.0, 20.0),
        300,
    )
    assert _levels(make_settings(base, batch_size=2)) == (1, 2, 3, 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency_range": 2.5}, "--concurrency-range 2.5: expected a whole number"),
        ({"concurrency_range": []}, "--concurrency-range"),
        ({"measurement_interval": "500"}, "--measurement-interval '500': expected a whole number"),
        ({"url": 9601}, "--url 9601: expected text"),
        ({"stability_percentage": "10"}, "expected a number"),
        ({"streaming": "yes"}, "expected True or False"),
        ({"shape": {"IN": [16.0]}}, "expected a whole number"),
        ({"shape": {"IN": "16"}}, "expected a list of whole numbers"),
        ({"input_data": 3}, "expected text"),
        ({"header": {"bad name": "v"}}, "a header name is letters"),
        ({"header": {"x-key": "a\nb"}}, "printable ASCII"),
        ({"header": ["no colon"]}, "expected 'Name: value'"),
    ],
)
def test_library_arguments_of_the_wrong_type_are_one_line_option_errors(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(OptionError, match=message):
        Settings(**options)  # type: ignore[arg-type]


def test_library_arguments_take_what_the_command_line_takes() -> None:
    settings = Settings(
        concurrency_range=np.int64(3),
        measurement_interval=np.int32(400),
        shape="IN:16,2",
        header="X-Key: v",
        input_data=Path("mug.jpg"),
        workers="auto",
        protocol="HTTP",
        bls_composing_models="a:3, b",
        input_range="IN:0:9",
    )
    assert settings.concurrency_range == (3,) and type(settings.measurement_interval) is int
    assert settings.shape == {"IN": (16, 2)} and settings.header == {"x-key": "v"}
    assert settings.input_data == "mug.jpg" and settings.workers == (os.cpu_count() or 1)
    assert settings.protocol == "http" and settings.url.endswith(":8000")
    assert settings.bls_composing_models == ("a:3", "b") and settings.input_range == {"IN": (0.0, 9.0)}
    assert Settings(input_data=[Path("a.json"), "b.json"]).input_data == ("a.json", "b.json")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"measurement_interval": 10**12}, "between 1 ms and 3600000 ms"),
        ({"concurrency_range": "1:100000000"}, "more than 10000 levels"),
        ({"request_rate_range": "1:1000:0.0001"}, "more than 10000 levels"),
        ({"concurrency_range": 10**8}, "more than one process holds"),
        ({"concurrency_range": 1, "workers": 2}, "more worker processes than requests in flight"),
        ({"workers": 500}, "at most 4 per core"),
    ],
)
def test_loads_one_process_cannot_hold_are_refused_up_front(options: dict[str, object], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        plan(Settings(**options))  # type: ignore[arg-type]
