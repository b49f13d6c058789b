"""Every option is declared once, with its flags, help and checks; the parsers and the README derive from it."""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import fields, replace

import pytest

from loadgen.cli import (
    COMMAND_LINE,
    MERGE_OPTIONS,
    REFUSED,
    TUNE_OPTIONS,
    Reports,
    merge_parser,
    profile_parser,
    tune_parser,
)
from loadgen.errors import OptionError
from loadgen.options import declared, flags, meta
from loadgen.settings import GROUPS, Connection, Data, Settings, validate
from loadgen.tune import TuneSettings
from tests.perf_analyzer_options import options_table, read_options, readme_options_table

# numbers any value of which is fine, each with why (every other number has a check)
UNCHECKED = {
    "start_at": "any UNIX time (one in the past starts at once)",
    "deprecated_concurrency": "checked as the --concurrency-range it stands for",
    "deprecated_max_concurrency": "checked as the --concurrency-range it stands for",
    "verbose": "a count of -v",
}


def _flags(groups: list[type], only: tuple[str, ...] = ()) -> Counter[str]:
    """How many declarations name each flag."""
    return Counter(flag for _, item in declared(groups) if not only or item.name in only for flag in flags(item))


COMMAND = [group for _, group in COMMAND_LINE]


@pytest.mark.parametrize(
    ("parser", "counts"),
    [
        (profile_parser(), _flags(COMMAND)),
        (profile_parser(perf_analyzer=True), _flags(COMMAND)),
        (
            tune_parser(),
            _flags([Settings], TUNE_OPTIONS) + _flags([TuneSettings]) + _flags([Reports], ("json", "html")),
        ),
        (merge_parser(), _flags([Reports], MERGE_OPTIONS)),
    ],
)
def test_every_flag_of_a_command_is_declared_once(parser: argparse.ArgumentParser, counts: Counter[str]) -> None:
    taken = {flag for action in parser._actions for flag in action.option_strings}
    assert [flag for flag in taken if counts[flag] > 1] == []
    negated = {f"--no-{flag[2:]}" for _, item in declared(COMMAND) if meta(item).negatable for flag in flags(item)}
    own = {"-h", "--help", *REFUSED, *negated}
    assert taken - own == set(counts), taken - own ^ set(counts)


def test_every_setting_is_one_declared_field_of_one_group() -> None:
    names = [item.name for _, group in GROUPS for item in fields(group)]
    assert sorted(names) == sorted(item.name for item in fields(Settings))
    assert len(names) == len(set(names))
    assert set(TUNE_OPTIONS) <= set(names) and all("option" in item.metadata for item in fields(Settings))


def test_every_option_has_help_and_a_check_where_its_type_needs_one() -> None:
    groups = [group for _, group in COMMAND_LINE] + [TuneSettings]
    for _, item in declared(groups):
        info = meta(item)
        assert info.help.strip(), item.name
        number = str(item.type).removesuffix(" | None") in ("int", "float")
        checked = info.all_checks or info.convert or info.choices or info.parse
        assert not number or checked or item.name in UNCHECKED, f"{item.name}: a number without a check"


def test_perf_analyzer_names_are_declared_right() -> None:
    theirs = {option.flag for option in read_options()}
    for _, item in declared([group for _, group in COMMAND_LINE]):
        shared = bool(theirs & set(flags(item)))
        assert shared == meta(item).perf_analyzer, f"{item.name}: perf_analyzer={meta(item).perf_analyzer}"


def test_the_readme_holds_the_current_option_table() -> None:
    assert readme_options_table() == options_table(), "regenerate it: python -m tests.perf_analyzer_options --table"


def test_a_group_is_one_stage_of_the_settings_and_validates_itself() -> None:
    settings = Settings(url="h:1", batch_size=4)
    connection = settings.group(Connection)
    assert (connection.url, connection.address) == ("h:1", "h:1") and settings.group(Data).batch_size == 4
    with pytest.raises(OptionError, match="--batch-size 0: must be at least 1"):
        validate(replace(settings.group(Data), batch_size=0), Data)
    with pytest.raises(OptionError, match="--ssl-grpc-use-ssl applies to -i grpc"):
        validate(replace(connection, protocol="http", ssl_grpc_use_ssl=True), Connection)
