"""Model Analyzer on loadgen: one quick search with the real perf_analyzer, then the same with loadgen's
`perf-analyzer` console script, on one embedded Triton in explicit model-control mode (Model Analyzer's remote
launch mode), and the two side by side.

Model Analyzer 1.58 goes into a virtualenv of its own in the cache (`get_model_analyzer.sh`), perf_analyzer 2.51 as
for `make bench` (`get_perf_analyzer.sh`). The search: instance counts 1-2, max batch size 1 (models that batch),
concurrency 1 to --max-concurrency, perf_analyzer's count windows with a stability bound no busy machine misses. What
is compared is what Model Analyzer kept in its checkpoint: the configurations it measured, the figures it read from
perf_analyzer's CSV, and each configuration's best throughput, by which it ranks them.

    python benchmarks/model_analyzer_search.py [--model sleeper|identity_uint8|pipeline_slow_tail|bls_pair]
        [--max-concurrency 4] [--keep DIR]

An ensemble's or a BLS model's search varies its steps' instance counts (their variants run on the CPU too; a BLS
model's steps are named to Model Analyzer). `tests/test_model_analyzer.py` runs it on `sleeper`, the ensemble
`pipeline_slow_tail` and the BLS model `bls_pair` (without the concurrency sweep for the reports), and checks the
two agree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loadgen.server import EmbeddedServer

try:  # imported by the tests
    from benchmarks.common import EXAMPLES, console_script, model_analyzer_path, perf_analyzer_path
except ImportError:  # run as a script from benchmarks/
    from common import EXAMPLES, console_script, model_analyzer_path, perf_analyzer_path

TESTS = Path(__file__).resolve().parent.parent / "tests" / "model_repository"


@dataclass(frozen=True)
class Profiled:
    """A model Model Analyzer searches: its directory, the --shape perf_analyzer needs for its [-1] or [16] input,
    and the models it runs (an ensemble's steps, or a BLS model's, which Model Analyzer is told of)."""

    directory: Path
    shape: str
    composing: tuple[str, ...] = ()
    bls: bool = False


MODELS = {
    "sleeper": Profiled(TESTS / "sleeper", "INPUT0:16"),
    "identity_uint8": Profiled(EXAMPLES / "model_repository" / "identity_uint8", "INPUT0:16"),
    "pipeline_slow_tail": Profiled(TESTS / "pipeline_slow_tail", "INPUT0:16", ("fast_step", "slow_step")),
    "bls_pair": Profiled(TESTS / "bls_pair", "INPUT0:16", ("fast_step", "slow_step"), bls=True),
}
NOISE = 0.25
"""Two configurations whose best throughputs are closer than this share (of the higher) are tied: the tools may order
them either way. Set from repeated searches on a shared 2-core machine: between runs of one tool, a configuration's
best moved by up to 6 % for the sleeper (server-bound; its instance counts are 2x apart) and by up to 25 % for the
CPU-bound identity model as the machine's load changed."""
MA_TIMEOUT_S = 900


@dataclass(frozen=True)
class Measurement:
    """One perf_analyzer run Model Analyzer kept: the model config variant, the load, and what it read back."""

    variant: str
    instances: str  # as Model Analyzer's "Instance Group" column: "2:CPU"
    max_batch_size: int
    batch_size: int
    concurrency: int  # 0: Model Analyzer passed none (perf_analyzer's default, 1)
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
    model: str = ""

    @property
    def export(self) -> Path:
        return self.directory / "export"

    def best(self) -> dict[str, float]:
        """Each variant's highest throughput: what Model Analyzer ranks configurations by (its default objective)."""
        best: dict[str, float] = {}
        for measurement in self.measurements:
            best[measurement.variant] = max(best.get(measurement.variant, 0.0), measurement.throughput)
        return best

    def best_by_configuration(self) -> dict[tuple[str, int], float]:
        """Each configuration's highest throughput, by its instances and max batch size (two searches that took
        different paths name the same configuration differently)."""
        best: dict[tuple[str, int], float] = {}
        for measurement in self.measurements:
            key = (measurement.instances, measurement.max_batch_size)
            best[key] = max(best.get(key, 0.0), measurement.throughput)
        return best

    def ranking(self) -> list[str]:
        best = self.best()
        return sorted(best, key=lambda variant: -best[variant])


@dataclass(frozen=True)
class Tools:
    model_analyzer: str
    perf_analyzer: str  # the real one, 2.51
    loadgen: str  # loadgen's `perf-analyzer` console script


def tools() -> Tools:
    """Both reference tools, installed once into the cache, and loadgen's `perf-analyzer` script."""
    return Tools(model_analyzer_path(), perf_analyzer_path(), str(console_script("perf-analyzer")))


def repository(model: str, directory: Path) -> Path:
    """A repository holding the model and the models it runs alone (Model Analyzer warns about any other model
    loaded); an ensemble's empty version folder is made, as git does not keep it."""
    profiled = MODELS[model]
    shutil.copytree(profiled.directory, directory / model, ignore=shutil.ignore_patterns("__pycache__"))
    (directory / model / "1").mkdir(exist_ok=True)
    for step in profiled.composing:
        shutil.copytree(
            profiled.directory.parent / step, directory / step, ignore=shutil.ignore_patterns("__pycache__")
        )
    return directory


def _instances(groups: list[dict[str, object]]) -> str:
    return ",".join(f"{group['count']}:{str(group['kind']).removeprefix('KIND_')}" for group in groups)


def measurements(checkpoint: Path, model: str) -> tuple[Measurement, ...]:
    """The measurements of Model Analyzer's checkpoint: per variant, its model config, then one entry per run."""
    results = json.loads(checkpoint.read_text())["ResultManager.results"]["_results"][model]
    found = []
    for variant, (run_config, runs) in results.items():
        model_run = run_config["_model_run_configs"][0]
        config = model_run["_model_config_variant"]["model_config"]
        parts = [_instances(config["instanceGroup"])] if "instanceGroup" in config else []
        for step in model_run.get("_composing_config_variants") or ():  # an ensemble's or a BLS model's steps
            step_config = step["model_config"]
            parts.append(f"{step_config['name']}={_instances(step_config.get('instanceGroup', []))}")
        instances = " ".join(parts)
        for run in runs.values():
            measured = run["_model_config_measurements"][0]
            records = {tag: record["_value"] for tag, record in measured["_non_gpu_data"]}
            load = measured["_model_specific_pa_params"]
            found.append(
                Measurement(
                    variant,
                    instances,
                    int(config.get("maxBatchSize", 0)),
                    int(load["batch-size"]),
                    int(load["concurrency-range"] or 0),
                    float(records["perf_throughput"]),
                    frozenset(records),
                )
            )
    return tuple(sorted(found, key=lambda m: m.configuration))


def search(
    model_analyzer: str,
    perf_analyzer: str,
    tool: str,
    server: EmbeddedServer,
    model: str,
    directory: Path,
    max_concurrency: int = 4,
    sweep: bool = True,
) -> Search:
    """Model Analyzer's quick search in remote mode, with `perf_analyzer` as its perf_analyzer, in `directory`;
    `sweep` False leaves out the concurrency sweep of the best configurations it adds for its reports."""
    directory.mkdir(parents=True)
    (directory / "export").mkdir()
    config = {
        "model_repository": str(server.model_repository),
        "profile_models": {model: {"cpu_only": True}},
        "triton_launch_mode": "remote",
        "triton_grpc_endpoint": server.grpc_url,
        "triton_http_endpoint": server.http_url,
        "triton_metrics_url": f"http://{server.metrics_url}/metrics",
        "perf_analyzer_path": perf_analyzer,
        "run_config_search_mode": "quick",
        "run_config_search_max_instance_count": 2,
        "run_config_search_max_model_batch_size": 1,
        "run_config_search_max_concurrency": max_concurrency,
        "concurrency_sweep_disable": not sweep,
        "output_model_repository_path": str(directory / "output_repository"),
        "override_output_model_repository": True,
        "checkpoint_directory": str(directory / "checkpoints"),
        "export_path": str(directory / "export"),
        "skip_detailed_reports": True,
        # 3 windows of at least 50 requests and a second each, never unstable on a busy machine
        "perf_analyzer_flags": {"shape": MODELS[model].shape, "stability-percentage": 100},
    }
    if MODELS[model].composing:  # its steps' variants run on the CPU too
        config["cpu_only_composing_models"] = list(MODELS[model].composing)
    if MODELS[model].bls:
        config["bls_composing_models"] = ",".join(MODELS[model].composing)
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
    found = measurements(checkpoint, model) if checkpoint.is_file() else ()
    return Search(tool, done.returncode, done.stdout, directory, found, model)


def both(
    tools: Tools, server: EmbeddedServer, model: str, directory: Path, max_concurrency: int = 4, sweep: bool = True
) -> list[Search]:
    """The search with the real perf_analyzer, then with loadgen's, on the same server."""
    return [
        search(tools.model_analyzer, path, tool, server, model, directory / tool, max_concurrency, sweep)
        for tool, path in (("perf_analyzer", tools.perf_analyzer), ("loadgen", tools.loadgen))
    ]


def order(x: float, y: float) -> int:
    """1 when x is the higher throughput beyond NOISE, -1 when y is, 0 when they are tied."""
    if min(x, y) >= max(x, y) * (1 - NOISE):
        return 0
    return 1 if x > y else -1


def side_by_side(reference: Search, loadgen: Search) -> str:
    """Every measurement of both searches, and each tool's ranking."""
    pa = {m.configuration: m.throughput for m in reference.measurements}
    lg = {m.configuration: m.throughput for m in loadgen.measurements}
    lines = [
        f"{'variant':<30} {'instances':>9} {'max batch':>9} {'conc':>4} {'perf_analyzer':>13} {'loadgen':>9} {'ratio':>6}"
    ]
    for key in sorted(pa.keys() | lg.keys()):
        variant, instances, max_batch_size, _, concurrency = key
        a, b = pa.get(key), lg.get(key)
        ratio = f"{b / a:.2f}" if a and b else "-"
        lines.append(
            f"{variant:<30} {instances:>9} {max_batch_size:>9} {concurrency:>4} {a or 0:>13.1f} {b or 0:>9.1f} "
            f"{ratio:>6}"
        )
    for one in (reference, loadgen):
        best = one.best()
        lines.append(f"{one.tool} ranking: " + " > ".join(f"{v} ({best[v]:.1f})" for v in one.ranking()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="sleeper")
    parser.add_argument("--max-concurrency", type=int, default=4)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep Model Analyzer's files under DIR")
    args = parser.parse_args()
    found = tools()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        repo = repository(args.model, work / "repository")
        with EmbeddedServer(repo, explicit_model_control=True, log_path=work / "tritonserver.log") as server:
            reference, loadgen = both(found, server, args.model, work / "searches", args.max_concurrency)
        for one in (reference, loadgen):
            tail = "\n".join(one.output.splitlines()[-5:])
            print(f"model-analyzer with {one.tool}: exit {one.status}, {len(one.measurements)} measurements\n{tail}")
        print(side_by_side(reference, loadgen))


if __name__ == "__main__":
    main()
