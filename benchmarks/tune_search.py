"""Guided against exhaustive search: how many measurements `loadgen.tune` needs next to trying every combination.

Builds, in a temporary directory, an ensemble `pipeline` of two Python steps from the test sleeper model:
`step_a` sleeps 10 ms (100 requests/s per instance) and `step_b` 25 ms (40/s per instance), one instance each, so
the bottleneck moves from step_b to step_a as instances are added. Starts the embedded Triton once in explicit
model-control mode, then:

1. exhaustive: loads every instance-count combination of the two steps (1..4 each) and measures each at one level;
2. guided: resets both steps to one instance and runs `loadgen.tune` at the same level.

Prints both and how many trials each needed to reach 95 % of the exhaustive best.

    python benchmarks/tune_search.py [--concurrency N] [--interval-ms MS]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2

import loadgen
from loadgen.results import Measurement
from loadgen.transport import Connection, ConnectionOptions, connect

SLEEPER = Path(__file__).resolve().parent.parent / "tests" / "model_repository" / "sleeper" / "1" / "model.py"
ENSEMBLE = "pipeline"
STEPS = {"step_a": 10, "step_b": 25}  # step -> sleep_ms
MAX_INSTANCES = 4
GOAL = 0.95  # share of the exhaustive best that counts as reached
ATTEMPTS = 3  # measurements of one combination that may end unstable before its last one is taken as is
INPUT = "INPUT0"
INPUT_SIZE = 8

STEP_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0", data_type: TYPE_UINT8, dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0", data_type: TYPE_UINT8, dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
parameters {{ key: "sleep_ms", value: {{ string_value: "{sleep_ms}" }} }}
"""

ENSEMBLE_CONFIG = """\
name: "{name}"
platform: "ensemble"
max_batch_size: 0
input [ {{ name: "INPUT0", data_type: TYPE_UINT8, dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0", data_type: TYPE_UINT8, dims: [ -1 ] }} ]
ensemble_scheduling {{
  step [
    {{
      model_name: "{first}"
      model_version: -1
      input_map {{ key: "INPUT0", value: "INPUT0" }}
      output_map {{ key: "OUTPUT0", value: "middle" }}
    }},
    {{
      model_name: "{second}"
      model_version: -1
      input_map {{ key: "INPUT0", value: "middle" }}
      output_map {{ key: "OUTPUT0", value: "OUTPUT0" }}
    }}
  ]
}}
"""


@dataclass(frozen=True)
class Combo:
    """One exhaustive measurement: instances per step and what the level showed."""

    instances: tuple[int, ...]
    throughput: float
    p99_us: int
    stable: bool
    bottleneck: str | None


def build_repository(root: Path) -> Path:
    """Write the two steps (the sleeper's model.py, linked) and the ensemble under `root`; return the repository."""
    repository = root / "model_repository"
    for name, sleep_ms in STEPS.items():
        version = repository / name / "1"
        version.mkdir(parents=True)
        (version / "model.py").symlink_to(SLEEPER)
        (repository / name / "config.pbtxt").write_text(STEP_CONFIG.format(name=name, sleep_ms=sleep_ms))
    first, second = STEPS
    (repository / ENSEMBLE / "1").mkdir(parents=True)
    (repository / ENSEMBLE / "config.pbtxt").write_text(
        ENSEMBLE_CONFIG.format(name=ENSEMBLE, first=first, second=second)
    )
    return repository


def with_instances(config: model_config_pb2.ModelConfig, count: int) -> model_config_pb2.ModelConfig:
    """A copy of `config` with one CPU instance group of `count` instances."""
    changed = model_config_pb2.ModelConfig()
    changed.CopyFrom(config)
    del changed.instance_group[:]
    changed.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU, count=count)
    return changed


def level_settings(url: str, concurrency: int, interval_ms: int) -> loadgen.Settings:
    """The one load level both searches measure at."""
    return loadgen.Settings(
        url=url,
        model_name=ENSEMBLE,
        concurrency_range=concurrency,
        input_data="zero",
        shape={INPUT: [INPUT_SIZE]},
        measurement_interval=interval_ms,
        stability_percentage=20,
    )


async def set_instances(
    connection: Connection, originals: dict[str, model_config_pb2.ModelConfig], counts: Sequence[int]
) -> None:
    """Load every step with its instance count (a config override on the live server)."""
    for (name, config), count in zip(originals.items(), counts, strict=True):
        await connection.load_model(name, with_instances(config, count))


async def measure(settings: loadgen.Settings) -> loadgen.LevelResult:
    """One level; an unstable one is measured again, up to `ATTEMPTS` times, and the last is kept."""
    for attempt in range(1, ATTEMPTS + 1):
        level = (await loadgen.profile(settings=settings)).levels[-1]
        if level.stable or attempt == ATTEMPTS:
            return level
        print(f"    unstable ({level.throughput:.1f} infer/s); measuring again", flush=True)
    raise AssertionError("unreachable")


async def exhaustive(
    connection: Connection, originals: dict[str, model_config_pb2.ModelConfig], settings: loadgen.Settings
) -> list[Combo]:
    """Every instance-count combination of the steps, each measured at the level."""
    combos: list[Combo] = []
    for counts in itertools.product(range(1, MAX_INSTANCES + 1), repeat=len(originals)):
        await set_instances(connection, originals, counts)
        level = await measure(settings)
        verdict = level.bottleneck
        combo = Combo(
            counts,
            level.throughput,
            level.latency_us.p99,
            level.stable,
            None if verdict is None else verdict.model or "client",
        )
        combos.append(combo)
        print(
            f"  {format_counts(counts)}: {combo.throughput:7.1f} infer/s{'' if combo.stable else ' (unstable)'}",
            flush=True,
        )
    return combos


def format_counts(counts: Sequence[int]) -> str:
    """Instance counts as `a/b`."""
    return "/".join(str(count) for count in counts)


def trials_to_goal(result: loadgen.TuneResult, goal: float) -> int | None:
    """Trials `tune` ran until a kept one (or the baseline, 0) first measured at least `goal` infer/s."""
    if result.initial.throughput >= goal:
        return 0
    for number, trial in enumerate(result.trials, 1):
        if trial.kept and trial.throughput >= goal:
            return number
    return None


def on_trial(event: loadgen.Trial | Measurement) -> None:
    """Progress of `tune`: the baseline, then each trial."""
    if isinstance(event, loadgen.Trial):
        print(f"  {event.change}: {event.throughput:.1f} infer/s, {'kept' if event.kept else 'reverted'}", flush=True)
    else:
        print(f"  baseline: {event.throughput:.1f} infer/s, bottleneck {event.bottleneck or '-'}", flush=True)


def combo_table(combos: Sequence[Combo]) -> list[str]:
    """The exhaustive measurements, one line per combination."""
    names = "/".join(STEPS)
    lines = [f"{'instances ' + names:<26}{'infer/s':>10}{'p99 ms':>10}  {'bottleneck':<12}stable"]
    for combo in combos:
        lines.append(
            f"{format_counts(combo.instances):<26}{combo.throughput:>10.1f}{combo.p99_us / 1000:>10.1f}  "
            f"{combo.bottleneck or '-':<12}{'yes' if combo.stable else 'no'}"
        )
    return lines


def trial_table(result: loadgen.TuneResult) -> list[str]:
    """Tune's baseline and trials, one line each, then where it ended and why."""
    lines = [f"{'#':>2}  {'change':<48}{'infer/s':>10}{'p99 ms':>10}  {'kept':<6}bottleneck after"]
    initial = result.initial
    lines.append(
        f"{0:>2}  {'baseline (1 instance each)':<48}{initial.throughput:>10.1f}{initial.p99_us / 1000:>10.1f}  "
        f"{'-':<6}{initial.bottleneck or '-'}"
    )
    for number, trial in enumerate(result.trials, 1):
        lines.append(
            f"{number:>2}  {trial.change:<48}{trial.throughput:>10.1f}{trial.p99_us / 1000:>10.1f}  "
            f"{'yes' if trial.kept else 'no':<6}{trial.bottleneck or '-'}"
        )
    lines.append(f"final {result.final.throughput:.1f} infer/s; stopped: {result.stop_reason}")
    return lines


async def compare(url: str, concurrency: int, interval_ms: int, max_trials: int) -> int:
    """Run both searches against the server at `url` and print the comparison."""
    settings = level_settings(url, concurrency, interval_ms)
    connection = connect(ConnectionOptions.from_settings(settings))
    try:
        await connection.check_model_control()
        originals = {name: await connection.model_config(name) for name in STEPS}
        print(
            f"exhaustive search, {MAX_INSTANCES ** len(STEPS)} combinations (instances {'/'.join(STEPS)}):", flush=True
        )
        combos = await exhaustive(connection, originals, settings)
        await set_instances(connection, originals, [1] * len(STEPS))
    finally:
        await connection.close()
    best = max(combos, key=lambda combo: combo.throughput)
    goal = GOAL * best.throughput

    print(f"\nguided search: loadgen.tune from 1 instance each, --max-trials {max_trials}:", flush=True)
    tune_settings = loadgen.TuneSettings(profile=settings, max_trials=max_trials)
    result = await loadgen.tune(tune_settings, on_trial)
    needed = trials_to_goal(result, goal)

    print(f"\nexhaustive, concurrency {concurrency}, {interval_ms} ms windows:")
    print("\n".join(combo_table(combos)))
    print(f"best: {format_counts(best.instances)} at {best.throughput:.1f} infer/s; 95 % of it: {goal:.1f} infer/s")
    print(f"\ntune (max_trials {max_trials}):")
    print("\n".join(trial_table(result)))
    if needed is None:
        print(f"tune never reached 95 % of the exhaustive best ({goal:.1f} infer/s) in {len(result.trials)} trials")
        print(f"trials to 95% of best: tune never ({len(result.trials)} run) vs exhaustive {len(combos)}")
    else:
        print(f"trials to 95% of best: tune {needed} vs exhaustive {len(combos)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, build the repository, start the server and compare the searches."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--interval-ms", type=int, default=1000, help="measurement window in ms (default 1000)")
    parser.add_argument("--max-trials", type=int, default=8, help="tune's trial budget (default 8)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tune-search-") as tmp:
        repository = build_repository(Path(tmp))
        server = loadgen.EmbeddedServer(
            repository, explicit_model_control=True, log_path=Path(tmp) / "tritonserver.log"
        )
        with server:
            print(
                f"Triton ready at {server.grpc_url}; {ENSEMBLE} = {' -> '.join(f'{n} ({ms} ms)' for n, ms in STEPS.items())}"
            )
            try:
                return loadgen.run(compare(server.grpc_url, args.concurrency, args.interval_ms, args.max_trials))
            except Exception:
                print(f"server log tail:\n{server.log_tail()}", file=sys.stderr)
                raise


if __name__ == "__main__":
    sys.exit(main())
