"""What a sender thread in the controller's process would pay (issue 28's layouts b and c): how late a thread that
sleeps to precise times wakes while another thread of the same process runs Python code (control work: parsing,
aggregation, rendering), against the same while the other thread is idle, at the interpreter's default switch
interval and at a short one.

    python benchmarks/gil_wake.py [--seconds 5] [--period-us 1000]

Each wake is one `time.sleep(period)` timed on its own. Prints, for each case, the wakes over 1 ms late and the
worst; the same run's cases compare (a shared machine
adds its own lateness to all of them alike).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time


def wakes(seconds: float, period_ns: int, busy: bool) -> list[int]:
    """Lateness (ns) of each precise wake of a sleeping thread, another thread running Python meanwhile if `busy`."""
    done = threading.Event()

    def control() -> None:
        total = 0
        while not done.is_set():
            total += sum(range(1000))  # pure Python: holds the interpreter until it is asked to let go

    other = threading.Thread(target=control, daemon=True) if busy else None
    if other is not None:
        other.start()
    late: list[int] = []
    end = time.perf_counter_ns() + int(seconds * 1e9)
    while (now := time.perf_counter_ns()) < end:
        due = now + period_ns  # each wake on its own: a late one does not make the next late
        time.sleep(period_ns / 1e9)
        late.append(time.perf_counter_ns() - due)
    done.set()
    if other is not None:
        other.join()
    return late


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--period-us", type=int, default=1000)
    args = parser.parse_args()
    default = sys.getswitchinterval()
    for interval in (default, 0.0005):
        sys.setswitchinterval(interval)
        for busy in (False, True):
            late = wakes(args.seconds, args.period_us * 1000, busy)
            over = sum(1 for value in late if value > 1_000_000)
            print(
                f"switch interval {interval * 1000:.1f} ms, other thread {'running Python' if busy else 'idle':14}: "
                f"{over / len(late):6.1%} of {len(late)} wakes over 1 ms late, worst {max(late) / 1e6:.1f} ms",
                flush=True,
            )
    sys.setswitchinterval(default)


if __name__ == "__main__":
    main()
