"""Server metrics: parsing recorded /metrics pages, window and level math, perf_analyzer's CSV cells, the collector."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path

import dacite
import pytest

import loadgen
from loadgen.server import EmbeddedServer, free_port
from loadgen.server.metrics import (
    CSV_COLUMNS,
    MAX_PAGE_BYTES,
    GpuSample,
    MetricsCollector,
    MetricsError,
    MetricsRecorder,
    Pending,
    Sample,
    ServerMetrics,
    combine,
    csv_cells,
    energy_between,
    metrics_url,
    parse_metrics,
    summary_line,
)
from tests.fake_http1 import fake_http1

DATA = Path(__file__).parent / "data"
CPU_PAGE = (DATA / "metrics_cpu.txt").read_text()  # the embedded tritonserver 2.51 under load, recorded
GPU_PAGE = (DATA / "metrics_gpu.txt").read_text()  # two GPUs, written from Triton's documented metric names
GPU_A = "GPU-1b3d7f20-8e4a-4a6c-b5d2-7c9e0f3a6b14"
GPU_B = "GPU-6a2e9c4f-0d1b-4c3e-9f7a-2b8d5e1c0a93"


def test_the_cpu_servers_page() -> None:
    sample = parse_metrics(CPU_PAGE, 12.5)
    assert sample.time_s == 12.5
    assert sample.cpu_utilization == pytest.approx(0.9850746268656716)
    assert sample.cpu_memory_used_bytes == 2008997888
    assert sample.cpu_memory_total_bytes == 25276502016
    assert sample.gpus == ()  # no GPU (and no DCGM) on this machine
    assert sample.pending == (
        Pending("classifier", "1", 0),
        Pending("ensemble_python_resnet50", "1", 0),
        Pending("identity_uint8", "1", 0),
        Pending("preprocessing", "1", 7),
    )


def test_a_gpu_servers_page() -> None:
    sample = parse_metrics(GPU_PAGE)
    assert sample.gpus == (  # in uuid order
        GpuSample(GPU_A, 0.25, 95.5, 300.0, 98765.25, 2147483648, 42949672960),
        GpuSample(GPU_B, 0.5, 210.25, 300.0, 123456.5, 4294967296, 42949672960),
    )
    assert sample.cpu_utilization == 0.4375
    assert sample.pending == (Pending("resnet50", "1", 12), Pending("resnet50", "2", 0))


def test_metrics_the_server_does_not_export_are_none() -> None:
    page = 'nv_inference_pending_request_count{model="m",version="1"} 3\nnv_gpu_utilization{gpu_uuid="GPU-x"} NaN\n'
    sample = parse_metrics(page)
    assert (sample.cpu_utilization, sample.cpu_memory_used_bytes, sample.cpu_memory_total_bytes) == (None, None, None)
    assert sample.gpus == (GpuSample("GPU-x"),)
    assert parse_metrics("nv_cpu_utilization 0.5\n").pending == ()


def test_pending_counts_can_be_limited_to_some_models() -> None:
    assert parse_metrics(CPU_PAGE, models={"preprocessing"}).pending == (Pending("preprocessing", "1", 7),)


def test_garbage_is_a_clear_error() -> None:
    with pytest.raises(MetricsError, match="no nv_ metric"):
        parse_metrics("<html><body>404 Not Found</body></html>")
    with pytest.raises(MetricsError, match="no nv_ metric"):
        parse_metrics("")
    with pytest.raises(MetricsError, match="malformed"):
        parse_metrics(CPU_PAGE.replace("nv_cpu_utilization 0.98", "nv_cpu_utilization zero"))
    # a broken line of a family loadgen does not read is not even parsed
    assert parse_metrics(CPU_PAGE.replace("nv_inference_count{", "nv_inference_count{{")).cpu_utilization


def _gpu(time_s: float, energy: float | None, power: float | None, **more: float) -> Sample:
    return Sample(time_s, gpus=(GpuSample("GPU-x", energy_j=energy, power_w=power, **more),))  # type: ignore[arg-type]


def test_energy_is_the_counters_rise_else_power_times_time() -> None:
    assert energy_between(_gpu(10, 1000.0, 50.0), _gpu(12, 1300.0, 200.0)) == {"GPU-x": 300.0}
    assert energy_between(_gpu(10, None, 50.0), _gpu(12, None, 200.0)) == {"GPU-x": 400.0}
    # a counter that went back (the server restarted) falls back on power
    assert energy_between(_gpu(10, 1000.0, 50.0), _gpu(12, 5.0, 100.0)) == {"GPU-x": 200.0}
    assert energy_between(_gpu(10, None, None), _gpu(12, None, None)) == {}
    assert energy_between(Sample(10), _gpu(12, 7.0, None)) == {}


def test_windows_aggregate_their_scrapes() -> None:
    recorder = MetricsRecorder(start_s=100.0)
    recorder.add(Sample(100.0, cpu_utilization=0.5, cpu_memory_used_bytes=10, cpu_memory_total_bytes=100))
    recorder.add(Sample(101.0, cpu_utilization=1.0, cpu_memory_used_bytes=30, cpu_memory_total_bytes=100))
    recorder.fail()
    first = recorder.window(101.5)
    assert (first.start_s, first.end_s, first.duration_s, first.failures) == (100.0, 101.5, 1.5, 1)
    assert (first.cpu_utilization_avg, first.cpu_utilization_max) == (0.75, 1.0)
    assert (first.cpu_memory_used_max_bytes, first.cpu_memory_total_bytes) == (30, 100)
    assert [s.time_s for s in first.samples] == [100.0, 101.0]
    empty = recorder.window(103.0)
    assert (empty.start_s, empty.samples, empty.failures, empty.cpu_utilization_avg) == (101.5, (), 0, None)


def test_window_energy_counts_from_the_last_scrape_before_it() -> None:
    recorder = MetricsRecorder(start_s=0.0)
    recorder.add(_gpu(0, 1000.0, 100.0, utilization=0.2, memory_used_bytes=5, memory_total_bytes=80))
    recorder.window(0.5)  # dropped, as the sweep drops what ran before a level
    recorder.add(_gpu(1, 1100.0, 100.0, utilization=0.4, memory_used_bytes=7, memory_total_bytes=80))
    recorder.add(_gpu(2, 1250.0, 150.0, utilization=0.6, memory_used_bytes=6, memory_total_bytes=80))
    (gpu,) = recorder.window(2.5).gpus
    assert gpu.energy_j == 250.0
    assert (gpu.utilization_avg, gpu.utilization_max) == (pytest.approx(0.5), 0.6)
    assert (gpu.power_avg_w, gpu.power_max_w) == (125.0, 150.0)
    assert (gpu.memory_used_max_bytes, gpu.memory_total_bytes) == (7, 80)
    recorder.add(_gpu(3, None, 200.0))  # no counter any more: power x time since the last scrape
    (later,) = recorder.window(3.5).gpus
    assert later.energy_j == 200.0


def _window(start: float, utilizations: list[float], pending: list[int], energy: float) -> ServerMetrics:
    """A window whose GPU counter rises by `energy` from a scrape before it."""
    recorder = MetricsRecorder(start - 1)
    recorder.add(_gpu(start - 1, 0.0, None))
    recorder.window(start)
    for i, (utilization, count) in enumerate(zip(utilizations, pending, strict=True)):
        gpus = _gpu(0, energy * (i + 1) / len(utilizations), 100.0, utilization=utilization).gpus
        recorder.add(Sample(start + i, cpu_utilization=utilization, gpus=gpus, pending=(Pending("m", "1", count),)))
    return recorder.window(start + len(utilizations))


def test_a_level_combines_its_windows_exactly() -> None:
    windows = [_window(0.0, [0.2], [4], 10.0), _window(1.0, [0.6, 0.6, 0.6], [0, 1, 1], 30.0)]
    level = combine(windows)
    assert (level.start_s, level.end_s, len(level.samples)) == (0.0, 4.0, 4)
    assert level.cpu_utilization_avg == pytest.approx(0.5)  # weighted by scrapes: (0.2 + 3 x 0.6) / 4
    assert level.cpu_utilization_max == 0.6
    (gpu,) = level.gpus
    assert gpu.energy_j == 40.0  # the windows' energies add up
    assert gpu.utilization_avg == pytest.approx(0.5)
    assert level.energy_j == 40.0
    assert level.energy_per_inference_j(80) == 0.5
    pending = level.pending_of("m")
    assert pending is not None and (pending.avg, pending.max) == (1.5, 4)
    assert level.pending_of("m", "2") is None
    assert level.cpu_seconds_per_inference(inferences=8, cores=2) == pytest.approx(0.5 * 2 * 4.0 / 8)


def test_the_figures_survive_json() -> None:
    recorder = MetricsRecorder(0.0)
    for time_s in (1.0, 2.0):
        recorder.add(parse_metrics(GPU_PAGE, time_s))
    window = recorder.window(2.5)
    document = json.loads(json.dumps(asdict(window)))
    assert dacite.from_dict(ServerMetrics, document, dacite.Config(cast=[tuple])) == window


def test_csv_cells_as_perf_analyzer_writes_them() -> None:
    recorder = MetricsRecorder(0.0)
    recorder.add(parse_metrics(GPU_PAGE, 1.0))
    recorder.add(parse_metrics(GPU_PAGE.replace("} 0.25", "} 0.3").replace("} 2147483648", "} 3221225472"), 2.0))
    cells = csv_cells(recorder.window(2.0))
    assert dict(zip(CSV_COLUMNS, cells, strict=True)) == {
        "Avg GPU Utilization": f"{GPU_A}:0.275;{GPU_B}:0.5;",
        "Avg GPU Power Usage": f"{GPU_A}:95.5;{GPU_B}:210.25;",
        "Max GPU Memory Usage": f"{GPU_A}:3221225472;{GPU_B}:4294967296;",
        "Total GPU Memory": f"{GPU_A}:42949672960;{GPU_B}:42949672960;",
    }
    recorder.add(Sample(3.0, gpus=(GpuSample("GPU-z", utilization=0.8341708542713567),)))
    assert csv_cells(recorder.window(3.0)) == ("GPU-z:0.834171;", "", "", "")  # a double as a C++ stream prints it
    cpu_only = MetricsRecorder(0.0)
    cpu_only.add(parse_metrics(CPU_PAGE, 1.0))
    assert csv_cells(cpu_only.window(1.0)) == ("", "", "", "")


def test_summary_line() -> None:
    recorder = MetricsRecorder(0.0)
    recorder.add(parse_metrics(CPU_PAGE, 1.0))
    line = summary_line(recorder.window(1.0))
    assert line == "server (1 scrapes): CPU 99% avg, 99% max; RAM 2.0 of 25.3 GB; pending preprocessing 7.0 avg 7 max"
    recorder.add(parse_metrics(GPU_PAGE, 2.0))
    # no scrape of this GPU before: its energy is its power over the second since the previous scrape
    assert f"{GPU_B} 50% busy, 210 W, 210 J, 4.3 of 42.9 GB;" in summary_line(recorder.window(2.0))
    recorder.fail()
    assert summary_line(recorder.window(3.0)) == "server metrics: no scrape (1 failed)"


@pytest.mark.parametrize(
    ("server", "url", "expected"),
    [
        ("localhost:8001", None, "http://localhost:8002/metrics"),
        ("10.0.0.5", None, "http://10.0.0.5:8002/metrics"),
        ("[::1]:8001", None, "http://[::1]:8002/metrics"),
        ("localhost:8001", "localhost:9002", "http://localhost:9002/metrics"),
        ("localhost:8001", "triton:8002/metrics", "http://triton:8002/metrics"),
        ("localhost:8001", "https://triton/custom/path", "https://triton/custom/path"),
    ],
)
def test_metrics_url(server: str, url: str | None, expected: str) -> None:
    assert metrics_url(server, url) == expected


def test_the_collector_scrapes_the_real_server_around_a_load(examples_server: EmbeddedServer) -> None:
    async def run() -> ServerMetrics:
        url = metrics_url(examples_server.grpc_url, examples_server.metrics_url)
        async with MetricsCollector(url, interval_ms=100, models={"identity_uint8"}) as collector:
            collector.window()  # what was scraped before the load
            await loadgen.profile(
                examples_server.grpc_url,
                "identity_uint8",
                concurrency=2,
                measurement_interval=300,
                max_trials=3,
                stability_percentage=1000,
            )
            windows = [collector.window()]
            while len(combine(windows).samples) < 2:
                await asyncio.sleep(0.1)
                windows.append(collector.window())
            assert collector.answered and collector.notice is None
            return combine(windows)

    metrics = asyncio.run(run())
    assert metrics.failures == 0
    assert all(s.cpu_utilization is not None and 0.0 <= s.cpu_utilization <= 1.0 for s in metrics.samples)
    assert metrics.cpu_utilization_avg is not None and 0.0 <= metrics.cpu_utilization_avg <= 1.0
    assert metrics.cpu_memory_total_bytes and metrics.cpu_memory_used_max_bytes
    assert [(p.model, p.version) for p in metrics.pending] == [("identity_uint8", "1")]
    assert metrics.gpus == ()
    assert csv_cells(metrics) == ("", "", "", "")


def test_an_endpoint_that_does_not_answer_is_said_once() -> None:
    notices: list[str] = []

    async def run() -> int:
        url = f"http://127.0.0.1:{free_port()}/metrics"
        failures = 0
        async with MetricsCollector(url, interval_ms=20, notify=notices.append) as collector:
            while failures < 3:
                await asyncio.sleep(0.02)
                window = collector.window()
                assert window.samples == ()
                failures += window.failures
            assert not collector.answered
        return failures

    assert asyncio.run(run()) >= 3
    assert len(notices) == 1
    assert notices[0].startswith("no server metrics from http://127.0.0.1:") and "going on without them" in notices[0]


def test_a_url_that_is_not_http_is_said_once() -> None:
    notices: list[str] = []

    async def run() -> ServerMetrics:
        async with MetricsCollector("ftp://triton/metrics", interval_ms=20, notify=notices.append) as collector:
            await asyncio.sleep(0.1)
            return collector.window()

    window = asyncio.run(run())
    assert window.samples == () and window.failures >= 2
    assert notices == [
        "no server metrics from ftp://triton/metrics (not an http or https URL); going on without them (give the "
        "server's with --metrics-url HOST:PORT; `loadgen serve` prints its)"
    ]


@pytest.mark.parametrize("fault", ["huge_body", "endless_chunked"])  # over the bound by Content-Length, and as it comes
def test_a_page_over_the_bound_is_a_failed_scrape_said_once(fault: str) -> None:
    notices: list[str] = []

    async def run(url: str) -> ServerMetrics:
        async with MetricsCollector(url, interval_ms=60_000, notify=notices.append) as collector:
            return collector.window()  # the first scrape, made as it started; then stop returns

    with fake_http1(fault) as fake:
        url = f"http://{fake.url}/metrics"
        window = asyncio.run(run(url))
    assert window.samples == () and window.failures == 1
    assert notices == [
        f"no server metrics from {url} (a page over {MAX_PAGE_BYTES} bytes, loadgen's limit for a metrics page); "
        "going on without them (give the server's with --metrics-url HOST:PORT; `loadgen serve` prints its)"
    ]
