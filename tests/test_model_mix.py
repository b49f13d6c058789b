"""Several models under one load (--model-mix): the dealing of one schedule, each model's own inputs and figures,
and what the server's own statistics say each model got."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

import loadgen
from loadgen.errors import OptionError
from loadgen.mix import dealing, selector, split_count
from loadgen.plan import Shard
from loadgen.server import EmbeddedServer
from loadgen.settings import Settings
from tests.helpers import QUICK, successes


def test_the_dealing_gives_every_model_its_share_spread_evenly() -> None:
    pattern = dealing([0.7, 0.2, 0.1])
    assert Counter(pattern) == {0: 700, 1: 200, 2: 100}
    assert max(len(run) for run in "".join(map(str, pattern)).split("0")) <= 1  # the light models never bunch up
    assert Counter(dealing([3, 1], 8)) == {0: 6, 1: 2}


def test_sharded_the_dealing_stays_the_unsharded_one() -> None:
    """Each model's requests of the whole schedule are split among the shards: together, exactly the model's
    requests of the unsharded run, and each shard gets its part of every model."""
    pattern = dealing([0.7, 0.2, 0.1])
    schedule = range(10_000)  # request n of the schedule is due at offset n
    for index in range(3):
        alone = list(selector(pattern, index, Shard())(iter(schedule)))
        for count in (2, 3, 7):
            parts = [list(selector(pattern, index, Shard(shard, count))(iter(schedule))) for shard in range(count)]
            assert sorted(itertools.chain(*parts)) == alone
            assert all(abs(len(part) - len(alone) / count) <= 1 for part in parts)


def test_a_count_splits_into_whole_shares() -> None:
    assert split_count(10, {"a": 0.7, "b": 0.3}) == {"a": 7, "b": 3}
    assert split_count(3, {"a": 0.9, "b": 0.05, "c": 0.05}) == {"a": 1, "b": 1, "c": 1}  # each model at least one
    assert sum(split_count(101, {"a": 1, "b": 1, "c": 1}).values()) == 101


def test_the_mix_settings() -> None:
    closed = Settings(model_mix="a:3,b:1")
    assert (closed.model_mix, closed.concurrency_range) == ({"a": 3.0, "b": 1.0}, (4,))
    opened = Settings(model_mix={"a": 3, "b": 1}, request_rate_range="40:80:40")
    assert opened.model_mix == {"a": 0.75, "b": 0.25}
    assert opened.for_model("b").request_rate_range == (10.0, 20.0)
    assert closed.for_model("a").concurrency_range == (3,)


def test_each_model_takes_its_own_inputs_and_shapes() -> None:
    settings = Settings(
        model_mix="a:1,b:1",
        input_data=["a=mug.jpg", "zero"],
        shape={"INPUT0": [4], "b=INPUT0": [8]},
        bls_composing_models="b=fast_step,b=slow_step:1",
    )
    a, b = settings.for_model("a"), settings.for_model("b")
    assert (a.input_data, a.shape, a.bls_composing_models) == ("mug.jpg", {"INPUT0": (4,)}, ())
    assert (b.input_data, b.shape, b.bls_composing_models) == ("zero", {"INPUT0": (8,)}, ("fast_step", "slow_step:1"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model_mix": "a:1"}, "two models or more"),
        ({"model_mix": "a:1,b:0"}, "above 0"),
        ({"model_mix": "a:1,b"}, "MODEL:SHARE"),
        ({"model_mix": "a:1,b:1", "model_name": "a"}, "not with -m"),
        ({"model_mix": "a:0.5,b:1.5"}, "whole numbers"),
        ({"model_mix": "a:1,b:1", "concurrency_range": "1:4"}, "not with --concurrency-range"),
        ({"model_mix": "a:1,b:1", "workers": 2}, "not with --workers"),
        ({"model_mix": "a:1,b:1", "fixed_schedule": True}, "cannot be combined"),
    ],
)
def test_bad_mixes_are_one_line_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        Settings(**options)


def _requests(server: EmbeddedServer, models: list[str]) -> dict[str, int]:
    return {model: successes(server, model) for model in models}


# accumulator has one sequence slot: sequences queued behind one the count left open used to wait for the server's
# 60 s idle timeout before the run could end (the schedule's end now ends them)
@pytest.mark.timeout(45)
def test_an_open_loop_mix_of_an_ensemble_and_a_sequence_model(test_server: EmbeddedServer, tmp_path: Path) -> None:
    models = ["pipeline_nested", "accumulator"]
    before = _requests(test_server, models)
    result = loadgen.profile_sync(
        test_server.grpc_url,
        model_mix={"pipeline_nested": 0.8, "accumulator": 0.2},
        request_rate_range=100,
        request_count=200,
        input_data=["accumulator=zero", "random"],
        shape={"pipeline_nested=INPUT0": [4]},
        sequence_length=5,
    )
    seen = {model: count - before[model] for model, count in _requests(test_server, models).items()}
    # the server's own statistics: each model got its share of the one schedule (160 and 40; each sequence the
    # count left open, of the 4 in flight, ends with one request more)
    assert seen["pipeline_nested"] == 160 and 40 <= seen["accumulator"] <= 44, seen
    [level] = result.levels
    assert level.request_count == 200 and level.error_count == 0, level.errors
    nested, accumulator = level.models
    assert (nested.model, nested.request_rate, nested.request_count) == ("pipeline_nested", 80.0, 160)
    assert (accumulator.model, accumulator.request_rate, accumulator.request_count) == ("accumulator", 20.0, 40)
    assert [step.model for step in nested.server.composing] == ["fast_step", "pipeline_slow_tail"]
    assert accumulator.server.model == "accumulator" and level.server is None  # the total has no server figures
    assert [(m.model, m.share) for m in result.models] == [("pipeline_nested", 0.8), ("accumulator", 0.2)]
    saved = tmp_path / "mix.json"
    result.save_json(saved)
    document = json.loads(saved.read_text())
    assert [(m["model"], m["share"]) for m in document["models"]] == [("pipeline_nested", 0.8), ("accumulator", 0.2)]
    assert document["models"][1]["levels"][0]["request_count"] == 40 and "models" not in document["levels"][0]
    again = loadgen.load_result(saved)
    assert again.models == result.models and again.levels == result.levels


def test_a_closed_loop_mix_keeps_each_models_concurrency(test_server: EmbeddedServer) -> None:
    models = ["fast_step", "sleeper"]
    before = _requests(test_server, models)
    result = loadgen.profile_sync(
        test_server.http_url,
        protocol="http",
        model_mix="fast_step:2,sleeper:1",
        input_data="zero",
        shape={"INPUT0": [4]},
        **QUICK,
    )
    [level] = result.levels
    fast, sleeper = level.models
    assert (level.concurrency, fast.concurrency, sleeper.concurrency) == (3, 2, 1)
    assert fast.request_count > sleeper.request_count > 0  # the sleeper answers in 20 ms, fast_step at once
    seen = {model: count - before[model] for model, count in _requests(test_server, models).items()}
    assert seen["fast_step"] >= fast.request_count and seen["sleeper"] >= sleeper.request_count
    assert level.request_count == fast.request_count + sleeper.request_count


def test_a_model_that_rejects_its_data_is_named(examples_server: EmbeddedServer) -> None:
    with pytest.raises(loadgen.ModelRejectedError, match="ensemble_python_resnet50"):
        loadgen.profile_sync(
            examples_server.grpc_url,
            model_mix="identity_uint8:1,ensemble_python_resnet50:1",
            shape={"ensemble_python_resnet50=INPUT": [1000]},  # random bytes: no image
            **QUICK,
        )


def test_a_models_bad_option_names_the_model(test_server: EmbeddedServer) -> None:
    """fast_step's input has a dynamic shape and only the sleeper got a --shape: the error says which model."""
    with pytest.raises(OptionError, match=r"^fast_step \(in --model-mix; fast_step=\.\.\. forms .*dynamic shape"):
        loadgen.profile_sync(
            test_server.grpc_url, model_mix="sleeper:1,fast_step:1", shape={"sleeper=INPUT0": [1]}, **QUICK
        )


def test_a_mixs_files_have_each_models_figures(test_server: EmbeddedServer, tmp_path: Path) -> None:
    result = loadgen.profile_sync(
        test_server.grpc_url,
        model_mix="fast_step:2,pipeline_nested:1",
        input_data="zero",
        shape={"INPUT0": [4]},
        **QUICK,
    )
    assert result.mix_diagnosis is not None and result.mix_diagnosis.models
    assert {share.step for share in result.mix_diagnosis.steps} >= {"fast_step", "slow_step"}
    nested = result.of_model("pipeline_nested")
    assert (nested.model, nested.levels[0].concurrency) == ("pipeline_nested", 1)
    with pytest.raises(loadgen.LoadgenError, match="not a model of this run's mix"):
        result.of_model("sleeper")
    from loadgen.reports.files import write_csv
    from loadgen.reports.html import render

    written = {path.name for path in write_csv(result, tmp_path / "mix.csv")}
    assert {"mix.csv", "fast_step.mix.csv", "pipeline_nested.mix.csv"} <= written
    assert "fast_step_v1.pipeline_nested.mix.csv" in written  # each model's composing models, as for one model
    page = render(result)
    assert "<h2>The mix</h2>" in page and "<h2>fast_step</h2>" in page and "<h2>pipeline_nested</h2>" in page
