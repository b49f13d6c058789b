"""loadgen's own error on a token stream's times, and its CPU per token, against a server that records when it wrote
each chunk; NVIDIA AIPerf on the same load beside it.

The server is tests/fake_openai.py (a FAKE OpenAI-compatible server: one process, one event loop), started for each
level in a process of its own. It streams `--osl` tokens per chat request, the first `--ttft-ms` after the request
came, then one every `token ms` of the level, and records the CLOCK_MONOTONIC instant just before it wrote each
chunk (`GET /fake/emissions`), with the `id` its answer carries. The clients stamp each event on the same clock
(`time.perf_counter_ns`, in every process on Linux): loadgen when the event's bytes come off the socket, AIPerf in
its raw export (`--export-level raw`: every response's `perf_ns`). Each reply is matched to the server's record by
that `id`. For loadgen, a hook of this script alone keeps each reply's first event and event times (it wraps the
HTTP endpoint's stream reader once per request; nothing is added per token). Both clients run as their users would
run them by default: the same closed loop of exactly `--rounds` x concurrency requests (`--request-count`), prompts
of `--isl` tokens built by each from its own corpus in loadgen's tokenizer; loadgen takes each answer's token count
from the server's `usage`, AIPerf tokenizes each answer again in its record processors (its CPU is counted).

Per level (concurrency : the server's ms per token) and client, medians over `--repeats` runs (clients in turn):
- the first token's and the later tokens' delay (client event time - server write time), p50 and p99, and the
  error on the gaps between tokens ((client gap - server gap), p99 of its size);
- the tokens per second the fake wrote (the load each client reached);
- CPU per token of the client and of the fake (user + system: AIPerf's whole process tree, loadgen's process less
  this script's CPU sampling thread, the fake's process; over the load's span: the first request's arrival to the
  last chunk written), and how busy each was
  (CPU s per s: 1.0 is one core). A fake near 1.0 is the limit, not the client; its gaps p99 against the level's
  setting shows how late it wrote. At 512 streams one event loop cannot write every 5 ms: use 50-100 ms there.

    python benchmarks/llm_client_overhead.py [--levels 1:5,64:20,512:100] [--rounds 3] [--repeats 3] [--no-aiperf]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from itertools import pairwise
from pathlib import Path
from typing import Any

import psutil
from common import BENCHMARKS, PerfAnalyzerError, aiperf_path

import loadgen
from loadgen.transport.endpoints import Chat, EventReader, TokenEndpoint
from loadgen.transport.tokens import TokenReply

ROOT = BENCHMARKS.parent
TOKENIZER = ROOT / "loadgen" / "data" / "tokenizer.json"
MODEL = "fake"
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 900  # one client run, AIPerf's start-up (tens of seconds on a busy box) included
SAMPLE_S = 0.05  # CPU sampling period


@dataclass(frozen=True)
class Level:
    """One load: streams in flight, and the fake's ms per token."""

    concurrency: int
    token_ms: float


@dataclass(frozen=True)
class Stamped:
    """One reply as a client saw it: the `id` the server gave it, and when each token's event came (monotonic ns)."""

    response_id: str
    events: list[int]


@dataclass(frozen=True)
class Emitted:
    """One answer as the fake wrote it (its record of `GET /fake/emissions`)."""

    response_id: str
    arrival_ns: int
    tokens: list[int]  # when each token's chunk was written
    end_ns: int  # its last write


@dataclass(frozen=True)
class Figures:
    """One client run at one level (times in us)."""

    requests: int  # replies matched to the server's record, every token accounted for
    unmatched: int  # the server's answers of the run without such a reply
    first_p50: float
    first_p99: float
    later_p50: float
    later_p99: float
    gap_error_p99: float
    tokens_per_s: float  # the fake wrote, over the load's span
    client_cpu_per_token: float
    client_busy: float  # CPU s per s over the load's span
    fake_cpu_per_token: float
    fake_busy: float
    fake_gap_p99_ms: float  # the gaps between the fake's writes of one answer, p99


class BenchmarkError(Exception):
    """A run that could not be measured: said in one line."""


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))] if ordered else 0.0


def parse_levels(text: str) -> list[Level]:
    """`1:5,64:20` -> the levels; a bad one raises ValueError."""
    levels = []
    for part in text.split(","):
        concurrency, _, token_ms = part.partition(":")
        try:
            level = Level(int(concurrency), float(token_ms))
        except ValueError:
            raise ValueError(f"{part!r} is not CONCURRENCY:MS_PER_TOKEN") from None
        if level.concurrency < 1 or level.token_ms <= 0:
            raise ValueError(f"{part!r}: concurrency and ms per token must be positive")
        levels.append(level)
    return levels


class Tree:
    """A process and, with `children`, its descendants (listed again every REFRESH samples: psutil finds them by
    reading every process of the machine); its CPU time (user + system, seconds) including children gone since."""

    REFRESH = 20

    def __init__(self, process: psutil.Process, children: bool = False) -> None:
        self._root = process
        self._children = children
        self._processes = [process]
        self._cpu: dict[int, float] = {}  # each process's last reading, kept once it is gone
        self._samples = 0

    def cpu(self) -> float:
        if self._children and self._samples % self.REFRESH == 0:
            with suppress(psutil.Error):
                self._processes = [self._root, *self._root.children(recursive=True)]
        self._samples += 1
        for process in self._processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            self._cpu[process.pid] = times.user + times.system
        return sum(self._cpu.values())


class ThisProcess:
    """This process's CPU time but the sampler's own thread's (it reads the trees from that thread)."""

    @staticmethod
    def cpu() -> float:
        return time.process_time() - time.thread_time()


class CpuSampler:
    """Samples the CPU time of named process trees every SAMPLE_S, on CLOCK_MONOTONIC, so that a span between two
    instants of the server's record can be read off afterwards."""

    def __init__(self, trees: dict[str, Tree | ThisProcess]) -> None:
        self._trees = trees
        self.samples: list[tuple[int, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _run(self) -> None:
        while True:  # the last sample once stopped: every sample is taken from this thread
            stopping = self._stop.is_set()
            self.samples.append((time.monotonic_ns(), {name: tree.cpu() for name, tree in self._trees.items()}))
            if stopping:
                return
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def spent(self, name: str, start_ns: int, end_ns: int) -> float:
        """CPU seconds `name` spent between two instants, interpolated between samples."""

        def at(ns: int) -> float:
            before = max((s for s in self.samples if s[0] <= ns), default=self.samples[0], key=lambda s: s[0])
            after = min((s for s in self.samples if s[0] >= ns), default=self.samples[-1], key=lambda s: s[0])
            if after[0] == before[0]:
                return before[1][name]
            share = (ns - before[0]) / (after[0] - before[0])
            return before[1][name] + share * (after[1][name] - before[1][name])

        return at(end_ns) - at(start_ns)


class Fake:
    """The fake OpenAI-compatible server in a process of its own, at one level's times; what it says on stderr goes
    to `log`."""

    def __init__(self, ttft_ms: float, token_ms: float, log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "tests.fake_openai", "--tokenizer", str(TOKENIZER)]
        command += ["--ttft-ms", str(ttft_ms), "--token-ms", str(token_ms)]
        with log.open("w") as errors:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors)
        assert self.process.stdout is not None
        ready: list[bytes] = []  # its one line on stdout, read with a timeout
        reader = threading.Thread(target=lambda: ready.append(self.process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(START_TIMEOUT_S)
        line = ready[0].decode().strip() if ready else ""
        if "ready on http://" not in line:
            self.close()
            said = log.read_text(errors="replace").strip().splitlines()
            raise BenchmarkError(f"the fake server did not start: {said[-1] if said else line or 'no output'}")
        self.url = line.rsplit(" ", 1)[-1]

    def emissions(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/fake/emissions", timeout=60) as response:
            return json.load(response)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@contextmanager
def stamped_replies() -> Iterator[list[tuple[str, list[int]]]]:
    """Keeps, while open, each streamed chat reply loadgen's HTTP endpoint reads: its answer's `id` (from the first
    event that carries one) and its events' times. A dict lookup per event, one append per request."""
    kept: list[tuple[str, list[int]]] = []
    ids: dict[int, str] = {}
    original_read, original_streamed = Chat.read, TokenEndpoint._streamed

    def read(self: Chat, answer: dict[str, Any], reply: TokenReply, ns: int, streamed: bool) -> None:
        ids.setdefault(id(reply), str(answer.get("id", "")))
        original_read(self, answer, reply, ns, streamed)

    def streamed(self: TokenEndpoint, reader: EventReader) -> TokenReply:
        reply = original_streamed(self, reader)
        kept.append((ids.pop(id(reply), ""), reply.events))
        return reply

    Chat.read, TokenEndpoint._streamed = read, streamed  # type: ignore[method-assign]
    try:
        yield kept
    finally:
        Chat.read, TokenEndpoint._streamed = original_read, original_streamed  # type: ignore[method-assign]


@dataclass(frozen=True)
class Load:
    """What every client sends at one level: `requests` streamed chat requests of `isl` prompt tokens asking `osl`
    tokens each, `concurrency` in flight, to the fake at `url`."""

    url: str
    concurrency: int
    requests: int
    isl: int
    osl: int


Run = tuple[list[Stamped], CpuSampler]  # a client's replies, and its CPU and the fake's sampled while it ran


def run_loadgen(load: Load, fake: Tree) -> Run:
    """loadgen in this process: one window of exactly the load's requests."""
    with stamped_replies() as kept, CpuSampler({"fake": fake, "client": ThisProcess()}) as sampler:
        result = loadgen.profile_sync(
            load.url, MODEL, endpoint_type="chat", streaming=True, concurrency=load.concurrency,
            request_count=load.requests, isl=load.isl, osl=load.osl,
        )  # fmt: skip
    errors = {text: count for level in result.levels for text, count in level.errors.items()}
    if errors:
        raise BenchmarkError(f"loadgen: {sum(errors.values())} requests failed: {next(iter(errors))}")
    return [Stamped(response_id, events) for response_id, events in kept], sampler


class AIPerf:
    """AIPerf as a program, with a tokenizer folder it loads offline (loadgen's tokenizer.json saved as a Hugging
    Face tokenizer); each run's files go into a folder of `directory`."""

    def __init__(self, command: str, directory: Path) -> None:
        self.command = command
        self.directory = directory
        self.tokenizer = directory / "tokenizer"
        code = (
            "import sys; from transformers import PreTrainedTokenizerFast; "
            "PreTrainedTokenizerFast(tokenizer_file=sys.argv[1]).save_pretrained(sys.argv[2])"
        )
        python = Path(command).with_name("python")
        done = subprocess.run(
            [str(python), "-c", code, str(TOKENIZER), str(self.tokenizer)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BenchmarkError(f"AIPerf's tokenizer folder: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
        version = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('aiperf'))"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        self.name = f"AIPerf {version.stdout.strip()}".strip()

    def __call__(self, load: Load, fake: Tree) -> Run:
        out = Path(tempfile.mkdtemp(prefix="aiperf-", dir=self.directory))
        command = [
            self.command, "profile", "-m", MODEL, "--url", load.url, "--endpoint-type", "chat", "--streaming",
            "--tokenizer", str(self.tokenizer), "--concurrency", str(load.concurrency),
            "--request-count", str(load.requests), "--isl", str(load.isl), "--osl", str(load.osl),
            "--export-level", "raw", "--artifact-dir", str(out / "artifacts"), "--ui-type", "none",
        ]  # fmt: skip
        env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}  # it refuses the folder so
        log = out / "aiperf.log"
        with log.open("w") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=out)
            with CpuSampler({"fake": fake, "client": Tree(psutil.Process(process.pid), children=True)}) as sampler:
                try:
                    status = process.wait(RUN_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    raise BenchmarkError(f"AIPerf did not finish within {RUN_TIMEOUT_S} s (log: {log})") from None
        raw = out / "artifacts" / "profile_export_raw.jsonl"
        if status != 0 or not raw.is_file():
            last = log.read_text(errors="replace").strip().splitlines()
            raise BenchmarkError(f"AIPerf exited with status {status}: {last[-1] if last else 'no output'}")
        return aiperf_replies(raw), sampler


def aiperf_replies(raw: Path) -> list[Stamped]:
    """The replies of AIPerf's raw export: each response that carried a token, with its `perf_ns`."""
    replies = []
    with raw.open() as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("status") != 200 or record["metadata"].get("benchmark_phase") != "profiling":
                continue
            response_id, events = "", []
            for response in record["responses"]:
                for packet in response["packets"]:
                    if packet.get("name") != "data" or packet["value"] == "[DONE]":
                        continue
                    data = json.loads(packet["value"])
                    response_id = response_id or data.get("id", "")
                    if any((choice.get("delta") or {}).get("content") for choice in data.get("choices") or []):
                        events.append(response["perf_ns"])
            replies.append(Stamped(response_id, events))
    return replies


def figures(replies: list[Stamped], emitted: list[Emitted], sampler: CpuSampler) -> Figures:
    """A run's figures: its replies against the fake's record of the same run."""
    by_id = {emission.response_id: emission for emission in emitted}
    first, later, gap_errors = [], [], []
    matched = set()
    for reply in replies:
        emission = by_id.get(reply.response_id)
        if emission is None or len(reply.events) != len(emission.tokens):
            continue
        matched.add(reply.response_id)
        delays = [(event - written) / 1e3 for event, written in zip(reply.events, emission.tokens, strict=True)]
        first.append(delays[0])
        later.extend(delays[1:])
        gap_errors.extend(abs(b - a) for a, b in pairwise(delays))
    if not first:
        raise BenchmarkError("no reply matched the server's record (ids, or token counts, differ)")
    start, end = min(e.arrival_ns for e in emitted), max(e.end_ns for e in emitted)
    span_s = (end - start) / 1e9
    tokens = sum(len(emission.tokens) for emission in emitted)
    client, fake = sampler.spent("client", start, end), sampler.spent("fake", start, end)
    gaps = [(b - a) / 1e6 for e in emitted for a, b in pairwise(e.tokens)]
    return Figures(
        requests=len(matched),
        unmatched=len(emitted) - len(matched),
        first_p50=percentile(first, 50),
        first_p99=percentile(first, 99),
        later_p50=percentile(later, 50),
        later_p99=percentile(later, 99),
        gap_error_p99=percentile(gap_errors, 99),
        tokens_per_s=tokens / span_s,
        client_cpu_per_token=client / tokens * 1e6,
        client_busy=client / span_s,
        fake_cpu_per_token=fake / tokens * 1e6,
        fake_busy=fake / span_s,
        fake_gap_p99_ms=percentile(gaps, 99),
    )


def emitted_since(fake: Fake, count: int) -> list[Emitted]:
    """The fake's answers after its first `count` (one run's), those that were whole."""
    answers = []
    for record in fake.emissions()[count:]:
        tokens = record["chunk_ns"][: record["completion_tokens"]]
        if record["status"] == 200 and record["stream"] and tokens:
            answers.append(Emitted(record["response_id"], record["arrival_ns"], tokens, record["chunk_ns"][-1]))
    return answers


def median_figures(runs: list[Figures]) -> Figures:
    """Each figure's median over runs."""
    return Figures(**{f.name: statistics.median(getattr(run, f.name) for run in runs) for f in fields(Figures)})


def table(results: dict[tuple[Level, str], list[Figures]], repeats: int) -> str:
    """The results as a Markdown table."""
    lines = [
        "| streams | ms/token | client | requests | first token p50 / p99 (us) | later tokens p50 / p99 (us) "
        "| gap error p99 (us) | tokens/s | client CPU/token (us) | client busy | fake CPU/token (us) | fake busy "
        "| fake's gaps p99 (ms) |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (level, client), runs in results.items():
        m = median_figures(runs)
        unmatched = f" (+{m.unmatched:.0f})" if m.unmatched else ""
        lines.append(
            f"| {level.concurrency} | {level.token_ms:g} | {client} | {m.requests:.0f}{unmatched} | {m.first_p50:,.0f} / "
            f"{m.first_p99:,.0f} | {m.later_p50:,.0f} / {m.later_p99:,.0f} | {m.gap_error_p99:,.0f} | "
            f"{m.tokens_per_s:,.0f} | {m.client_cpu_per_token:.1f} | {m.client_busy:.2f} | {m.fake_cpu_per_token:.1f} | {m.fake_busy:.2f} | "
            f"{m.fake_gap_p99_ms:.1f} |"
        )
    note = "requests: replies matched to the server's record per run (+ the server's answers left unmatched)"
    return "\n".join(lines) + f"\n\n(medians of {repeats} runs of each client; {note})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1:5,64:20,512:100", help="CONCURRENCY:MS_PER_TOKEN, comma-separated")
    parser.add_argument("--ttft-ms", type=float, default=20, help="the fake's first-token time")
    parser.add_argument("--isl", type=int, default=64, help="prompt tokens")
    parser.add_argument("--osl", type=int, default=32, help="tokens per answer")
    parser.add_argument("--rounds", type=int, default=3, help="requests per stream in a run (at least 20 in all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each client per level, in turns")
    parser.add_argument("--no-aiperf", action="store_true", help="loadgen alone")
    parser.add_argument("--aiperf", help="an aiperf command (default: installed into the cache by get_aiperf.sh)")
    args = parser.parse_args()
    try:
        levels = parse_levels(args.levels)
    except ValueError as error:
        parser.error(f"--levels {args.levels}: {error}")
    if min(args.isl, args.osl, args.rounds, args.repeats) < 1 or args.ttft_ms <= 0:
        parser.error("--ttft-ms, --isl, --osl, --rounds and --repeats must be positive")
    if args.aiperf and not (os.path.isfile(args.aiperf) and os.access(args.aiperf, os.X_OK)):
        parser.error(f"--aiperf {args.aiperf}: not an executable file")
    try:
        print(table(measure(levels, args), args.repeats))
    except BenchmarkError as error:
        sys.exit(f"llm_client_overhead: {error}")


def measure(levels: list[Level], args: argparse.Namespace) -> dict[tuple[Level, str], list[Figures]]:
    """Every level with each client in turn, `--repeats` times."""
    command = None
    if not args.no_aiperf:
        try:
            command = args.aiperf or aiperf_path()
        except PerfAnalyzerError as error:
            print(f"AIPerf not run: {error}", file=sys.stderr)
    results: dict[tuple[Level, str], list[Figures]] = {}
    with tempfile.TemporaryDirectory(prefix="llm-overhead-") as directory:
        clients: dict[str, Callable[[Load, Tree], Run]] = {"loadgen": run_loadgen}
        if command:
            aiperf = AIPerf(command, Path(directory))
            clients[aiperf.name] = aiperf
        for level in levels:
            fake = Fake(args.ttft_ms, level.token_ms, Path(directory) / f"fake-{level.concurrency}.log")
            try:
                load = Load(fake.url, level.concurrency, max(20, level.concurrency * args.rounds), args.isl, args.osl)
                for _ in range(args.repeats):
                    for name, client in clients.items():
                        count = len(fake.emissions())
                        replies, sampler = client(load, Tree(psutil.Process(fake.process.pid)))
                        measured = figures(replies, emitted_since(fake, count), sampler)
                        results.setdefault((level, name), []).append(measured)
                        print(f"  {level.concurrency} streams, {level.token_ms:g} ms/token, {name}: first token "
                              f"p50 {measured.first_p50:,.0f} us, later p50 {measured.later_p50:,.0f} us, "
                              f"{measured.client_cpu_per_token:.1f} us CPU/token", file=sys.stderr, flush=True)  # fmt: skip
            finally:
                fake.close()
    return results


if __name__ == "__main__":
    main()
