"""Model Analyzer on loadgen: the same quick search, once with the real perf_analyzer and once with loadgen's
`perf-analyzer` console script, on one server. Both must complete, measure the same configurations, give Model
Analyzer every figure it reads, and rank the configurations by throughput alike within noise.

Model Analyzer (and the real perf_analyzer, its reference) are installed once into a cache outside the project's
environment (`benchmarks/get_model_analyzer.sh`, `benchmarks/get_perf_analyzer.sh`); the tests skip, saying why, only
when that install fails. The model is `sleeper` (20 ms per request): its capacity is set by its instance count, not by
the CPU a shared machine lends the client, so the ranking the search measures is the server's, in both tools.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadgen.server import EmbeddedServer
from tests.helpers import TEST_MODELS, serve

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.timeout(1800)]

MODEL = "sleeper"
SHAPE = "INPUT0:16"  # the model's input is [-1]
NOISE = 0.25
"""Two configurations whose best throughputs are closer than this share (of the larger) are tied: their order may
differ between the tools. The sleeper's two instance counts are 2x apart; repeated searches on a shared 2-core machine
moved one configuration's best by a few per cent."""
MA_TIMEOUT_S = 900


@dataclass(frozen=True)
class Measurement:
    """One perf_analyzer run Model Analyzer kept: the model config variant, the load, and what it read back."""

    variant: str
    instances: str  # Model Analyzer's "Instance Group" column: "2:CPU"
    max_batch_size: int
    batch_size: int
    concurrency: int
    throughput: float
    figures: frozenset[str]  # the records Model Analyzer filled from perf_analyzer's CSV

    @property
    def configuration(self) -> tuple[str, str, int, int, int]:
        return self.variant, self.instances, self.max_batch_size, self.batch_size, self.concurrency


@dataclass(frozen=True)
class Search:
    """One `model-analyzer profile` run: its exit status, output, files, and the measurements of its checkpoint."""

    tool: str
    status: int
    output: str
    directory: Path
    measurements: tuple[Measurement, ...]

    @property
    def export(self) -> Path:
        return self.directory / "export"

    def best(self) -> dict[str, float]:
        """Each variant's highest throughput: what Model Analyzer ranks configurations by (its default objective)."""
        best: dict[str, float] = {}
        for measurement in self.measurements:
            best[measurement.variant] = max(best.get(measurement.variant, 0.0), measurement.throughput)
        return best

    def ranking(self) -> list[str]:
        best = self.best()
        return sorted(best, key=lambda variant: -best[variant])


def _tool(installer: str) -> str:
    from benchmarks.common import PerfAnalyzerError, model_analyzer_path, perf_analyzer_path

    try:
        return model_analyzer_path() if installer == "model-analyzer" else perf_analyzer_path()
    except PerfAnalyzerError as error:
        pytest.skip(f"{installer} cannot be installed here: {error}")


def _loadgen_entry_point() -> Path:
    """The `perf-analyzer` console script of the environment running the tests."""
    script = Path(sys.executable).with_name("perf-analyzer")
    assert script.is_file(), f"{script} is missing: reinstall loadgen (pip install -e .) to get its console scripts"
    return script


def _measurements(checkpoint: Path) -> tuple[Measurement, ...]:
    """The measurements of Model Analyzer's checkpoint: per variant, its model config, then one entry per run."""
    results = json.loads(checkpoint.read_text())["ResultManager.results"]["_results"][MODEL]
    measurements = []
    for variant, (run_config, runs) in results.items():
        config = run_config["_model_run_configs"][0]["_model_config_variant"]["model_config"]
        instances = ",".join(
            f"{group['count']}:{group['kind'].removeprefix('KIND_')}" for group in config["instanceGroup"]
        )
        for run in runs.values():
            model = run["_model_config_measurements"][0]
            records = {tag: record["_value"] for tag, record in model["_non_gpu_data"]}
            load = model["_model_specific_pa_params"]
            measurements.append(
                Measurement(
                    variant,
                    instances,
                    int(config.get("maxBatchSize", 0)),
                    int(load["batch-size"]),
                    int(load["concurrency-range"] or 0),  # 0: none passed, perf_analyzer's default of 1
                    float(records["perf_throughput"]),
                    frozenset(records),
                )
            )
    return tuple(sorted(measurements, key=lambda m: m.configuration))


def _search(model_analyzer: str, perf_analyzer: str, tool: str, server: EmbeddedServer, directory: Path) -> Search:
    """Model Analyzer's quick search in remote mode: instance counts 1-2, concurrency 1-4, short count windows."""
    directory.mkdir()
    (directory / "export").mkdir()
    config = {
        "model_repository": str(server.model_repository),
        "profile_models": {MODEL: {"cpu_only": True}},
        "triton_launch_mode": "remote",
        "triton_grpc_endpoint": server.grpc_url,
        "triton_http_endpoint": server.http_url,
        "triton_metrics_url": f"http://{server.metrics_url}/metrics",
        "perf_analyzer_path": perf_analyzer,
        "run_config_search_mode": "quick",
        "run_config_search_max_instance_count": 2,
        "run_config_search_max_concurrency": 4,
        "output_model_repository_path": str(directory / "output_repository"),
        "override_output_model_repository": True,
        "checkpoint_directory": str(directory / "checkpoints"),
        "export_path": str(directory / "export"),
        "skip_detailed_reports": True,
        # 3 windows of at least 50 requests and a second each, never unstable on a busy machine
        "perf_analyzer_flags": {"shape": SHAPE, "stability-percentage": 100},
    }
    path = directory / "config.yaml"
    path.write_text(json.dumps(config, indent=2))  # YAML reads JSON
    environment = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [model_analyzer, "profile", "-f", str(path)],
        cwd=directory,  # where perf_analyzer writes its -f CSV
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=MA_TIMEOUT_S,
        env=environment,
        check=False,
    )
    (directory / "model-analyzer.log").write_text(done.stdout)
    checkpoint = directory / "checkpoints" / "0.ckpt"
    measurements = _measurements(checkpoint) if checkpoint.is_file() else ()
    return Search(tool, done.returncode, done.stdout, directory, measurements)


@pytest.fixture(scope="module")
def sleeper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The sleeper alone (no other model to warn about), in explicit model-control mode: Model Analyzer loads each
    config variant itself."""
    repository = tmp_path_factory.mktemp("ma-repository")
    shutil.copytree(TEST_MODELS / MODEL, repository / MODEL)
    yield from serve(repository, tmp_path_factory.mktemp("ma-server"), explicit_model_control=True)


@dataclass(frozen=True)
class Tools:
    model_analyzer: str
    perf_analyzer: str  # the real one, 2.51
    loadgen: str  # loadgen's perf-analyzer console script


@pytest.fixture(scope="module")
def tools() -> Tools:
    """Installed (once, into the cache) before any server starts; the tests skip, with the reason, when they cannot
    be."""
    return Tools(_tool("model-analyzer"), _tool("perf_analyzer"), str(_loadgen_entry_point()))


@pytest.fixture(scope="module")
def searches(
    tools: Tools, sleeper_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Search, Search]:
    """The quick search with the real perf_analyzer, then with loadgen's `perf-analyzer`, on the same server."""
    directory = tmp_path_factory.mktemp("model-analyzer")
    return (
        _search(tools.model_analyzer, tools.perf_analyzer, "perf_analyzer", sleeper_server, directory / "reference"),
        _search(tools.model_analyzer, tools.loadgen, "loadgen", sleeper_server, directory / "loadgen"),
    )


def side_by_side(reference: Search, loadgen: Search) -> str:
    """Every measurement of both searches, and each tool's ranking, as a table for the report."""
    pa = {m.configuration: m.throughput for m in reference.measurements}
    lg = {m.configuration: m.throughput for m in loadgen.measurements}
    lines = [f"{'variant':<24} {'instances':>9} {'conc':>4} {'perf_analyzer':>13} {'loadgen':>9} {'ratio':>6}"]
    for key in sorted(pa.keys() | lg.keys()):
        variant, instances, _, _, concurrency = key
        a, b = pa.get(key), lg.get(key)
        ratio = f"{b / a:.2f}" if a and b else "-"
        lines.append(f"{variant:<24} {instances:>9} {concurrency:>4} {a or 0:>13.1f} {b or 0:>9.1f} {ratio:>6}")
    for search in (reference, loadgen):
        best = search.best()
        lines.append(f"{search.tool} ranking: " + " > ".join(f"{v} ({best[v]:.1f})" for v in search.ranking()))
    return "\n".join(lines)


def _tail(search: Search, lines: int = 30) -> str:
    return "\n".join(search.output.splitlines()[-lines:])


def test_model_analyzer_completes_on_loadgens_perf_analyzer(searches: tuple[Search, Search]) -> None:
    for search in searches:
        assert search.status == 0, f"model-analyzer with {search.tool} exited {search.status}:\n{_tail(search)}"
        assert search.measurements, f"no measurement in the checkpoint of the {search.tool} search"
        assert (search.export / "results" / "metrics-model-inference.csv").is_file(), _tail(search)
        errors = search.export / "perf_analyzer_error.log"  # written when a perf_analyzer call failed for good
        assert not errors.exists(), f"{search.tool}: {errors.read_text()[:2000] if errors.exists() else ''}"
        assert "killing perf_analyzer" not in search.output  # its CPU and time limits


def test_both_searches_measure_the_same_configurations(searches: tuple[Search, Search]) -> None:
    reference, loadgen = searches
    expected = [m.configuration for m in reference.measurements]
    assert [m.configuration for m in loadgen.measurements] == expected, side_by_side(reference, loadgen)
    assert {m.instances for m in reference.measurements} == {"1:CPU", "2:CPU"}  # the search covered its range


def test_model_analyzer_reads_every_figure_from_loadgens_csv(searches: tuple[Search, Search]) -> None:
    """Latencies, throughput, client and server times: each record the real perf_analyzer's CSV filled."""
    reference, loadgen = searches
    figures = {m.configuration: m.figures for m in reference.measurements}
    for measurement in loadgen.measurements:
        assert measurement.figures == figures[measurement.configuration], measurement.configuration


def test_throughput_ranking_agrees_within_noise(searches: tuple[Search, Search]) -> None:
    """For every two configurations, the tools may order them differently only if one of them finds the two tied
    (within NOISE); and at least one pair is told apart by both, so that the agreement means something."""
    reference, loadgen = searches
    table = side_by_side(reference, loadgen)
    print(table)
    pa, lg = reference.best(), loadgen.best()
    assert pa.keys() == lg.keys(), table
    decided = 0
    for a, b in itertools.combinations(sorted(pa), 2):
        order = _order(pa[a], pa[b]), _order(lg[a], lg[b])
        if 0 not in order:
            decided += 1
            assert order[0] == order[1], f"{a} vs {b}: the tools disagree beyond noise\n{table}"
    assert decided, f"no two configurations told apart by both tools\n{table}"


def _order(x: float, y: float) -> int:
    """1 when x is the higher throughput beyond noise, -1 when y is, 0 when they are tied."""
    if min(x, y) >= max(x, y) * (1 - NOISE):
        return 0
    return 1 if x > y else -1
