"""Reports: everything a user reads of a run, each from the same immutable result object."""

from loadgen.reports.console import ConsoleProgress, make_console
from loadgen.reports.files import write_csv, write_json
from loadgen.reports.tuning import TuneReport

__all__ = [
    "ConsoleProgress",
    "TuneReport",
    "make_console",
    "write_csv",
    "write_json",
]
