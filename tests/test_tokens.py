"""Token streams without a server: each metric's definition on replies of known times, goodput's objectives, windows
that carry token figures between processes, and the prompts (synthetic and from files)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2

from loadgen.errors import OptionError
from loadgen.measurement import LatencyStats, Recorder, Window, merge
from loadgen.prompts import load_tokenizer, prompts_for, read_prompts, synthetic, triton_sample
from loadgen.server.statistics import ServerFigures
from loadgen.settings import make_settings
from loadgen.token_analysis import token_breakdown
from loadgen.tokens import TokenCounter, TokenMetrics, TokenStats, token_stats
from loadgen.transport import ModelInfo, TensorSpec
from loadgen.transport.tokens import Prompt, TokenReply
from loadgen.values import Objectives, parse_goodput

MS = 1_000_000  # ns


def reply(events_ms: list[float], tokens: int | None = None, texts: tuple[str, ...] = ()) -> TokenReply:
    answer = TokenReply()
    answer.events = [round(at * MS) for at in events_ms]
    answer.output_tokens = tokens
    answer.texts = list(texts)
    return answer


def recorder(objectives: Objectives | None = None, open_loop: bool = False, tokenizer: object = None) -> Recorder:
    return Recorder(open_loop=open_loop, tokens=TokenMetrics(TokenCounter(tokenizer), objectives))


def test_each_metric_follows_its_definition() -> None:
    """Sent at 0, events at 30, 35, 40, 45 ms, done at 46 ms: TTFT 30, second token 35, ITL (46-30)/3, gaps 5."""
    rec = recorder()
    generation = rec.start()
    rec.record_tokens(reply([30, 35, 40, 45]), 0, 0, 46 * MS, 12, generation)
    window = rec.rotate()
    stats = token_stats(window, window.histogram, objectives=False)
    assert stats is not None
    assert stats.time_to_first_token_us.max == pytest.approx(30_000, rel=1e-3)
    assert stats.time_to_second_token_us.max == pytest.approx(35_000, rel=1e-3)
    assert stats.inter_token_latency_us.max == pytest.approx(16_000 / 3, rel=1e-3)
    assert stats.inter_event_gap_us.min == pytest.approx(5_000, rel=1e-3)
    assert stats.inter_event_gap_us.max == pytest.approx(5_000, rel=1e-3)
    assert stats.request_latency_us.max == pytest.approx(46_000, rel=1e-3)
    assert stats.output_tokens_per_request.max == 4  # one per event: no server count, no tokenizer
    assert stats.input_tokens_per_request.max == 12
    assert stats.token_count_source == "events"
    assert stats.goodput is None
    assert stats.time_to_first_token_from_schedule_us is None  # a closed loop


def test_the_server_count_wins_and_the_tokenizer_is_compared() -> None:
    tokenizer = load_tokenizer(None)
    rec = recorder(tokenizer=tokenizer)
    generation = rec.start()
    text = " hello world again"
    rec.record_tokens(reply([10, 20], tokens=7, texts=(text,)), 0, 0, 21 * MS, 3, generation)
    window = rec.rotate()
    stats = token_stats(window, window.histogram, objectives=False)
    assert stats is not None
    assert stats.token_count_source == "server"
    assert stats.output_tokens_per_request.max == 7
    assert stats.token_counts is not None
    assert stats.token_counts.server == 7
    assert stats.token_counts.tokenizer == len(tokenizer.encode(text, add_special_tokens=False).ids)


def test_open_loop_times_the_first_token_from_the_schedule_too() -> None:
    """Due at 0, sent 50 ms late: TTFT 20 ms from the send, 70 ms from the schedule; goodput judges the latter."""
    rec = recorder(Objectives(time_to_first_token_us=40_000), open_loop=True)
    generation = rec.start()
    rec.record_tokens(reply([70, 75]), 50 * MS, 0, 76 * MS, 1, generation)
    window = rec.rotate()
    stats = token_stats(window, window.service, objectives=True)
    assert stats is not None and stats.time_to_first_token_from_schedule_us is not None
    assert stats.time_to_first_token_us.max == pytest.approx(20_000, rel=1e-3)
    assert stats.time_to_first_token_from_schedule_us.max == pytest.approx(70_000, rel=1e-3)
    assert window.good == 0  # 70 ms from the schedule misses the 40 ms objective


def test_goodput_counts_requests_that_meet_every_objective() -> None:
    rec = recorder(parse_goodput(["time_to_first_token:25", "inter_token_latency:6"]))
    for events, done in (([20, 25, 30], 31), ([30, 35], 36), ([10, 20, 30], 31)):  # good; slow first; slow gaps
        rec.record_tokens(reply(events), 0, 0, done * MS, 1, rec.start())
    assert rec.rotate().good == 1


def test_a_reply_without_output_is_a_counted_failure() -> None:
    rec = recorder()
    rec.record_tokens(reply([]), 0, 0, MS, 1, rec.start())
    window = rec.rotate()
    assert window.error_count == 1 and window.request_count == 0


def test_token_windows_merge_and_travel_exactly() -> None:
    parts = []
    for first in (10, 20):
        rec = recorder()
        rec.record_tokens(reply([first, first + 5], tokens=2), 0, 0, (first + 6) * MS, 4, rec.start())
        parts.append(Window.decode(json.loads(json.dumps(rec.rotate().encode()))))
    merged = merge(parts)
    assert merged.tokens_out == 4 and merged.by_server == 2
    assert merged.ttft is not None and merged.ttft.get_total_count() == 2


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["ttft:10"], "choose time_to_first_token"),
        (["time_to_first_token"], "METRIC:MILLISECONDS"),
        (["request_latency:soon"], "not a number"),
        (["inter_token_latency:0"], "above 0"),
    ],
)
def test_bad_goodput_is_one_line(specs: list[str], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        make_settings(goodput=specs)


def test_synthetic_prompts_have_the_asked_lengths() -> None:
    tokenizer = load_tokenizer(None)
    prompts = synthetic(make_settings(isl=64, osl=9, num_prompts=20), tokenizer).prompts
    assert len(prompts) == 20 and len({prompt.text for prompt in prompts}) == 20
    assert all(prompt.output_tokens == 9 for prompt in prompts)
    assert sum(prompt.input_tokens for prompt in prompts) / 20 == pytest.approx(64, rel=0.1)  # decode/encode may merge
    varied = synthetic(make_settings(isl=64, isl_stddev=20, num_prompts=50), tokenizer).prompts
    assert len({prompt.input_tokens for prompt in varied}) > 5


def test_synthetic_prompts_share_the_pools_prefixes(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(None)
    settings = make_settings(isl=80, num_prompts=30, prefix_prompt_pool_size=3, prefix_prompt_length=50)
    prompts = synthetic(settings, tokenizer).prompts
    assert len({prompt.text[:100] for prompt in prompts}) == 3  # every prompt starts with one of the pool's three
    assert len({prompt.text for prompt in prompts}) == 30  # each goes on with its own tokens
    assert sum(prompt.input_tokens for prompt in prompts) / 30 == pytest.approx(80, rel=0.1)  # the prefix counts in
    (tmp_path / "prompts.jsonl").write_text('{"text": "hello"}\n')
    with pytest.raises(OptionError, match="not with --input-file"):
        make_settings(prefix_prompt_pool_size=2, input_file=str(tmp_path / "prompts.jsonl"))


def test_prompt_files(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"text": "a short prompt", "output_length": 5}\n\n{"texts": ["two", "parts"]}\n')
    prompts = read_prompts(str(path), make_settings(osl=3), load_tokenizer(None)).prompts
    assert [prompt.text for prompt in prompts] == ["a short prompt", "two parts"]
    assert [prompt.output_tokens for prompt in prompts] == [5, 3]
    trace = tmp_path / "trace.jsonl"
    trace.write_text(
        "".join(
            json.dumps({"timestamp": at, "input_length": 600, "output_length": 4, "hash_ids": [1, 2]}) + "\n"
            for at in (0, 10)
        )
    )
    traced = read_prompts(str(trace), make_settings(), load_tokenizer(None))
    assert traced.timestamps_ms == (0, 10)
    assert traced.prompts[0].text == traced.prompts[1].text  # the same hash ids: the same prefix


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json\n", "line 1: not JSON"),
        ("[1]\n", "expected an object"),
        ('{"text": ""}\n', '"text"'),
        ('{"text": "x", "output_length": -1}\n', "output_length"),
        ('{"text": "\\ud800"}\n', "lone surrogate"),
        ("\n", "no prompts"),
        ("[" * 100_000 + "\n", "not JSON"),
    ],
)
def test_bad_prompt_files_are_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(OptionError, match=message):
        read_prompts(str(path), make_settings(), load_tokenizer(None))


def test_a_missing_tokenizer_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="never downloads"):
        prompts_for(make_settings(tokenizer=str(tmp_path / "nowhere")))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(OptionError, match=r"not a tokenizer\.json"):
        load_tokenizer(str(tmp_path))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=5))
def test_any_prompt_file_line_is_read_or_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> None:
    path = tmp_path_factory.mktemp("prompts") / "any.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        read_prompts(str(path), make_settings(), load_tokenizer(None))
    except OptionError as error:
        assert "\n" not in str(error)


def test_the_api_key_is_never_recorded() -> None:
    recorded = make_settings(endpoint_type="chat", api_key="sk-secret", goodput=["request_latency:5"]).to_dict()
    assert recorded["api_key"] == "<redacted>"
    assert "sk-secret" not in json.dumps(recorded)
    assert json.loads(json.dumps(recorded)) == recorded  # a result's settings read back as they were written


def _step(model: str, requests: int, queue_us: float, compute_us: float, instances: int = 1) -> ServerFigures:
    return ServerFigures(
        model, "1", requests, requests, requests, 0, 1.0, queue_us, 0.0, compute_us, 0.0, 0.0, 0.0, None, instances, 0,
        False,
    )  # fmt: skip


def _tokens(ttft_us: int, itl_us: int, per_request: int) -> TokenStats:
    def flat(value: float) -> LatencyStats:
        return LatencyStats(int(value), value, 0.0, int(value), int(value), int(value), int(value), int(value))

    return TokenStats(
        flat(ttft_us), flat(ttft_us), flat(itl_us), flat(itl_us), flat(ttft_us + itl_us * per_request),
        flat(per_request), flat(100), flat(1e6 / itl_us), 100.0, 10.0, None, "server",
    )  # fmt: skip


def test_the_breakdown_names_each_bound_from_the_steps_figures() -> None:
    """100 requests of 20 tokens in 10 s: a detokenizer run 2,000 times at 4 ms (80% busy) bounds the gaps; the
    steps explain little of a 40 ms first token, so the generator's own (unseen) time bounds it; a tokenizer that
    holds each request 29 ms bounds it."""
    pipeline = dataclasses.replace(
        _step("ensemble", 100, 0.0, 0.0),
        composing=(_step("preprocessing", 100, 100, 500), _step("llm", 100, 50, 300), _step("detok", 2000, 3000, 4000)),
    )
    breakdown = token_breakdown(pipeline, _tokens(40_000, 5_000, 20), 10.0)
    assert breakdown is not None
    lands = {step.model: step.lands_in for step in breakdown.steps}
    assert lands == {"preprocessing": "first token", "llm": "first token", "detok": "every gap"}
    assert breakdown.gaps.startswith("detok bounds the gaps") and "add an instance" in breakdown.gaps
    # one pass through the detokenizer (7 ms) is under a fifth of the 40 ms: the steps do not bound the first token
    assert breakdown.first_token.startswith("the generator's own time bounds the first token")
    quiet = dataclasses.replace(pipeline, composing=(*pipeline.composing[:2], _step("detok", 2000, 10, 100)))
    calm = token_breakdown(quiet, _tokens(40_000, 5_000, 20), 10.0)
    assert calm is not None
    assert calm.first_token.startswith("the generator's own time bounds the first token")
    assert calm.gaps.startswith("the generator's pace bounds the gaps")
    slow_tokenizer = dataclasses.replace(
        quiet, composing=(_step("preprocessing", 100, 20_000, 9_000), *quiet.composing[1:])
    )
    named = token_breakdown(slow_tokenizer, _tokens(40_000, 5_000, 20), 10.0)
    assert named is not None and named.first_token.startswith("preprocessing bounds the first token")


def _llm_model(*inputs: tuple[str, str, bool]) -> ModelInfo:
    """A model with these (name, datatype, optional) inputs and a text output."""
    config = model_config_pb2.ModelConfig(name="llm")
    for name, _, optional in inputs:
        config.input.add(name=name, optional=optional)
    specs = tuple(TensorSpec(name, datatype, (1,)) for name, datatype, _ in inputs)
    return ModelInfo("llm", "1", "python", 0, specs, (TensorSpec("text_output", "BYTES", (1,)),), config)


def test_the_tensors_follow_the_backend_and_the_models_inputs() -> None:
    prompt = Prompt("hello there", 2, 7)
    trtllm = _llm_model(
        ("text_input", "BYTES", False),
        ("max_tokens", "INT32", False),
        ("min_length", "INT32", True),
        ("stream", "BOOL", True),
    )
    sent = {tensor.name: tensor for tensor in triton_sample(trtllm, prompt, make_settings(streaming=True))}
    assert set(sent) == {"text_input", "max_tokens", "min_length", "stream"}  # only what the model declares
    assert sent["text_input"].content == len(b"hello there").to_bytes(4, "little") + b"hello there"
    assert (
        int.from_bytes(sent["max_tokens"].content, "little")
        == 7
        == int.from_bytes(sent["min_length"].content, "little")
    )
    assert sent["stream"].content == b"\x01"
    vllm = _llm_model(("text_input", "BYTES", False), ("sampling_parameters", "BYTES", True), ("stream", "BOOL", True))
    sent = {tensor.name: tensor for tensor in triton_sample(vllm, prompt, make_settings())}
    parameters = json.loads(sent["sampling_parameters"].content[4:])
    assert parameters == {"max_tokens": 7, "min_tokens": 7, "ignore_eos": True}
    assert sent["stream"].content == b"\x00"
    with pytest.raises(OptionError, match="needs max_tokens"):  # a TensorRT-LLM model sent vLLM's tensors
        triton_sample(trtllm, prompt, make_settings(backend="vllm"))
    with pytest.raises(OptionError, match="has no text_input input"):
        triton_sample(_llm_model(("prompt", "BYTES", False)), prompt, make_settings())
