"""Whether a level's model was served to someone else too: the server's count of its requests in each window beside
loadgen's own.

The server's window runs from one statistics read to the next, loadgen's from one rotation to the next, a moment
earlier. The server may count a request of loadgen's that the window does not hold when it is in flight at an edge:
answered on the server but not yet received at the window's end, or received just before its start while the
server's counters lagged its response. Loadgen's requests in flight at the edges bound that difference; what loadgen
completes between a rotation and the statistics read is counted by the server one window earlier than by loadgen,
which evens out over consecutive windows. So a level is judged on its windows together: a server count beyond
loadgen's, the edges' requests and a margin holds someone else's requests (another client's, or work an earlier run
left queued in the server).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from loadgen.server.statistics import ZERO, Composition, Counters, served_version

SHARED_MARGIN = 0.05  # of loadgen's own count: for what it completes between a rotation and the statistics read
SHARED_FLOOR = 2  # requests (a sequence's unmeasured end, a validation request)
WAIT_SUGGESTION = (
    "measure again once nothing else loads the model (loadgen waits for the server's leftovers before its first "
    "window; another client's load it cannot wait out)"
)


@dataclass(frozen=True)
class Sharing:
    """The server's count of the model's requests over windows, beside what loadgen accounts for."""

    model: str
    server_requests: int  # the model's requests the server completed or failed in the windows
    loadgen_requests: int  # loadgen's own that returned in them (those of an earlier level too)
    edge_requests: int  # loadgen's requests in flight at the windows' edges: what the counts may differ by
    windows: int
    shared: bool  # the server counted clearly more than that: it served the model to someone else too

    @property
    def foreign_requests(self) -> int:
        """The server's requests beyond all that loadgen can account for: at least this many were someone else's."""
        return max(self.server_requests - self.loadgen_requests - self.edge_requests, 0)

    def describe(self) -> str:
        """One line: what the server counted beside loadgen, and what that means."""
        return (
            f"the server completed {self.server_requests} requests of {self.model} in {_windows(self.windows)}, loadgen "
            f"{self.loadgen_requests} (and {self.edge_requests} in flight at their edges): at least "
            f"{self.foreign_requests} were someone else's (another client, or work an earlier run left queued)"
        )


def _windows(count: int) -> str:
    return "the window" if count == 1 else f"{count} windows"


def is_shared(server_requests: int, loadgen_requests: int, edge_requests: int) -> bool:
    """The pollution rule: the server counted clearly more than loadgen's own requests and those at the edges (the
    margin: a share of loadgen's count, at least SHARED_FLOOR)."""
    slack = max(SHARED_FLOOR, SHARED_MARGIN * loadgen_requests)
    return server_requests - loadgen_requests > edge_requests + slack


def window_sharing(model: str, server_requests: int, loadgen_requests: int, edge_requests: int) -> Sharing:
    """One window's counts, judged by the rule."""
    shared = is_shared(server_requests, loadgen_requests, edge_requests)
    return Sharing(model, server_requests, loadgen_requests, edge_requests, 1, shared)


def combined(windows: Iterable[Sharing]) -> Sharing | None:
    """Consecutive windows' counts as one (None for none), judged by the rule on their sums."""
    parts = list(windows)
    if not parts:
        return None
    server = sum(part.server_requests for part in parts)
    loadgen = sum(part.loadgen_requests for part in parts)
    edges = sum(part.edge_requests for part in parts)
    return Sharing(parts[0].model, server, loadgen, edges, len(parts), is_shared(server, loadgen, edges))


def server_requests(model: Composition, stats: Mapping[tuple[str, str], Counters]) -> int:
    """The requests of the profiled model (its version that served most) the server completed or failed."""
    counters = stats.get((model.model, served_version(model.model, model.version, stats)), ZERO)
    return counters.success_count + counters.fail_count
