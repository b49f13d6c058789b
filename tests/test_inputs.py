from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import deserialize_bytes_tensor

from loadgen.errors import OptionError
from loadgen.inputs import encode_request, load_samples
from loadgen.transport import ModelInfo, TensorSpec


def _model(*inputs: TensorSpec, max_batch_size: int = 0) -> ModelInfo:
    return ModelInfo("m", "", "python", max_batch_size, inputs, (), model_config_pb2.ModelConfig())


IMAGE = _model(TensorSpec("INPUT", "UINT8", (-1,)))
PAIR = _model(TensorSpec("A", "FP32", (2, 2)), TensorSpec("B", "INT64", (-1,)))


def test_a_file_is_sent_as_its_raw_bytes_with_an_explicit_shape(tmp_path: Path) -> None:
    image = tmp_path / "mug.jpg"
    image.write_bytes(bytes(range(256)) * 3)
    [sample] = load_samples(str(image), IMAGE, {})
    (tensor,) = sample
    assert (tensor.name, tensor.datatype, tensor.shape) == ("INPUT", "UINT8", (768,))
    assert tensor.content == image.read_bytes()


def test_the_request_carries_the_shape_and_bytes(tmp_path: Path) -> None:
    image = tmp_path / "x.bin"
    image.write_bytes(b"\xff\xd8abc")
    request = service_pb2.ModelInferRequest.FromString(encode_request(IMAGE, load_samples(str(image), IMAGE, {})[0]))
    assert request.model_name == "m"
    assert list(request.inputs[0].shape) == [5]
    assert request.raw_input_contents[0] == b"\xff\xd8abc"


def test_a_directory_sends_its_files_in_turn(tmp_path: Path) -> None:
    for name, size in (("b.jpg", 3), ("a.jpg", 5), (".hidden", 9)):
        (tmp_path / name).write_bytes(b"x" * size)
    samples = load_samples(str(tmp_path), IMAGE, {})
    assert [s[0].shape for s in samples] == [(5,), (3,)]


def test_a_directory_for_several_inputs_matches_files_by_name(tmp_path: Path) -> None:
    (tmp_path / "A").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (tmp_path / "B.bin").write_bytes(np.arange(3, dtype=np.int64).tobytes())
    [sample] = load_samples(str(tmp_path), PAIR, {})
    assert [(t.name, t.shape) for t in sample] == [("A", (2, 2)), ("B", (3,))]
    (tmp_path / "B.bin").unlink()
    with pytest.raises(OptionError, match="no file for input"):
        load_samples(str(tmp_path), PAIR, {})


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="has no files"):
        load_samples(str(tmp_path), IMAGE, {})


def test_json_in_perf_analyzer_format(tmp_path: Path) -> None:
    data = {
        "data": [
            {"A": [1, 2, 3, 4], "B": [7, 8]},
            {"A": {"content": [[1, 2], [3, 4]], "shape": [2, 2]}, "B": {"content": [1], "shape": [1]}},
            {
                "A": {"b64": base64.b64encode(np.ones(4, np.float32).tobytes()).decode(), "shape": [2, 2]},
                "B": {"b64": base64.b64encode(np.arange(5, dtype=np.int64).tobytes()).decode()},
            },
        ]
    }
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    samples = load_samples(str(path), PAIR, {})
    assert [[t.shape for t in s] for s in samples] == [[(2, 2), (2,)], [(2, 2), (1,)], [(2, 2), (5,)]]
    assert np.frombuffer(samples[0][1].content, np.int64).tolist() == [7, 8]
    assert np.frombuffer(samples[2][0].content, np.float32).tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"rows": []}', "expected"),
        ('{"data": [{"A": [1,2,3,4]}]}', "no data for input"),
        ('{"data": [{"A": [1,2,3,4], "B": [1], "C": [1]}]}', "unknown input"),
        ('{"data": [{"A": ["x","y","z","w"], "B": [1]}]}', "not FP32"),
        ('{"data": [{"A": [1,2,3], "B": [1]}]}', "does not fit"),
        ('{"data": [{"A": {"b64": "***"}, "B": [1]}]}', "not valid base64"),
    ],
)
def test_json_errors_say_which_file_and_where(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(document)
    with pytest.raises(OptionError, match=message) as raised:
        load_samples(str(path), PAIR, {})
    assert str(path) in str(raised.value)


def test_random_and_zero_need_a_shape_for_dynamic_dimensions() -> None:
    with pytest.raises(OptionError, match="--shape INPUT:"):
        load_samples("random", IMAGE, {})
    [sample] = load_samples("random", IMAGE, {"INPUT": (100,)})
    assert sample[0].shape == (100,)
    assert len(set(sample[0].content)) > 10
    [zero] = load_samples("zero", IMAGE, {"INPUT": (8,)})
    assert zero[0].content == bytes(8)


def test_random_respects_each_dtype() -> None:
    model = _model(
        TensorSpec("F", "FP16", (3,)),
        TensorSpec("I", "INT64", (2,)),
        TensorSpec("T", "BOOL", (4,)),
        TensorSpec("S", "BYTES", (2,)),
    )
    [sample] = load_samples("random", model, {})
    assert [len(t.content) for t in sample[:3]] == [6, 16, 4]
    strings = deserialize_bytes_tensor(sample[3].content)
    assert len(strings) == 2 and all(len(s) == 128 for s in strings)


def test_batch_size_prepends_the_batch_dimension() -> None:
    model = _model(TensorSpec("INPUT0", "UINT8", (-1, 16)), max_batch_size=8)
    [sample] = load_samples("zero", model, {}, batch_size=4)
    assert sample[0].shape == (4, 16)
    assert len(sample[0].content) == 64
    with pytest.raises(OptionError, match="max_batch_size 8"):
        load_samples("zero", model, {}, batch_size=9)
    with pytest.raises(OptionError, match="does not support batching"):
        load_samples("zero", IMAGE, {"INPUT": (1,)}, batch_size=2)


def test_shape_errors_name_the_input() -> None:
    with pytest.raises(OptionError, match="no such input; its inputs: A"):
        load_samples("random", PAIR, {"X": (1,)})
    with pytest.raises(OptionError, match="the model expects"):
        load_samples("random", PAIR, {"A": (3, 3), "B": (1,)})


def test_missing_or_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="no such file"):
        load_samples(str(tmp_path / "nope.jpg"), IMAGE, {})
    with pytest.raises(OptionError, match="model with one input"):
        (tmp_path / "x.bin").write_bytes(b"1")
        load_samples(str(tmp_path / "x.bin"), PAIR, {})
