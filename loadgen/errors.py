"""Errors loadgen reports to users, each with perf_analyzer's exit status."""

from __future__ import annotations

EXIT_SUCCESS = 0
EXIT_REGRESSION = 1  # `loadgen compare --fail-if`: a threshold crossed, significantly
EXIT_UNSTABLE = 2
EXIT_BAD_OPTION = 3
EXIT_OTHER = 99


class LoadgenError(Exception):
    """An error with a one-line message for the user; never shown as a traceback."""

    exit_code = EXIT_OTHER


class OptionError(LoadgenError):
    """A command-line option or library argument that makes no sense."""

    exit_code = EXIT_BAD_OPTION


class ServerError(LoadgenError):
    """The server could not be reached, or refused what loadgen asked of it."""


class RunFailed(LoadgenError):
    """The run stopped midway; `result` holds every finished level and the partial one."""

    def __init__(self, message: str, result: object) -> None:
        super().__init__(message)
        self.result = result


class ModelRejectedError(LoadgenError):
    """The model failed the requests loadgen built from the input data."""


class MissingExtraError(LoadgenError):
    """A feature needs an optional dependency that is not installed."""

    def __init__(self, feature: str, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed, and {feature} needs it: pip install 'loadgen[{extra}]'")
