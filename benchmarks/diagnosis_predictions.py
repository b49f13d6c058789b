"""The diagnosis's predicted maximum throughput against the throughput measured where each pipeline saturates.

For each pipeline of `tests/diagnosis_repository` (a wide slow step beside a narrow fast one, CPU-burning steps on
this host, a BLS model with one instance), sweep the concurrency, print per level the bound, the predicted maximum
and the measured throughput, and compare the prediction at each level with the highest throughput the sweep
reached (where it saturates). The goal: within 15 %.

    python benchmarks/diagnosis_predictions.py [--interval-ms 2000] [--levels 1,2,4,8,16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import loadgen

REPOSITORY = Path(__file__).resolve().parent.parent / "tests" / "diagnosis_repository"
PIPELINES = {
    "wide_then_narrow": {},
    "burning_pipeline": {},
    "bls_front": {"bls_composing_models": "wide_step"},
}
GOAL = 0.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval-ms", type=int, default=2000, help="window length")
    parser.add_argument("--levels", default="1,2,4,8,16", help="concurrency levels")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    with loadgen.EmbeddedServer(REPOSITORY) as server:
        for model, extra in PIPELINES.items():
            result = loadgen.profile_sync(
                server.grpc_url,
                model,
                concurrency=levels,
                input_data="zero",
                shape={"INPUT0": [8]},
                measurement_interval=args.interval_ms,
                stability_percentage=25,
                max_trials=6,
                metrics_url=server.metrics_url,
                metrics_interval=250,
                **extra,
            )
            report(model, result)


def report(model: str, result: loadgen.ProfileResult) -> None:
    saturated = max(level.throughput for level in result.levels)
    print(f"\n{model}: measured at saturation {saturated:.1f} infer/s")
    print(f"{'conc':>5} {'infer/s':>8} {'bound':>14} {'limiting step':>14} {'predicted':>10} {'error':>7}")
    errors = []
    for level in result.levels:
        diagnosis = level.diagnosis
        if diagnosis is None or diagnosis.predicted_max_throughput is None:
            print(f"{level.load:>5g} {level.throughput:>8.1f} {'-':>14}")
            continue
        error = diagnosis.predicted_max_throughput / saturated - 1
        errors.append(abs(error))
        print(
            f"{level.load:>5g} {level.throughput:>8.1f} {diagnosis.bound:>14} {diagnosis.limiting_step!s:>14} "
            f"{diagnosis.predicted_max_throughput:>10.1f} {error:>+7.0%}"
        )
    if errors:
        within = sum(error <= GOAL for error in errors)
        print(
            f"  within {GOAL:.0%} at {within} of {len(errors)} levels; median error {sorted(errors)[len(errors) // 2]:.0%}"
        )


if __name__ == "__main__":
    main()
