"""The command line: its flags are the library's settings, so the two cannot drift."""

from __future__ import annotations

from dataclasses import fields

from loadgen.cli import profile_parser, settings_from
from loadgen.settings import ALIASES, Settings


def test_every_setting_is_a_flag_with_the_same_default() -> None:
    parser = profile_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    defaults = parser.parse_args([])
    for field in fields(Settings):
        assert f"--{field.name.replace('_', '-')}" in flags
        if field.name not in ("shape", "concurrency_range"):  # a list of texts; None means the default mode
            assert getattr(defaults, field.name) == getattr(Settings(), field.name), field.name
    for alias in ALIASES:
        assert f"--{alias.replace('_', '-')}" in flags


def test_aliases_on_the_command_line() -> None:
    args = profile_parser().parse_args(["--model", "m", "--request-rate", "5:10:5", "--shape", "INPUT:3,4"])
    settings = settings_from(args)
    assert (settings.model_name, settings.mode, settings.levels) == ("m", "request_rate", (5.0, 10.0))
    assert settings.shape == {"INPUT": (3, 4)}
