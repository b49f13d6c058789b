"""Reports: everything a user reads of a run, each from the same immutable result object."""

from loadgen.reports.console import ConsoleProgress, make_console
from loadgen.reports.files import load_result, write_atomic, write_csv, write_json
from loadgen.reports.tuning import TuneReport

__all__ = [
    "ConsoleProgress",
    "TuneReport",
    "load_result",
    "make_console",
    "write_atomic",
    "write_csv",
    "write_json",
]
