"""Merging K shards' windows: exact at every K, and a cost per window that grows linearly with K.

Synthetic latencies (a lognormal per shard, each shard a little slower than the last) go into one encoded window
per shard, as shards log them; `combine` merges them. The merged percentiles are compared with one histogram
that recorded every value directly.

    python benchmarks/merge_scaling.py [--values 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from loadgen.measurement import LatencyStats, Recorder, Window, combine, new_histogram

SHARD_COUNTS = (1, 2, 4, 8, 16, 32, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=20_000, help="latencies per shard and window")
    parser.add_argument("--repeat", type=int, default=5, help="merges timed per K (the median is shown)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'K':>4} {'values':>9} {'merge ms':>9} {'ms/shard':>9}  exact")
    for count in SHARD_COUNTS:
        reference = new_histogram()
        parts = []
        for shard in range(count):
            recorder = Recorder()
            for value in rng.lognormal(np.log(2000 + 50 * shard), 0.5, args.values).astype(int).tolist():
                recorder.record(value)
                reference.record_value(value)
            parts.append(recorder.rotate().encode())  # as shards log them
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            merged = combine([Window.decode(part) for part in parts])
            timings.append(time.perf_counter() - started)
        exact = (
            LatencyStats.from_histogram(merged.histogram) == LatencyStats.from_histogram(reference)
            and merged.request_count == count * args.values
        )
        cost = float(np.median(timings)) * 1000
        print(f"{count:>4} {count * args.values:>9} {cost:>9.2f} {cost / count:>9.3f}  {'yes' if exact else 'NO'}")


if __name__ == "__main__":
    main()
