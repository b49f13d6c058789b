"""Every option declared once, as a dataclass field with its metadata; the parsers and tables derive from it.

Own generator, not tyro / simple-parsing / pydantic-settings / Typer: none keeps perf_analyzer's getopt syntax
(unique-prefix abbreviations in one mode only, `-b 4`, repeatable and refused options, exit status 99) with our messages.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadgen.errors import OptionError

Message = Callable[[str, Any], str]  # (flag, value) -> what the user reads
UNSET: Any = object()  # no default of its own for the command line: the field's


@dataclass(frozen=True)
class Check:
    """One rule on one field's value (None, unset, is never checked): `holds`, else `message`."""

    holds: Callable[[Any], bool]
    message: Message


@dataclass(frozen=True)
class Option:
    """An option's metadata: its flags, help (with units), checks, and how each command line takes it."""

    help: str
    short: tuple[str, ...] = ()  # more flags before the long one: `-b`, or an alias such as `--concurrency`
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None
    checks: tuple[Check, ...] = ()
    convert: Callable[[Any], Any] | None = None  # the library's value into its normal form (after its type)
    parse: Callable[[str], Any] | None = None  # the command line's text into a value (default: from the type)
    repeat: bool = False  # repeatable: the command line gives a list
    negatable: bool = False  # a bool with --no-FLAG
    exclusive: str | None = None  # options of one mutually exclusive set
    cli_default: Any = UNSET  # the command line's default, when it is not the field's (e.g. None: "not given")
    perf_analyzer: bool = True  # perf_analyzer has this flag (False: loadgen's own)
    pa_default: Any = UNSET  # `loadgen perf-analyzer`'s default, when it differs (perf_analyzer's)
    pa_help: str | None = None  # `loadgen perf-analyzer`'s help, when its default differs
    pa_required: bool = False  # `loadgen perf-analyzer` needs it
    long: bool = True  # has the long flag of its name (perf_analyzer's one-letter shorthands have none)
    hidden: bool = False  # taken, not shown in --help (perf_analyzer's deprecated flags)
    action: Any = None  # argparse's action, when the type's is not it (`count`, or a class of its own)

    @property
    def all_checks(self) -> tuple[Check, ...]:
        """The declared checks, then the text choices: `FLAG 'x': choose a, b or c`."""
        if self.repeat or self.choices is None or not all(isinstance(choice, str) for choice in self.choices):
            return self.checks
        return (*self.checks, one_of(self.choices))


def option(default: Any = None, help: str = "", **metadata: Any) -> Any:
    """A settings field and its option metadata (`Option`'s fields), declared once."""
    meta = {"option": Option(help=help, **metadata)}
    if isinstance(default, (dict, list)):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


def flag(name: str) -> str:
    """The command-line flag of a settings field."""
    return "--" + name.replace("_", "-")


def meta(item: dataclasses.Field[Any]) -> Option:
    """The option metadata of a declared field."""
    return item.metadata["option"]


def flags(item: dataclasses.Field[Any]) -> list[str]:
    """Every flag of a field: the short ones and aliases, then its long flag."""
    return [*meta(item).short, flag(item.name)] if meta(item).long else list(meta(item).short)


def words(values: Sequence[object]) -> str:
    """`a, b or c`: the choices as a message names them."""
    texts = [str(value) for value in values]
    return ", ".join(texts[:-1]) + " or " + texts[-1] if len(texts) > 1 else texts[0]


def check(holds: Callable[[Any], bool], tail: str) -> Check:
    """A rule whose message is `FLAG VALUE: tail` (`tail` may name {value})."""
    return Check(holds, lambda shown, value: f"{shown} {value}: " + tail.format(value=value))


def at_least(low: float, note: str = "") -> Check:
    return check(lambda value: value >= low, f"must be at least {low:g}{note}")


def above(low: float, unit: str = "") -> Check:
    return check(lambda value: value > low, f"must be above {low:g}{unit}")


def between(low: float, high: float, note: str = "") -> Check:
    return check(lambda value: low <= value <= high, f"must be between {low:g} and {high:g}{note}")


NOT_NEGATIVE = check(lambda value: value >= 0, "must not be negative")


def one_of(values: Sequence[object]) -> Check:
    """The value is one of `values`: `FLAG 'x': choose a, b or c`."""
    return Check(lambda value: value in values, lambda shown, value: f"{shown} {value!r}: choose {words(values)}")


def check_fields(target: object, group: type) -> None:
    """Every declared check of the group's fields, on `target` (the group itself or the whole settings)."""
    for _, item in declared([group]):
        value = getattr(target, item.name)
        for rule in meta(item).all_checks:
            if value is not None and not rule.holds(value):
                raise OptionError(rule.message(flag(item.name), value))


def whole(text: str) -> int:
    """A whole number on the command line."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    """A number on the command line."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


_PARSERS: dict[str, Callable[[str], Any]] = {"int": whole, "float": number}


@dataclass(frozen=True)
class Variant:
    """Which command line a parser is: loadgen's own, perf_analyzer's, or a subcommand's (with its own defaults)."""

    perf_analyzer: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)  # documented differences of a subcommand
    helps: dict[str, str] = field(default_factory=dict)


def _arguments(item: dataclasses.Field[Any], variant: Variant) -> dict[str, Any]:
    """The `add_argument` keywords of one field on one command line."""
    info = meta(item)
    kind = str(item.type).removesuffix(" | None")
    default = item.default_factory() if callable(item.default_factory) else item.default
    if info.cli_default is not UNSET:
        default = info.cli_default
    if variant.perf_analyzer and info.pa_default is not UNSET:
        default = info.pa_default
    default = variant.defaults.get(item.name, default)
    helps = info.pa_help if variant.perf_analyzer and info.pa_help else info.help
    helps = argparse.SUPPRESS if info.hidden else variant.helps.get(item.name, helps)
    arguments: dict[str, Any] = {"dest": item.name, "help": helps, "default": default}
    if info.action is not None:
        return arguments | {"action": info.action}
    if kind == "bool":
        return arguments | {"action": argparse.BooleanOptionalAction if info.negatable else "store_true"}
    if variant.perf_analyzer and info.pa_required:
        arguments["required"] = True
    arguments["type"] = info.parse or _PARSERS.get(kind, str)
    if info.repeat:
        arguments["action"] = "append"
    return arguments | {"metavar": info.metavar, "choices": info.choices}


def add_options(
    parser: argparse.ArgumentParser, groups: Sequence[tuple[str, type]], variant: Variant, only: Sequence[str] = ()
) -> None:
    """Add the declared options of `groups` (title, dataclass) to `parser`: all, or those named in `only`."""
    sets: dict[str, Any] = {}
    for title, group in groups:
        items = [item for item in dataclasses.fields(group) if "option" in item.metadata]
        items = [item for item in items if not only or item.name in only]
        titled = {group.title: group for group in parser._action_groups}  # one group per title, however added
        target: Any = (titled.get(title) or parser.add_argument_group(title)) if title and items else parser
        for item in items:
            exclusive = meta(item).exclusive
            if exclusive and exclusive not in sets:
                sets[exclusive] = target.add_mutually_exclusive_group()
            where = sets[exclusive] if exclusive else target
            where.add_argument(*flags(item), **_arguments(item, variant))


def declared(groups: Sequence[type]) -> Iterator[tuple[type, dataclasses.Field[Any]]]:
    """Every declared option of the groups, with its group."""
    for group in groups:
        for item in dataclasses.fields(group):
            if "option" in item.metadata:
                yield group, item


def _default(item: dataclasses.Field[Any]) -> str:
    """A field's default as the table shows it."""
    info = meta(item)
    value = item.default if info.cli_default is UNSET else info.cli_default
    shown = "" if value in (None, dataclasses.MISSING, (), "", []) or isinstance(value, bool) else f"`{value}`"
    if info.pa_required:
        return "required in `perf-analyzer`"
    return shown + (f" (`perf-analyzer`: `{info.pa_default}`)" if info.pa_default is not UNSET else "")


def option_table(groups: Sequence[tuple[str, type]]) -> str:
    """The README's table of every option: its flags, default, whether perf_analyzer has it, and its help."""
    rows = ["| option | default | perf_analyzer | meaning |", "| --- | --- | --- | --- |"]
    for index, (title, group) in enumerate(groups):
        if not index or groups[index - 1][0] != title:  # a stage's groups under one title
            rows.append(f"| **{title}** | | | |")
        for _, item in declared([group]):
            info = meta(item)
            shown = "/".join(flags(item)) + (f" {info.metavar}" if info.metavar else "")
            same = "same" if info.perf_analyzer else "loadgen's own"
            rows.append(f"| `{shown}` | {_default(item)} | {same} | {info.help.replace('|', '/')} |")
    return "\n".join(rows)
