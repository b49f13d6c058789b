"""The HTML report: one self-contained file (styles inline, plots as embedded PNG) that opens without a network."""

from __future__ import annotations

import base64
import html
import json
import os
from typing import TYPE_CHECKING

from loadgen.outputs import write_file
from loadgen.records import TOKEN_SAMPLE
from loadgen.reports.plot import (
    curve,
    first_token_by_input,
    gaps_by_position,
    mix_timeline,
    percentiles,
    png,
    server_metrics,
    steps,
    token_timeline,
    trials,
)
from loadgen.reports.table import UNSTABLE, confidence_html, html_table, model_cell, verdict_html

if TYPE_CHECKING:
    from loadgen.results import Measurement, ProfileResult, TuneResult

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1d2330; margin: 2em auto; max-width: 1200px; padding: 0 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #dde1e8; padding-bottom: 0.2em; }
.subtitle { color: #5b6475; margin-top: 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 0.5em 0; }
th, td { padding: 0.3em 0.5em; border-bottom: 1px solid #e6e9ef; text-align: right; white-space: nowrap; }
th { background: #f4f6f9; font-weight: 600; }
th.group { text-align: center; border-bottom: 2px solid #c9ced8; }
table.sweep { display: block; overflow-x: auto; max-width: 100%; font-size: 12.5px; }
table.settings td, table.settings th { text-align: left; }
.verdict { background: #fff7e6; border-left: 4px solid #e8a33d; padding: 0.6em 1.2em; margin: 1em 0; }
.verdict p { margin: 0.4em 0; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; }
footer { color: #8a93a3; margin-top: 3em; font-size: 12px; }
"""


def _image(png_bytes: bytes, description: str) -> str:
    data = base64.b64encode(png_bytes).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(description)}"></figure>'


def _value(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _settings(result: ProfileResult) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(_value(value))}</td></tr>"
        for name, value in result.settings.items()
    )
    return f'<table class="settings">{rows}</table>'


def _inputs(result: ProfileResult) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(i.name)}</td><td>{html.escape(i.datatype)}</td><td>{list(i.shape)}</td></tr>"
        for i in result.inputs
    )
    return f'<table class="settings"><tr><th>input</th><th>datatype</th><th>shape</th></tr>{rows}</table>'


def _server_metrics(result: ProfileResult) -> str:
    figure = server_metrics(result)
    if figure is None:
        return ""
    return "<h2>The server's host</h2>" + _image(png(figure), "host CPU utilisation and pending requests over time")


def _confidence(result: ProfileResult) -> str:
    """How sure each level's figures are (nothing for a result of an older loadgen)."""
    table = confidence_html(result)
    if not table:
        return ""
    level = next(level.confidence.level for level in result.levels if level.confidence is not None)
    return f"""<h2>How sure</h2>
<p>At {level:.4g} confidence: an interval on each level's throughput (Student t over the windows it merges) and an upper
bound on each latency percentile (an order statistic of its samples, as MLPerf LoadGen's early stopping). A percentile
whose samples are too few for a bound says how many it needs; its level is marked.</p>
{table}"""


def _steps(result: ProfileResult) -> str:
    """Each step's time per level (a mix's totals have none: each model's section has its own)."""
    if result.models:
        return ""
    description = "each step's queue and compute time per request, stacked, per level"
    return f"<h2>Where the time goes</h2>\n{_image(png(steps(result)), description)}"


def _tokens(result: ProfileResult) -> str:
    """A token run's plots, from its recorded requests (nothing without them: a run over worker processes, or a
    result read back from JSON)."""
    figures = (
        (first_token_by_input(result), "time to first token against input length, per request"),
        (gaps_by_position(result), "median inter-token gap at each token position, per level"),
        (token_timeline(result), "a few requests' tokens over time"),
    )
    images = "".join(_image(png(figure), description) for figure, description in figures if figure is not None)
    if not images:
        return ""
    recorded = result.settings.get("record_requests")
    source = (
        "the requests recorded for the profile export"
        if recorded
        else f"a sample: the first {TOKEN_SAMPLE} requests of each level's windows"
    )
    return f"""<h2>Token streams</h2>
<p>Per request, from {source}.</p>
{images}"""


def _model_section(result: ProfileResult, name: str) -> str:
    """One model of a mix: its own table, curve and breakdown."""
    model = result.of_model(name)
    title = html.escape(name)
    return f"""<h2>{title}</h2>
{verdict_html(model)}
{html_table(model)}
{_image(png(curve(model)), f"{name}: p99 latency against throughput")}
{_image(png(steps(model)), f"{name}: each step's queue and compute time per request")}
"""


def _mix(result: ProfileResult) -> str:
    """A mix's part of the page: the diagnosis across its models, their timeline, and one section per model."""
    if not result.models:
        return ""
    diagnosis = result.mix_diagnosis
    across = ""
    if diagnosis is not None:
        shares = ", ".join(f"{html.escape(share.step)} {share.compute_share:.0%}" for share in diagnosis.steps)
        suggestions = "".join(f"<li>{html.escape(text)}</li>" for text in diagnosis.suggestions)
        across = (
            f'<div class="verdict"><p><strong>Across the mix: {html.escape(diagnosis.bound)}</strong></p>'
            f"<p>{html.escape(diagnosis.reason)}</p><p>Compute by step: {shares}</p><ul>{suggestions}</ul></div>"
        )
    sections = "".join(_model_section(result, model.model) for model in result.models)
    return f"""<h2>The mix</h2>
{across}
{_image(png(mix_timeline(result)), "each model's throughput and p99 latency, window by window")}
{sections}"""


def render(result: ProfileResult) -> str:
    """The report page of a run (a mix: its totals, the diagnosis across its models, and each model's section)."""
    model = html.escape(result.model)
    mode = result.mode.replace("_", " ")
    stable = "" if result.stable else f" <span {UNSTABLE}>(a level did not reach a stable measurement)</span>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>loadgen: {model}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{model}</h1>
<p class="subtitle">{html.escape(mode)} sweep of {len(result.levels)} levels at {html.escape(result.url)}{stable}</p>
{"" if result.models else verdict_html(result)}
<h2>Levels</h2>
<p>Latencies in microseconds from the client, merged over each level's last windows; a step's queue and compute
time per request as the server counts it.</p>
{html_table(result)}
{_confidence(result)}
<h2>Latency and throughput</h2>
{_image(png(curve(result)), "p99 latency against throughput, one point per level")}
{_image(png(percentiles(result)), "latency percentiles per level")}
{_steps(result)}
{_tokens(result)}
{_server_metrics(result)}
{_mix(result)}
<h2>Settings</h2>
{_settings(result)}
{_inputs(result)}
<footer>Written by loadgen.</footer>
</body>
</html>
"""


def write_html(result: ProfileResult, path: str | os.PathLike[str]) -> None:
    """Write the report page of a run (`--html`, `result.save_html`)."""
    write_file(path, render(result))


def render_tune(result: TuneResult) -> str:
    """The report page of a tuning run: the trials, throughput per trial, and the improved configs."""
    model = html.escape(result.model)
    initial = result.initial
    models = [part.model or "" for part in initial.models]  # a mix: one column per model
    names = ["trial", "change", "predicted", "infer/s", "p99 us", *models, "kept", "why"]
    if not models:
        names.append("bound after")
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    rows: list[tuple[int, str, float | None, float, int, tuple[Measurement, ...], str, str, str | None]] = [
        (0, f"(baseline at {initial.load:g})", None, initial.throughput, initial.p99_us, initial.models, "", "",
         initial.bottleneck)
    ]  # fmt: skip
    rows += [
        (n, t.change, t.predicted_throughput, t.throughput, t.p99_us, t.models, "yes" if t.kept else "no", t.reason,
         t.bottleneck)
        for n, t in enumerate(result.trials, 1)
    ]  # fmt: skip
    body = "".join(
        f"<tr><td>{n}</td><td style='text-align:left'>{html.escape(change)}</td>"
        f"<td>{'' if predicted is None else f'{predicted:.1f}'}</td><td>{rate:.1f}</td><td>{p99}</td>"
        + "".join(f"<td style='text-align:left'>{html.escape(model_cell(part))}</td>" for part in parts)
        + f"<td>{kept}</td><td style='text-align:left'>{html.escape(why)}</td>"
        + ("" if models else f"<td>{html.escape(str(after))}</td>")
        + "</tr>"
        for n, change, predicted, rate, p99, parts, kept, why, after in rows
    )
    final = "".join(f"<li>{html.escape(f'{part.model}: {model_cell(part)}')}</li>" for part in result.final.models)
    bound = "" if final else f"bound now: {html.escape(str(result.final.bottleneck))}. "
    configs = "".join(
        f"<h3>{html.escape(name)}</h3><pre>{html.escape(text)}</pre>" for name, text in result.config_changes.items()
    )
    gain = result.final.throughput / result.initial.throughput if result.initial.throughput else 0.0
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>loadgen tune: {model}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Tuning {model}</h1>
<div class="verdict"><p>{result.final.throughput:.1f} infer/s ({gain:.2f}x the baseline), p99 {result.final.p99_us} us;
{bound}Stopped: {html.escape(result.stop_reason)}.</p>
{f"<ul>{final}</ul>" if final else ""}</div>
<h2>Trials</h2>
<table><tr>{head}</tr>{body}</table>
{_image(png(trials(result)), "throughput per tuning trial")}
<h2>Improved configurations</h2>
{configs or "<p>No change was kept.</p>"}
<footer>Written by loadgen.</footer>
</body>
</html>
"""


def write_tune_html(result: TuneResult, path: str | os.PathLike[str]) -> None:
    """Write the report page of a tuning run (`loadgen tune --html`, `TuneResult.save_html`)."""
    write_file(path, render_tune(result))
