"""Token streams measured: how a reply's tokens are counted, the one definition of each per-request metric, and
goodput's objectives.

Every metric of a generative request is defined here once, from the times loadgen took (`sent`: the request left;
`due`: its scheduled time, the same as `sent` in a closed loop; `done`: its last response came; `events`: each
response that carried output came off the socket) and its output token count:

- time to first token (TTFT) = first event - sent; from the schedule = first event - due (open loop);
- time to second token = second event - sent;
- request latency = done - sent (the histogram of the request's response time keeps done - due);
- inter-token latency (GenAI-Perf's and AIPerf's ITL, vLLM's TPOT) = (request latency - TTFT) / (output tokens - 1),
  one value per request with two tokens or more;
- inter-event gap (vLLM's ITL, AIPerf's inter_chunk_latency) = each gap between consecutive events, pooled;
- output token throughput per user = 1 / inter-token latency (tokens/s), one value per request;
- a request is good (goodput) when its TTFT and request latency from the schedule, and its inter-token latency,
  are within every objective given (`--goodput`): what a user who asked at the scheduled time saw.

Output tokens come from the server where it gives them (OpenAI `usage`, a pipeline's token ids), else from the
run's tokenizer over the text, else one per event (flagged as `events`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen.measurement import LatencyStats, Window, record_value
from loadgen.transport.tokens import TokenReply
from loadgen.values import Objectives

SOURCES = ("server", "tokenizer", "events")  # where a request's output token count came from, best first


class TokenCounter:
    """Counts a reply's output tokens by the best source it has: the server's count, the run's tokenizer over
    its text, or its events."""

    def __init__(self, tokenizer: Any | None = None) -> None:
        self._tokenizer = tokenizer

    def count(self, reply: TokenReply) -> tuple[int, int, int | None]:
        """(output tokens, index of its source in SOURCES, the tokenizer's count when the server's was used)."""
        tokenizer = self._tokenizer
        client = len(tokenizer.encode("".join(reply.texts), add_special_tokens=False)) if tokenizer else None
        if reply.output_tokens is not None:
            return reply.output_tokens, 0, client
        if client is not None:
            return client, 1, None
        return len(reply.events), 2, None


class TokenMetrics:
    """Records generative requests into a window's token fields (see `Window`), by this module's definitions."""

    def __init__(self, counter: TokenCounter, objectives: Objectives | None) -> None:
        self._counter = counter
        self._objectives = objectives

    def record(self, window: Window, reply: TokenReply, sent: int, due: int, done: int, input_tokens: int) -> bool:
        """One answered request's token figures (times in perf_counter_ns); False when it carried no output."""
        events = reply.events
        if not events:
            return False

        def clamp(histogram: HdrHistogram | None, value: int) -> None:
            if histogram is not None and not record_value(histogram, value):
                window.clamped += 1

        tokens, source, client = self._counter.count(reply)
        ttft_us = (events[0] - sent) // 1000
        latency_us = (done - sent) // 1000
        clamp(window.ttft, ttft_us)
        if window.ttft_scheduled is not None:
            clamp(window.ttft_scheduled, (events[0] - due) // 1000)
        if len(events) > 1:
            clamp(window.ttst, (events[1] - sent) // 1000)
            gaps = window.gaps
            previous = events[0]
            for event in events[1:]:
                clamp(gaps, (event - previous) // 1000)
                previous = event
        itl_us = None
        if tokens > 1:
            itl_us = (latency_us - ttft_us) // (tokens - 1)
            clamp(window.itl, itl_us)
            if latency_us > ttft_us:
                clamp(window.user_rate, round((tokens - 1) * 1e6 / (latency_us - ttft_us)))
        clamp(window.output_tokens, tokens)
        clamp(window.input_tokens, reply.input_tokens if reply.input_tokens is not None else input_tokens)
        window.tokens_out += tokens
        if source == 0:
            window.by_server += 1
        elif source == 1:
            window.by_tokenizer += 1
        else:
            window.by_events += 1
        if client is not None:
            window.compared_server += tokens
            window.compared_client += client
        objectives = self._objectives
        if objectives is not None and objectives.met((events[0] - due) // 1000, itl_us, (done - due) // 1000):
            window.good += 1
        return True


@dataclass(frozen=True)
class TokenCounts:
    """Output tokens counted by the server and by the run's tokenizer over the same requests' text."""

    server: int
    tokenizer: int


@dataclass(frozen=True)
class MorePercentiles:
    """The percentiles AIPerf's files list beside a percentile object's (p50 to p99): the low tail and the quartile."""

    p1: int
    p5: int
    p10: int
    p25: int
    p75: int

    @classmethod
    def from_histogram(cls, histogram: HdrHistogram) -> MorePercentiles:
        if histogram.get_total_count() == 0:
            return cls(0, 0, 0, 0, 0)
        p = histogram.get_percentile_to_value_dict([1, 5, 10, 25, 75])
        return cls(p[1], p[5], p[10], p[25], p[75])


@dataclass(frozen=True)
class TokenStats:
    """A level's token-stream figures (see the module's definitions); the JSON's `"tokens"`."""

    time_to_first_token_us: LatencyStats
    time_to_second_token_us: LatencyStats
    inter_token_latency_us: LatencyStats
    inter_event_gap_us: LatencyStats
    request_latency_us: LatencyStats
    output_tokens_per_request: LatencyStats
    input_tokens_per_request: LatencyStats
    output_token_throughput_per_user: LatencyStats  # tokens/s
    output_token_throughput: float  # output tokens/s over the windows
    request_throughput: float
    goodput: float | None  # good requests/s (None: no --goodput)
    token_count_source: str  # the source most requests' counts came from: server, tokenizer or events
    time_to_first_token_from_schedule_us: LatencyStats | None = None  # open loop
    token_counts: TokenCounts | None = None  # server and tokenizer counts side by side, where both exist
    # each percentile object's p1, p5, p10, p25 and p75, by its key above (for AIPerf's files)
    more_percentiles: dict[str, MorePercentiles] = field(default_factory=dict)
    cancelled: int = 0  # requests cancelled on purpose (--request-cancellation-rate): in no other figure


def token_stats(window: Window, request_latency: HdrHistogram, objectives: bool) -> TokenStats | None:
    """A level's token figures from its merged windows (None: not a token-stream run); `request_latency` is the
    histogram of latencies from the actual send."""
    if window.ttft is None:
        return None

    def stats(histogram: HdrHistogram | None) -> LatencyStats:
        assert histogram is not None
        return LatencyStats.from_histogram(histogram)

    duration = window.duration_s
    counts = (window.by_server, window.by_tokenizer, window.by_events)
    histograms = {
        "time_to_first_token_us": window.ttft,
        "time_to_second_token_us": window.ttst,
        "inter_token_latency_us": window.itl,
        "inter_event_gap_us": window.gaps,
        "request_latency_us": request_latency,
        "output_tokens_per_request": window.output_tokens,
        "input_tokens_per_request": window.input_tokens,
        "output_token_throughput_per_user": window.user_rate,
        "time_to_first_token_from_schedule_us": window.ttft_scheduled,
    }
    requests = sum(counts)
    return TokenStats(
        time_to_first_token_us=stats(window.ttft),
        time_to_second_token_us=stats(window.ttst),
        inter_token_latency_us=stats(window.itl),
        inter_event_gap_us=stats(window.gaps),
        request_latency_us=stats(request_latency),
        output_tokens_per_request=stats(window.output_tokens),
        input_tokens_per_request=stats(window.input_tokens),
        output_token_throughput_per_user=stats(window.user_rate),
        output_token_throughput=window.tokens_out / duration if duration else 0.0,
        request_throughput=requests / duration if duration else 0.0,
        goodput=(window.good / duration if duration else 0.0) if objectives else None,
        token_count_source=SOURCES[counts.index(max(counts))] if requests else "events",
        time_to_first_token_from_schedule_us=stats(window.ttft_scheduled) if window.ttft_scheduled else None,
        token_counts=TokenCounts(window.compared_server, window.compared_client) if window.compared_client else None,
        more_percentiles={
            name: MorePercentiles.from_histogram(histogram)
            for name, histogram in histograms.items()
            if histogram is not None
        },
        cancelled=window.cancelled,
    )
