"""Server metrics: Triton's Prometheus endpoint, scraped in the background and aggregated per window and level.

Triton exports the host's CPU utilisation and memory (`nv_cpu_*`), each GPU's utilisation, power, energy and memory
(`nv_gpu_*`, `nv_energy_consumption`, labelled `gpu_uuid`) and each model's pending requests
(`nv_inference_pending_request_count`). Only those families are parsed: the per-model counters on the same page come
through the statistics API (`server.statistics`). Triton refreshes its per-interval metrics (CPU, GPU) every
`--metrics-interval-ms` of the server (2000 by default), so scrapes more frequent than that repeat values; pending
counts are current at every scrape.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from loadgen.clock import WallClock
from loadgen.errors import LoadgenError
from loadgen.server.local import is_local, local_metrics_port

if TYPE_CHECKING:  # the HTTP client and the Prometheus parser are imported by a run that scrapes, not by every run
    from loadgen.transport.http1 import Http1Pool

DEFAULT_PORT = 8002
DEFAULT_INTERVAL_MS = 1000
SCRAPE_TIMEOUT_S = 5.0  # at least; a slow scrape only delays the next one
MAX_PAGE_BYTES = 64 << 20  # a larger metrics page fails its scrape as it comes, never buffered whole

CPU_UTILIZATION = "nv_cpu_utilization"
CPU_MEMORY_USED = "nv_cpu_memory_used_bytes"
CPU_MEMORY_TOTAL = "nv_cpu_memory_total_bytes"
GPU_UTILIZATION = "nv_gpu_utilization"
GPU_POWER = "nv_gpu_power_usage"
GPU_POWER_LIMIT = "nv_gpu_power_limit"
GPU_ENERGY = "nv_energy_consumption"
GPU_MEMORY_USED = "nv_gpu_memory_used_bytes"
GPU_MEMORY_TOTAL = "nv_gpu_memory_total_bytes"
PENDING = "nv_inference_pending_request_count"

_HOST = (CPU_UTILIZATION, CPU_MEMORY_USED, CPU_MEMORY_TOTAL)
_GPU = (GPU_UTILIZATION, GPU_POWER, GPU_POWER_LIMIT, GPU_ENERGY, GPU_MEMORY_USED, GPU_MEMORY_TOTAL)
_FAMILIES = (*_HOST, *_GPU, PENDING)
# the lines worth parsing: these families' samples and their HELP/TYPE comments (a fraction of a page)
_KEPT = _FAMILIES + tuple(f"# {kind} {name} " for kind in ("HELP", "TYPE") for name in _FAMILIES)

CSV_COLUMNS = ("Avg GPU Utilization", "Avg GPU Power Usage", "Max GPU Memory Usage", "Total GPU Memory")
"""perf_analyzer's `--verbose-csv` columns for server metrics, after its "response wait" column."""


class MetricsError(LoadgenError):
    """A metrics page that is not Triton's, or not Prometheus text."""


@dataclass(frozen=True)
class GpuSample:
    """One GPU in one scrape; None where Triton did not export the metric."""

    uuid: str
    utilization: float | None = None  # 0..1
    power_w: float | None = None
    power_limit_w: float | None = None
    energy_j: float | None = None  # cumulative since the server started
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None


@dataclass(frozen=True)
class Pending:
    """A model version's requests awaiting execution at one scrape."""

    model: str
    version: str
    count: int


@dataclass(frozen=True)
class Sample:
    """One scrape of the metrics page."""

    time_s: float  # UNIX time the scrape was sent (on the monotonic clock: see `loadgen.clock`)
    cpu_utilization: float | None = None  # 0..1 of the whole host
    cpu_memory_used_bytes: int | None = None
    cpu_memory_total_bytes: int | None = None
    gpus: tuple[GpuSample, ...] = ()  # by uuid
    pending: tuple[Pending, ...] = ()  # by model and version


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _bytes(value: float | None) -> int | None:
    return None if value is None else int(value)


def parse_metrics(text: str, time_s: float = 0.0, models: Collection[str] | None = None) -> Sample:
    """One scrape's page as a sample; `models` limits the pending counts kept (None: every model).

    Raises MetricsError for a page with no Triton metric at all, or a malformed line among the metrics kept.
    """
    from prometheus_client.parser import text_string_to_metric_families

    lines = text.splitlines()
    kept = [line for line in lines if line.startswith(_KEPT)]
    if not kept and not any(line.startswith("nv_") for line in lines):
        raise MetricsError("not Triton's metrics page: it has no nv_ metric")
    try:
        families = list(text_string_to_metric_families("\n".join(kept) + "\n"))
    except ValueError as error:
        raise MetricsError(f"malformed Prometheus text: {error}") from None
    host: dict[str, float | None] = {}
    gpus: dict[str, dict[str, float | None]] = {}
    pending: list[Pending] = []
    for family in families:
        for sample in family.samples:
            value = _number(sample.value)
            if family.name == PENDING:
                model = sample.labels.get("model", "")
                if value is not None and (models is None or model in models):
                    pending.append(Pending(model, sample.labels.get("version", ""), int(value)))
            elif family.name in _GPU and "gpu_uuid" in sample.labels:
                gpus.setdefault(sample.labels["gpu_uuid"], {})[family.name] = value
            elif family.name in _HOST:
                host[family.name] = value
    return Sample(
        time_s=time_s,
        cpu_utilization=host.get(CPU_UTILIZATION),
        cpu_memory_used_bytes=_bytes(host.get(CPU_MEMORY_USED)),
        cpu_memory_total_bytes=_bytes(host.get(CPU_MEMORY_TOTAL)),
        gpus=tuple(
            GpuSample(
                uuid=uuid,
                utilization=values.get(GPU_UTILIZATION),
                power_w=values.get(GPU_POWER),
                power_limit_w=values.get(GPU_POWER_LIMIT),
                energy_j=values.get(GPU_ENERGY),
                memory_used_bytes=_bytes(values.get(GPU_MEMORY_USED)),
                memory_total_bytes=_bytes(values.get(GPU_MEMORY_TOTAL)),
            )
            for uuid, values in sorted(gpus.items())
        ),
        pending=tuple(sorted(pending, key=lambda p: (p.model, p.version))),
    )


def energy_between(previous: Sample, sample: Sample) -> dict[str, float]:
    """Joules each GPU used from one scrape to the next: the energy counter's rise, else power x elapsed time."""
    before = {gpu.uuid: gpu for gpu in previous.gpus}
    elapsed = max(sample.time_s - previous.time_s, 0.0)
    result = {}
    for gpu in sample.gpus:
        old = before.get(gpu.uuid)
        if gpu.energy_j is not None and old is not None and old.energy_j is not None and gpu.energy_j >= old.energy_j:
            result[gpu.uuid] = gpu.energy_j - old.energy_j
        elif gpu.power_w is not None:
            result[gpu.uuid] = gpu.power_w * elapsed
    return result


@dataclass(frozen=True)
class GpuFigures:
    """One GPU over a window or level."""

    uuid: str
    utilization_avg: float | None
    utilization_max: float | None
    power_avg_w: float | None
    power_max_w: float | None
    power_limit_w: float | None
    energy_j: float | None  # used during the window: the energy counter's rise, else power x time
    memory_used_max_bytes: int | None
    memory_total_bytes: int | None  # the largest reported: a server that just started reports 0 at first


@dataclass(frozen=True)
class PendingFigures:
    """A model version's pending requests over a window or level."""

    model: str
    version: str
    avg: float
    max: int


def _avg(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _max(values: Sequence[float]) -> float | None:
    return max(values) if values else None


def _present(values: Iterable[float | None]) -> list[float]:
    return [value for value in values if value is not None]


@dataclass(frozen=True)
class ServerMetrics:
    """The server's metrics over one window, or a level's windows combined; averages weigh every scrape alike."""

    start_s: float  # UNIX times the window opened and closed
    end_s: float
    failures: int  # scrapes that failed
    cpu_utilization_avg: float | None  # 0..1 of the whole host
    cpu_utilization_max: float | None
    cpu_memory_used_max_bytes: int | None
    cpu_memory_total_bytes: int | None
    gpus: tuple[GpuFigures, ...]
    pending: tuple[PendingFigures, ...]
    samples: tuple[Sample, ...]  # every scrape, in order: the series over time

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def energy_j(self) -> float | None:
        """Joules all GPUs used; None where no GPU reports power or energy."""
        used = _present(gpu.energy_j for gpu in self.gpus)
        return sum(used) if used else None

    def energy_per_inference_j(self, inferences: int) -> float | None:
        energy = self.energy_j
        return energy / inferences if energy is not None and inferences else None

    def cpu_seconds_per_inference(self, inferences: int, cores: int) -> float | None:
        """The host's CPU time per inference: average utilisation x cores x duration / inferences."""
        if self.cpu_utilization_avg is None or not inferences:
            return None
        return self.cpu_utilization_avg * cores * self.duration_s / inferences

    def pending_of(self, model: str, version: str | None = None) -> PendingFigures | None:
        """A model's pending figures: the version named, else the one with the most pending requests."""
        matches = [p for p in self.pending if p.model == model and version in (None, p.version)]
        return max(matches, key=lambda p: p.avg) if matches else None


def aggregate(
    samples: Sequence[Sample], start_s: float, end_s: float, energy_j: Mapping[str, float], failures: int = 0
) -> ServerMetrics:
    """Figures over the scrapes of a window (or level); `energy_j` is what each GPU used in it."""
    gpus: dict[str, list[GpuSample]] = {}
    pending: dict[tuple[str, str], list[int]] = {}
    for sample in samples:
        for gpu in sample.gpus:
            gpus.setdefault(gpu.uuid, []).append(gpu)
        for p in sample.pending:
            pending.setdefault((p.model, p.version), []).append(p.count)
    cpu = _present(s.cpu_utilization for s in samples)
    return ServerMetrics(
        start_s=start_s,
        end_s=end_s,
        failures=failures,
        cpu_utilization_avg=_avg(cpu),
        cpu_utilization_max=_max(cpu),
        cpu_memory_used_max_bytes=_bytes(_max(_present(s.cpu_memory_used_bytes for s in samples))),
        cpu_memory_total_bytes=_bytes(_max(_present(s.cpu_memory_total_bytes for s in samples))),
        gpus=tuple(_gpu_figures(uuid, readings, energy_j.get(uuid)) for uuid, readings in sorted(gpus.items())),
        pending=tuple(
            PendingFigures(model, version, sum(counts) / len(counts), max(counts))
            for (model, version), counts in sorted(pending.items())
        ),
        samples=tuple(samples),
    )


def _gpu_figures(uuid: str, readings: Sequence[GpuSample], energy_j: float | None) -> GpuFigures:
    utilization = _present(r.utilization for r in readings)
    power = _present(r.power_w for r in readings)
    return GpuFigures(
        uuid=uuid,
        utilization_avg=_avg(utilization),
        utilization_max=_max(utilization),
        power_avg_w=_avg(power),
        power_max_w=_max(power),
        power_limit_w=_max(_present(r.power_limit_w for r in readings)),
        energy_j=energy_j,
        memory_used_max_bytes=_bytes(_max(_present(r.memory_used_bytes for r in readings))),
        memory_total_bytes=_bytes(_max(_present(r.memory_total_bytes for r in readings))),
    )


def combine(windows: Sequence[ServerMetrics]) -> ServerMetrics:
    """A level's figures from its windows (at least one): energy adds up, the rest is recomputed over all scrapes."""
    energy: dict[str, float] = {}
    for window in windows:
        for gpu in window.gpus:
            if gpu.energy_j is not None:
                energy[gpu.uuid] = energy.get(gpu.uuid, 0.0) + gpu.energy_j
    return aggregate(
        [sample for window in windows for sample in window.samples],
        min(window.start_s for window in windows),
        max(window.end_s for window in windows),
        energy,
        sum(window.failures for window in windows),
    )


def csv_cells(metrics: ServerMetrics) -> tuple[str, str, str, str]:
    """The `CSV_COLUMNS` cells as perf_analyzer writes them: `uuid:value;` for every GPU that reported the metric.

    Averages are printed as C++ streams print a double (`%g`), memory as whole bytes, GPUs in uuid order. The
    total memory is the largest reported where perf_analyzer takes the first scrape's: they differ only for a
    server that had not filled it in yet (0).
    """
    return (
        "".join(f"{g.uuid}:{g.utilization_avg:g};" for g in metrics.gpus if g.utilization_avg is not None),
        "".join(f"{g.uuid}:{g.power_avg_w:g};" for g in metrics.gpus if g.power_avg_w is not None),
        "".join(f"{g.uuid}:{g.memory_used_max_bytes};" for g in metrics.gpus if g.memory_used_max_bytes is not None),
        "".join(f"{g.uuid}:{g.memory_total_bytes};" for g in metrics.gpus if g.memory_total_bytes is not None),
    )


def _memory(used: int | None, total: int | None) -> str:
    return f"{used / 1e9:.1f} of {total / 1e9:.1f} GB" if used is not None and total is not None else ""


def summary_line(metrics: ServerMetrics) -> str:
    """One console line: host CPU and memory, each GPU, and the models that had requests pending."""
    if not metrics.samples:
        return f"server metrics: no scrape ({metrics.failures} failed)"
    parts = []
    if metrics.cpu_utilization_avg is not None and metrics.cpu_utilization_max is not None:
        parts.append(f"CPU {metrics.cpu_utilization_avg:.0%} avg, {metrics.cpu_utilization_max:.0%} max")
    if memory := _memory(metrics.cpu_memory_used_max_bytes, metrics.cpu_memory_total_bytes):
        parts.append(f"RAM {memory}")
    for gpu in metrics.gpus:
        figures = (
            f"{gpu.utilization_avg:.0%} busy" if gpu.utilization_avg is not None else "",
            f"{gpu.power_avg_w:.0f} W" if gpu.power_avg_w is not None else "",
            f"{gpu.energy_j:.0f} J" if gpu.energy_j is not None else "",
            _memory(gpu.memory_used_max_bytes, gpu.memory_total_bytes),
        )
        parts.append(f"{gpu.uuid} " + ", ".join(filter(None, figures)))
    busy = [p for p in metrics.pending if p.max]
    if busy:
        parts.append("pending " + ", ".join(f"{p.model} {p.avg:.1f} avg {p.max} max" for p in busy))
    return f"server ({len(metrics.samples)} scrapes): " + "; ".join(parts)


def metrics_url(server_url: str, url: str | None = None) -> str:
    """perf_analyzer's --metrics-url: `url` made absolute (http, path /metrics), else the server's host at port 8002,
    or, for a tritonserver on this machine, at the metrics port its command line gives."""
    if url is None:
        address = urlsplit(f"//{server_url}")
        host = address.hostname or "localhost"
        port = DEFAULT_PORT
        if is_local(server_url) and address.port is not None:
            port = local_metrics_port(address.port) or DEFAULT_PORT
        url = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if "://" not in url:
        url = f"http://{url}"
    return url if urlsplit(url).path not in ("", "/") else f"{url.rstrip('/')}/metrics"


class MetricsRecorder:
    """Collects scrapes into the current window; `window` closes it and opens the next."""

    def __init__(self, start_s: float) -> None:
        self._start_s = start_s
        self._samples: list[Sample] = []
        self._energy: dict[str, float] = {}
        self._failures = 0
        self._last: Sample | None = None  # the latest scrape, of this window or an earlier one

    def add(self, sample: Sample) -> None:
        if self._last is not None:
            for uuid, joules in energy_between(self._last, sample).items():
                self._energy[uuid] = self._energy.get(uuid, 0.0) + joules
        self._samples.append(sample)
        self._last = sample

    def fail(self) -> None:
        self._failures += 1

    @property
    def latest(self) -> Sample | None:
        """The latest scrape, of this window or an earlier one."""
        return self._last

    def window(self, end_s: float) -> ServerMetrics:
        """What was scraped since the previous call (or the start)."""
        result = aggregate(self._samples, self._start_s, end_s, self._energy, self._failures)
        self._start_s, self._samples, self._energy, self._failures = end_s, [], {}, 0
        return result


class MetricsCollector:
    """Scrapes Triton's metrics page every `interval_ms` in the background of the running event loop.

    A page that cannot be had is said once through `notify` (and kept in `notice`); scraping goes on, and the
    windows count the failed scrapes. Parsing reads only the families used (about 0.2 ms on the loop for a page of
    a few models, a quarter of parsing it all), so it stays on the loop. Use it as an async context manager, or
    `start` and `stop`.
    """

    def __init__(
        self,
        url: str,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        *,
        models: Collection[str] | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.interval_s = interval_ms / 1000
        self.models = models
        self.notify = notify
        self.notice: str | None = None
        # scrapes and windows are placed on the monotonic clock, mapped once to UNIX time: a clock step moves nothing
        self.clock = WallClock.now()
        self.recorder = MetricsRecorder(self.clock.unix_s())
        self.answered = False  # at least one scrape succeeded
        self._pool: Http1Pool | None = None
        self._request = b""  # the GET, built when started
        self._timeout_s = max(self.interval_s, SCRAPE_TIMEOUT_S)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> MetricsCollector:
        """Scrape once, then go on every interval; the first window opened when the collector was made."""
        from loadgen.transport.http1 import Http1Pool

        address = urlsplit(self.url)
        if address.scheme in ("http", "https") and address.hostname:  # else each scrape fails, said once
            tls = address.scheme == "https"
            self._pool = Http1Pool(
                address.hostname,
                address.port or (443 if tls else 80),
                self._timeout_s,
                ssl.create_default_context() if tls else None,
                max_response_bytes=MAX_PAGE_BYTES,
            )
        path = f"{address.path or '/'}?{address.query}" if address.query else address.path or "/"
        host = address.netloc.rpartition("@")[2]
        self._request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\n\r\n".encode()
        await self._scrape()
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def window(self) -> ServerMetrics:
        """The figures over what was scraped since the previous call (or the start)."""
        return self.recorder.window(self.clock.unix_s())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = max(due + self.interval_s, loop.time())  # a slow scrape delays the next; none are made up
            await asyncio.sleep(due - loop.time())
            await self._scrape()

    async def _scrape(self) -> None:
        from loadgen.transport.http1 import MalformedResponse, TooLarge

        sent = self.clock.unix_s()
        try:
            if self._pool is None:
                raise MetricsError("not an http or https URL")
            reply = await self._pool.request(self._request, self._timeout_s)
            if reply.status != 200:
                raise MetricsError(f"HTTP status {reply.status}")
            sample = parse_metrics(reply.body.decode("utf-8", errors="replace"), sent, self.models)
        except (OSError, MalformedResponse, MetricsError) as error:
            self.recorder.fail()
            if self.notice is None:
                reason = (
                    f"a page over {MAX_PAGE_BYTES} bytes, loadgen's limit for a metrics page"
                    if isinstance(error, TooLarge)
                    else str(error) or type(error).__name__
                )
                self.notice = (
                    f"no server metrics from {self.url} ({reason}); going on without them (give the server's with "
                    "--metrics-url HOST:PORT; `loadgen serve` prints its)"
                )
                if self.notify is not None:
                    self.notify(self.notice)
            return
        self.answered = True
        self.recorder.add(sample)

    async def __aenter__(self) -> MetricsCollector:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()
