"""Reports: everything a user reads of a run, each from the same immutable result object."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loadgen.lazy import lazy_names

if TYPE_CHECKING:
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
__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "loadgen.reports.console": ("ConsoleProgress", "make_console"),
        "loadgen.reports.files": ("write_csv", "write_json"),
        "loadgen.reports.tuning": ("TuneReport",),
    },
)
