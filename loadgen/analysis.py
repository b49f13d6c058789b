"""Analysis: name the step that limits throughput, with the evidence and what to change."""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.server.statistics import ServerFigures

CLIENT_BOUND_SHARE = 0.5  # server time under half the client's latency, with empty queues: the client limits
WAITING_SHARE = 0.2  # queue time above this share of compute time: requests wait for an instance
SATURATED_SHARE = 0.8  # throughput above this share of a step's capacity: the step is saturated


@dataclass(frozen=True)
class Bottleneck:
    """The verdict for one level: which model holds throughput back (None: the client), and why."""

    model: str | None
    share: float  # of the profiled model's request time spent in this step's queue and compute
    queue_us: float
    compute_us: float
    capacity: float | None
    throughput: float
    reason: str
    suggestions: tuple[str, ...]

    @property
    def name(self) -> str:
        """What the verdict names: the model, or the client."""
        return self.model or "the client"


def _ms(us: float) -> str:
    return f"{us / 1000:.1f} ms" if us >= 100 else f"{us:.0f} us"


def find_bottleneck(server: ServerFigures, throughput: float, client_latency_us: float) -> Bottleneck | None:
    """The step whose queue plus compute time takes the largest share of the model's request time."""
    if server.request_count == 0 or server.request_us <= 0:
        return None
    steps = list(server.leaves())
    queue_total = sum(step.queue_us for step in steps)
    if server.request_us < CLIENT_BOUND_SHARE * client_latency_us and queue_total < WAITING_SHARE * server.request_us:
        return Bottleneck(
            model=None,
            share=server.request_us / client_latency_us,
            queue_us=queue_total,
            compute_us=server.compute_us,
            capacity=None,
            throughput=throughput,
            reason=(
                f"the server is not the limit: it spends {_ms(server.request_us)} per request of the client's "
                f"{_ms(client_latency_us)} and its queues are empty; the client or the network holds throughput back"
            ),
            suggestions=(
                "raise the concurrency (or the request rate) until server queues form",
                "run the load generator on another machine, or with more worker processes",
            ),
        )
    slowest = max(steps, key=lambda step: step.queue_us + step.compute_us)
    share = (slowest.queue_us + slowest.compute_us) / server.request_us
    return Bottleneck(
        model=slowest.model,
        share=share,
        queue_us=slowest.queue_us,
        compute_us=slowest.compute_us,
        capacity=slowest.capacity,
        throughput=throughput,
        reason=_reason(server, slowest, share, throughput),
        suggestions=_suggestions(slowest),
    )


def _reason(server: ServerFigures, step: ServerFigures, share: float, throughput: float) -> str:
    where = f"{share:.0%} of {server.model}'s {_ms(server.request_us)} per request is spent in {step.model}"
    instances = f"{step.instances} instance{'s' if step.instances != 1 else ''}"
    if step.queue_us > WAITING_SHARE * step.compute_us:
        text = f"{where}: requests wait {_ms(step.queue_us)} in its queue for its {instances}, then compute for {_ms(step.compute_us)}"
    else:
        text = f"{where}: its queue is empty and its compute takes {_ms(step.compute_us)}"
    if step.capacity:
        if throughput >= SATURATED_SHARE * step.capacity:
            text += (
                f"; it saturates near {step.capacity:.0f} infer/s, and {server.model} reached {throughput:.0f} infer/s"
            )
        else:
            text += f"; it could do about {step.capacity:.0f} infer/s, {server.model} reached {throughput:.0f} infer/s"
    return text


def _suggestions(step: ServerFigures) -> tuple[str, ...]:
    suggestions = []
    if step.queue_us > WAITING_SHARE * step.compute_us:
        suggestions.append(
            f"raise {step.model}'s instance_group count from {step.instances} to {step.instances + 1} "
            "(instances run in parallel where cores allow)"
        )
    if step.max_batch_size == 0:
        suggestions.append(
            f"dynamic batching is ruled out while {step.model} has max_batch_size: 0; "
            "give it a batch dimension (max_batch_size > 0) to allow it"
        )
    elif not step.dynamic_batching:
        suggestions.append(
            f"enable dynamic_batching for {step.model} (its max_batch_size {step.max_batch_size} allows batches)"
        )
    elif step.avg_batch < 2 and step.queue_us > WAITING_SHARE * step.compute_us:
        suggestions.append(
            f"{step.model} batches only {step.avg_batch:.1f} requests on average: "
            "raise dynamic_batching's max_queue_delay_microseconds or set preferred_batch_size"
        )
    if step.queue_us <= WAITING_SHARE * step.compute_us:
        suggestions.append(
            f"{step.model} itself must get faster: {_ms(step.compute_us)} of compute per request with an empty queue"
        )
    return tuple(suggestions)
