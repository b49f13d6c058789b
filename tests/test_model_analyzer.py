"""Model Analyzer on loadgen: the same quick search, once with the real perf_analyzer and once with loadgen's
`perf-analyzer` console script, on one server (`benchmarks/model_analyzer_search.py`). Both must complete, measure
the same configurations, give Model Analyzer every figure it reads, and rank the configurations by throughput alike
within noise.

Model Analyzer and the real perf_analyzer, its reference, are installed once into a cache outside the project's
environment; the tests skip, saying why, only when that install fails. The model is `sleeper` (20 ms per request):
its capacity is set by its instance count, not by the CPU a shared machine lends the client, so the ranking the
search measures is the server's, in both tools. The same quick search on the ensemble `pipeline_slow_tail` and the
BLS model `bls_pair` (fast_step, then slow_step at 20 ms) varies their steps' instance counts: both tools complete
it and rank the configurations alike outside ties.

The searches leave out the concurrency sweep Model Analyzer adds after a quick search for its reports (the best
configurations again at other concurrencies, through the same perf_analyzer calls): about half the runs, and minutes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from benchmarks.common import PerfAnalyzerError
from benchmarks.model_analyzer_search import Search, Tools, both, order, repository, side_by_side, tools
from loadgen.server import EmbeddedServer
from tests.helpers import serve

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.timeout(1800)]

MODEL = "sleeper"


@pytest.fixture(scope="module")
def installed() -> Tools:
    """Installed (once, into the cache) before any server starts."""
    try:
        return tools()
    except PerfAnalyzerError as error:
        pytest.skip(f"Model Analyzer or perf_analyzer cannot be installed here: {error}")


@pytest.fixture(scope="module")
def sleeper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The sleeper alone, in explicit model-control mode: Model Analyzer loads each config variant itself."""
    model_repository = repository(MODEL, tmp_path_factory.mktemp("ma-repository") / "models")
    yield from serve(model_repository, tmp_path_factory.mktemp("ma-server"), explicit_model_control=True)


@pytest.fixture(scope="module")
def searches(
    installed: Tools, sleeper_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory
) -> list[Search]:
    """The quick search with the real perf_analyzer, then with loadgen's `perf-analyzer`, on the same server."""
    return both(installed, sleeper_server, MODEL, tmp_path_factory.mktemp("model-analyzer"), sweep=False)


def _tail(search: Search, lines: int = 30) -> str:
    return "\n".join(search.output.splitlines()[-lines:])


def test_model_analyzer_completes_on_loadgens_perf_analyzer(searches: list[Search]) -> None:
    for search in searches:
        assert search.status == 0, f"model-analyzer with {search.tool} exited {search.status}:\n{_tail(search)}"
        assert search.measurements, f"no measurement in the checkpoint of the {search.tool} search"
        assert (search.export / "results" / "metrics-model-inference.csv").is_file(), _tail(search)
        errors = search.export / "perf_analyzer_error.log"  # written when a perf_analyzer call failed for good
        assert not errors.exists(), f"{search.tool}: {errors.read_text()[:2000] if errors.exists() else ''}"
        assert "killing perf_analyzer" not in search.output  # its CPU and time limits


def test_both_searches_measure_the_same_configurations(searches: list[Search]) -> None:
    reference, loadgen = searches
    expected = [m.configuration for m in reference.measurements]
    assert [m.configuration for m in loadgen.measurements] == expected, side_by_side(reference, loadgen)
    assert {m.instances for m in reference.measurements} == {"1:CPU", "2:CPU"}  # the search covered its range


def test_model_analyzer_reads_every_figure_from_loadgens_csv(searches: list[Search]) -> None:
    """Latencies, throughput, client and server times: each record the real perf_analyzer's CSV filled."""
    reference, loadgen = searches
    figures = {m.configuration: m.figures for m in reference.measurements}
    for measurement in loadgen.measurements:
        assert measurement.figures == figures[measurement.configuration], measurement.configuration


def test_throughput_ranking_agrees_within_noise(searches: list[Search]) -> None:
    """For every two configurations, the tools may order them differently only if one of them finds the two tied
    (within NOISE); and at least one pair is told apart by both, so that the agreement means something."""
    reference, loadgen = searches
    table = side_by_side(reference, loadgen)
    print(table)
    pa, lg = reference.best(), loadgen.best()
    assert pa.keys() == lg.keys(), table
    decided = 0
    for a, b in itertools.combinations(sorted(pa), 2):
        orders = order(pa[a], pa[b]), order(lg[a], lg[b])
        if 0 not in orders:
            decided += 1
            assert orders[0] == orders[1], f"{a} vs {b}: the tools disagree beyond noise\n{table}"
    assert decided, f"no two configurations told apart by both tools\n{table}"


COMPOSITE = {"pipeline_slow_tail": True, "bls_pair": False}  # model -> whether its configurations differ beyond noise


@pytest.fixture(scope="module", params=sorted(COMPOSITE))
def composite_searches(
    request: pytest.FixtureRequest, installed: Tools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Search]]:
    """The quick search on an ensemble and on a BLS model (each step's instance count varied), with each tool, on a
    server of their own."""
    model = request.param
    model_repository = repository(model, tmp_path_factory.mktemp(f"ma-{model}") / "models")
    for server in serve(model_repository, tmp_path_factory.mktemp(f"ma-{model}-server"), explicit_model_control=True):
        yield both(installed, server, model, tmp_path_factory.mktemp(f"model-analyzer-{model}"), sweep=False)


def test_model_analyzer_completes_on_an_ensemble_and_a_bls_model(composite_searches: list[Search]) -> None:
    test_model_analyzer_completes_on_loadgens_perf_analyzer(composite_searches)
    for search in composite_searches:  # the steps' instance counts were searched
        assert len({m.instances for m in search.measurements}) > 1, _tail(search)


def test_an_ensembles_and_a_bls_models_ranking_agrees_outside_ties(composite_searches: list[Search]) -> None:
    """Configurations by their steps' instance counts (the searches may name them in another order): those both
    measured are ranked alike unless one tool finds two of them tied. The ensemble's slow step with two instances
    doubles its throughput, which both tell apart; the BLS model's search keeps slow_step, its bound, at one instance,
    so its configurations may all tie."""
    reference, loadgen = composite_searches
    table = side_by_side(reference, loadgen)
    print(table)
    pa, lg = reference.best_by_configuration(), loadgen.best_by_configuration()
    common = sorted(pa.keys() & lg.keys())
    assert len(common) > 1, table
    decided = 0
    for a, b in itertools.combinations(common, 2):
        orders = order(pa[a], pa[b]), order(lg[a], lg[b])
        if 0 not in orders:
            decided += 1
            assert orders[0] == orders[1], f"{a} vs {b}: the tools disagree beyond noise\n{table}"
    if COMPOSITE[reference.model]:
        assert decided, f"no two configurations told apart by both tools\n{table}"
