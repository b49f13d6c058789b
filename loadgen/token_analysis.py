"""The breakdown of a token stream: which step of the server's pipeline lands in the time to the first token and
which in every gap between tokens, and what to change.

A step that runs about once per output token (a detokenizer) adds its queue and compute to every gap; one that runs
once per request (a tokenizer, the generator's own `execute()`) adds them to the first token alone. Triton times a
decoupled model's `execute()` only: the generation its thread does after it is in no step's figures, so what the
steps do not explain of the first token is named as the generator's own time.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.server.statistics import ServerFigures
from loadgen.tokens import TokenStats

PER_TOKEN_SHARE = 0.5  # a step that runs at least half as often as tokens come runs per token
BOUND_SHARE = 0.2  # a step whose time is this share of the first token (or a gap) bounds it
BUSY = 0.7  # a step computing this share of its instances' time is near its capacity
QUEUE_HEAVY = 0.5  # a queue of half the step's compute or more: more instances would shorten it
FIRST_TOKEN, EVERY_GAP = "first token", "every gap"


@dataclass(frozen=True)
class TokenStep:
    """One step of the pipeline as a token stream sees it (times per execution, in microseconds)."""

    model: str
    executions_per_request: float
    queue_us: float
    compute_us: float
    busy: float  # the share of its instances' time it computed
    instances: int
    lands_in: str  # FIRST_TOKEN or EVERY_GAP


@dataclass(frozen=True)
class TokenBreakdown:
    """A token-stream level's steps, and the bound of its first token and of its gaps, in words."""

    steps: tuple[TokenStep, ...]
    first_token: str
    gaps: str
    first_token_step: str | None = None  # the step bounding the first token, when more instances would help
    gaps_step: str | None = None  # the step bounding the gaps, when more instances would help


def _steps(server: ServerFigures) -> tuple[ServerFigures, ...]:
    """The steps that run per request or per token: an ensemble's (nested ones flattened) or a BLS model's calls;
    a plain model is its own one step."""
    if not server.composing:
        return (server,)
    return tuple(step for composing in server.composing for step in _steps(composing))


def token_breakdown(server: ServerFigures, tokens: TokenStats, duration_s: float) -> TokenBreakdown | None:
    """Where a level's first token and gaps go, step by step (None when the server counted no request)."""
    requests = server.request_count
    if not requests or duration_s <= 0:
        return None
    per_request = tokens.output_tokens_per_request.avg
    steps = []
    for step in _steps(server):
        executions = step.request_count / requests
        compute = step.compute_input_us + step.compute_infer_us + step.compute_output_us
        busy = step.request_count * compute / 1e6 / (duration_s * max(step.instances, 1))
        per_token = per_request > 1 and executions >= PER_TOKEN_SHARE * per_request
        steps.append(
            TokenStep(
                step.model,
                executions,
                step.queue_us,
                compute,
                busy,
                step.instances,
                EVERY_GAP if per_token else FIRST_TOKEN,
            )
        )
    first_token, first_step = _first_token(steps, tokens)
    gaps, gaps_step = _gaps(steps, tokens)
    return TokenBreakdown(tuple(steps), first_token, gaps, first_step, gaps_step)


def _wants_instances(step: TokenStep) -> bool:
    """Whether more instances would shorten the step's time: its queue is long, or it is near its capacity."""
    return step.queue_us >= QUEUE_HEAVY * step.compute_us or step.busy >= BUSY


def _advice(step: TokenStep) -> str:
    if _wants_instances(step):
        return f"add an instance (instance_group count {step.instances} -> {step.instances + 1})"
    return "make its compute faster (its queue is short: more instances would not help)"


def _named(step: TokenStep) -> str | None:
    """The step to add an instance to, when the advice is to add one."""
    return step.model if _wants_instances(step) else None


def _ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


def _first_token(steps: list[TokenStep], tokens: TokenStats) -> tuple[str, str | None]:
    """Every step lies on the first token's path once: the once-per-request steps, and one pass through each
    per-token step (the first token goes through the detokenizer too)."""
    ttft = tokens.time_to_first_token_us.avg
    explained = sum(step.queue_us + step.compute_us for step in steps)
    worst = max(steps, key=lambda step: step.queue_us + step.compute_us, default=None)
    if worst is not None and ttft > 0 and (worst.queue_us + worst.compute_us) >= BOUND_SHARE * ttft:
        path = "each request waits" if worst.lands_in == FIRST_TOKEN else "each token, the first too, waits"
        return (
            f"{worst.model} bounds the first token: {path} {_ms(worst.queue_us)} in its queue and "
            f"{_ms(worst.compute_us)} in its compute, {(worst.queue_us + worst.compute_us) / ttft:.0%} of the "
            f"{_ms(ttft)} to the first token ({worst.busy:.0%} busy): {_advice(worst)}"
        ), _named(worst)
    return (
        f"the generator's own time bounds the first token: the steps explain {_ms(explained)} of its {_ms(ttft)}; the "
        "rest is generation (prefill) that Triton's statistics do not show (a decoupled model's are of execute() "
        "alone when it answers from a thread)"
    ), None


def _gaps(steps: list[TokenStep], tokens: TokenStats) -> tuple[str, str | None]:
    itl = tokens.inter_token_latency_us.avg
    every = [step for step in steps if step.lands_in == EVERY_GAP]
    if not every:
        return f"no step runs per token: the {_ms(itl)} between tokens is the generator's own pace", None
    worst = max(every, key=lambda step: (step.busy, step.queue_us + step.compute_us))
    took = worst.queue_us + worst.compute_us
    if worst.busy >= BUSY or (itl > 0 and took >= BOUND_SHARE * itl):
        capacity = worst.instances * 1e6 / worst.compute_us if worst.compute_us else 0.0
        return (
            f"{worst.model} bounds the gaps: it runs once per token ({worst.executions_per_request:.1f} times per "
            f"request) and is {worst.busy:.0%} busy; at {_ms(worst.compute_us)} a token its {worst.instances} "
            f"instance(s) serve at most {capacity:.0f} tokens/s over all streams (measured "
            f"{tokens.output_token_throughput:.0f}), and its {_ms(worst.queue_us)} queue delays every token "
            f"(inter-token latency {_ms(itl)}): {_advice(worst)}"
        ), _named(worst)
    return (
        f"the generator's pace bounds the gaps: the per-token step {worst.model} takes {_ms(took)} of the "
        f"{_ms(itl)} between tokens ({worst.busy:.0%} busy)"
    ), None
