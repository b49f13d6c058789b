"""Reports of real runs: JSON read back, and the same result object behind every format."""

from __future__ import annotations

import base64
import html
import json
import re
import sys
from pathlib import Path

import pytest

import loadgen
from loadgen.cli import main
from loadgen.errors import LoadgenError, MissingExtraError, OptionError
from loadgen.reports import ConsoleProgress, make_console, write_json
from loadgen.server import EmbeddedServer
from tests.helpers import SAMPLE_JPEG

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.server
@pytest.mark.parametrize("name", ["ensemble_result", "rate_result"])
def test_a_saved_run_reopens_as_the_same_result(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(name)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    write_json(result, first)
    reloaded = loadgen.load_result(first)
    write_json(reloaded, second)
    assert second.read_text() == first.read_text()
    assert reloaded == result  # dataclass equality: every nested figure rebuilt as its own type
    level = reloaded.levels[-1]
    assert level.trend and (level.server is not None or level.send_lag_us is not None)


def test_a_file_that_is_not_a_result_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"model": "m", "levels": []}))
    with pytest.raises(LoadgenError, match=r"cannot read a loadgen result from .*broken\.json"):
        loadgen.load_result(broken)
    with pytest.raises(LoadgenError, match="cannot read"):
        loadgen.load_result(tmp_path / "missing.json")


def test_the_dataframe_has_a_row_per_level_and_each_steps_time(ensemble_result: loadgen.ProfileResult) -> None:
    frame = ensemble_result.to_dataframe()
    assert frame.index.name == "concurrency" and list(frame.index) == [1, 2]
    assert {"throughput", "avg_us", "p50_us", "p90_us", "p95_us", "p99_us", "error_count", "stable"} <= set(frame)
    for step in ("preprocessing", "classifier"):
        assert (frame[f"{step}.compute_us"] > 0).all()
        assert (frame[f"{step}.queue_us"] >= 0).all()
    level = ensemble_result.levels[1]
    assert frame.loc[2, "throughput"] == level.throughput  # read from the result, not recomputed
    assert frame.loc[2, "p99_us"] == level.latency_us.p99
    assert frame.loc[2, "bottleneck"] == (level.bottleneck.name if level.bottleneck else None)


def test_the_open_loop_dataframe_is_indexed_by_rate(rate_result: loadgen.ProfileResult) -> None:
    frame = rate_result.to_dataframe()
    assert frame.index.name == "request_rate" and list(frame.index) == [50.0, 100.0]
    assert {"send_rate", "service_p99_us", "send_lag_p99_us", "delayed_share"} <= set(frame)


def test_a_notebook_shows_a_table_and_the_verdict(ensemble_result: loadgen.ProfileResult) -> None:
    shown = ensemble_result._repr_html_()
    assert shown.count("<tr") == 2 + len(ensemble_result.levels)  # two header rows, one row per level
    assert '<th colspan="2" class="group">preprocessing</th>' in shown
    diagnosis = ensemble_result.diagnosis
    assert diagnosis is not None and f"Bound: {html.escape(diagnosis.name)}" in shown
    assert f"the lowest capacity ({diagnosis.limiting_step})" in shown
    assert repr(ensemble_result).startswith("ProfileResult(model='ensemble_python_resnet50', mode='concurrency'")
    assert len(repr(ensemble_result)) < 200


@pytest.mark.parametrize("kind", ["curve", "percentiles", "steps"])
def test_plots(ensemble_result: loadgen.ProfileResult, kind: str) -> None:
    figure = ensemble_result.plot(kind)
    axes = figure.axes[0]
    assert axes.get_title(loc="left").startswith("ensemble_python_resnet50: ")
    if kind == "steps":  # queue and compute per step, and the client's latency
        labels = [text.get_text() for text in axes.get_legend().get_texts()]
        assert "client avg latency" in labels and "classifier compute" in labels


def test_an_unknown_plot_kind_is_named(ensemble_result: loadgen.ProfileResult) -> None:
    with pytest.raises(OptionError, match="plot kind 'bars': choose curve, percentiles, steps"):
        ensemble_result.plot("bars")


def test_a_missing_extra_is_a_clear_error(
    ensemble_result: loadgen.ProfileResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in list(sys.modules):
        if module.startswith(("pandas", "matplotlib", "loadgen.reports.dataframe", "loadgen.reports.plot")):
            monkeypatch.delitem(sys.modules, module)
    monkeypatch.delitem(sys.modules, "loadgen.reports.html", raising=False)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pandas is not installed.*pip install 'loadgen\[dataframe\]'"):
        ensemble_result.to_dataframe()
    with pytest.raises(MissingExtraError, match=r"matplotlib is not installed.*pip install 'loadgen\[report\]'"):
        ensemble_result.save_html("never.html")
    assert "preprocessing" in ensemble_result._repr_html_()  # the table needs neither


def _embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)]


def _plots(result: loadgen.ProfileResult) -> int:
    """The report's plots: the curve, the percentiles, the steps, and the host's metrics when they were scraped
    (loadgen finds a local server's metrics port)."""
    return 3 + any(level.metrics is not None for level in result.levels)


def test_the_command_writes_a_self_contained_html_report_and_a_plot(
    examples_server: EmbeddedServer, tmp_path: Path
) -> None:
    report, curve, saved = tmp_path / "report.html", tmp_path / "curve.png", tmp_path / "result.json"
    run = ["-u", examples_server.grpc_url, "-m", "ensemble_python_resnet50", "--input-data", str(SAMPLE_JPEG)]
    run += ["--concurrency", "1:2", "-p", "300", "-s", "1000", "-r", "5", "-q"]
    status = main([*run, "--html", str(report), "--plot", str(curve), "--json", str(saved)])
    assert status == 0
    page = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing to fetch: no network needed
    assert "<script" not in page
    images = _embedded_images(page)
    result = loadgen.load_result(saved)
    assert len(images) == _plots(result) and all(image.startswith(PNG) for image in images)
    assert result.diagnosis is not None
    assert f"<strong>Bound: {html.escape(result.diagnosis.name)}</strong>" in page
    assert html.escape(result.diagnosis.reason) in page
    assert "<th>measurement_interval</th><td>300</td>" in page
    assert curve.read_bytes().startswith(PNG)


def test_save_html_matches_the_command(ensemble_result: loadgen.ProfileResult, tmp_path: Path) -> None:
    ensemble_result.save_html(tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and len(_embedded_images(page)) == _plots(ensemble_result)
    assert "<title>loadgen: ensemble_python_resnet50</title>" in page


def _ended(status: str, message: str, saturated: str | None) -> loadgen.ProfileResult:
    latency = loadgen.LatencyStats(1, 2.0, 0.0, 2, 2, 2, 2, 3)
    level = loadgen.LevelResult(None, 100.0, 50.0, 500, 0, False, latency, 10, 10.0, saturated=saturated)
    return loadgen.ProfileResult("m", "u", "request_rate", (level,), (), {}, status, message)


def test_the_console_hint_fits_why_the_sweep_ended(capsys: pytest.CaptureFixture[str]) -> None:
    progress = ConsoleProgress(make_console())
    progress.finished(_ended("unstable", "no stable measurement at 100 requests/s after 10 windows", "server"))
    saturated = capsys.readouterr().out
    assert "saturated at this rate" in saturated and "Try a longer" not in saturated
    progress.finished(_ended("unstable", "no stable measurement at 100 requests/s after 10 windows", None))
    assert "Try a longer --measurement-interval" in capsys.readouterr().out
    progress.finished(_ended("interrupted", "stopped before the sweep finished", None))
    stopped = capsys.readouterr().out
    assert "interrupted: stopped" in stopped and "Try a longer" not in stopped
