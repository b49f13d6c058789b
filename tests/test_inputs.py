from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from loadgen.errors import OptionError
from loadgen.inputs import encode_requests, load_data
from loadgen.settings import Settings
from loadgen.transport import GrpcWire, ModelInfo, RequestLayout, Sample, TensorSpec


def _model(*inputs: TensorSpec, max_batch_size: int = 0) -> ModelInfo:
    return ModelInfo("m", "", "python", max_batch_size, inputs, (), model_config_pb2.ModelConfig())


def _load(source: str, model: ModelInfo, shapes: dict[str, tuple[int, ...]], **options: object) -> list[Sample]:
    return list(load_data(model, Settings(input_data=source, shape=shapes, **options)).samples)  # type: ignore[arg-type]


IMAGE = _model(TensorSpec("INPUT", "UINT8", (-1,)))
PAIR = _model(TensorSpec("A", "FP32", (2, 2)), TensorSpec("B", "INT64", (-1,)))


def test_a_file_is_sent_as_its_raw_bytes_with_an_explicit_shape(tmp_path: Path) -> None:
    image = tmp_path / "mug.jpg"
    image.write_bytes(bytes(range(256)) * 3)
    [sample] = _load(str(image), IMAGE, {})
    (tensor,) = sample
    assert (tensor.name, tensor.datatype, tensor.shape) == ("INPUT", "UINT8", (768,))
    assert tensor.content == image.read_bytes()


def test_the_request_carries_the_shape_and_bytes(tmp_path: Path) -> None:
    image = tmp_path / "x.bin"
    image.write_bytes(b"\xff\xd8abc")
    request = service_pb2.ModelInferRequest.FromString(
        GrpcWire().encode(IMAGE, _load(str(image), IMAGE, {})[0], RequestLayout())
    )
    assert request.model_name == "m"
    assert list(request.inputs[0].shape) == [5]
    assert request.raw_input_contents[0] == b"\xff\xd8abc"


def test_a_directory_sends_its_files_in_turn(tmp_path: Path) -> None:
    for name, size in (("b.jpg", 3), ("a.jpg", 5), (".hidden", 9)):
        (tmp_path / name).write_bytes(b"x" * size)
    samples = _load(str(tmp_path), IMAGE, {})
    assert [s[0].shape for s in samples] == [(5,), (3,)]


def test_a_directory_for_several_inputs_matches_files_by_name(tmp_path: Path) -> None:
    (tmp_path / "A").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (tmp_path / "B.bin").write_bytes(np.arange(3, dtype=np.int64).tobytes())
    [sample] = _load(str(tmp_path), PAIR, {})
    assert [(t.name, t.shape) for t in sample] == [("A", (2, 2)), ("B", (3,))]
    (tmp_path / "B.bin").unlink()
    with pytest.raises(OptionError, match="no file for input"):
        _load(str(tmp_path), PAIR, {})


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="has no files"):
        _load(str(tmp_path), IMAGE, {})


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
    samples = _load(str(path), PAIR, {})
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
        _load(str(path), PAIR, {})
    assert str(path) in str(raised.value)


def test_random_and_zero_need_a_shape_for_dynamic_dimensions() -> None:
    with pytest.raises(OptionError, match="--shape INPUT:"):
        _load("random", IMAGE, {})
    [sample] = _load("random", IMAGE, {"INPUT": (100,)})
    assert sample[0].shape == (100,)
    assert len(set(sample[0].content)) > 10
    [zero] = _load("zero", IMAGE, {"INPUT": (8,)})
    assert zero[0].content == bytes(8)


def test_random_respects_each_dtype() -> None:
    model = _model(
        TensorSpec("F", "FP16", (3,)),
        TensorSpec("I", "INT64", (2,)),
        TensorSpec("T", "BOOL", (4,)),
        TensorSpec("S", "BYTES", (2,)),
    )
    [sample] = _load("random", model, {})
    assert [len(t.content) for t in sample[:3]] == [6, 16, 4]
    strings = deserialize_bytes_tensor(sample[3].content)
    assert len(strings) == 2 and all(len(s) == 128 for s in strings)


def test_batch_size_prepends_the_batch_dimension() -> None:
    model = _model(TensorSpec("INPUT0", "UINT8", (-1, 16)), max_batch_size=8)
    [sample] = _load("zero", model, {}, batch_size=4)
    assert sample[0].shape == (4, 16)
    assert len(sample[0].content) == 64
    with pytest.raises(OptionError, match="max_batch_size 8"):
        _load("zero", model, {}, batch_size=9)
    with pytest.raises(OptionError, match="does not support batching"):
        _load("zero", IMAGE, {"INPUT": (1,)}, batch_size=2)


def test_shape_errors_name_the_input() -> None:
    with pytest.raises(OptionError, match="no such input; its inputs: A"):
        _load("random", PAIR, {"X": (1,)})
    with pytest.raises(OptionError, match="the model expects"):
        _load("random", PAIR, {"A": (3, 3), "B": (1,)})


def test_missing_or_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="no such file"):
        _load(str(tmp_path / "nope.jpg"), IMAGE, {})
    with pytest.raises(OptionError, match="model with one input"):
        (tmp_path / "x.bin").write_bytes(b"1")
        _load(str(tmp_path / "x.bin"), PAIR, {})


def test_input_range_bounds_random_numbers_per_input_or_for_all() -> None:
    model = _model(TensorSpec("IDS", "INT64", (50,)), TensorSpec("X", "FP32", (50,)), TensorSpec("B", "UINT8", (50,)))
    [sample] = _load("random", model, {}, input_range={"IDS": (0, 9)})
    ids = np.frombuffer(sample[0].content, np.int64)
    assert ids.min() >= 0 and ids.max() <= 9 and len(set(ids.tolist())) > 1
    [sample] = _load("random", model, {}, input_range={"*": (2, 3)})
    assert set(np.frombuffer(sample[0].content, np.int64).tolist()) <= {2, 3}
    x = np.frombuffer(sample[1].content, np.float32)
    assert x.min() >= 2 and x.max() <= 3
    with pytest.raises(OptionError, match="outside the range of B's UINT8"):
        _load("random", model, {}, input_range={"B": (0, 300)})
    with pytest.raises(OptionError, match="--input-range Z: the model has no such input"):
        _load("random", model, {}, input_range={"Z": (0, 1)})


def test_string_data_and_string_length() -> None:
    model = _model(TensorSpec("S", "BYTES", (3,)))
    [sample] = _load("random", model, {}, string_data="héllo")
    assert deserialize_bytes_tensor(sample[0].content).tolist() == ["héllo".encode()] * 3
    [sample] = _load("random", model, {}, string_length=5)
    assert [len(s) for s in deserialize_bytes_tensor(sample[0].content)] == [5, 5, 5]


def test_a_text_file_feeds_a_string_input_one_line_per_element(tmp_path: Path) -> None:
    model = _model(TensorSpec("S", "BYTES", (-1,)))
    (tmp_path / "words.txt").write_text("alpha\nbeta\ngamma\n")
    (tmp_path / "z.bin").write_bytes(b"\x00\x01")
    samples = _load(str(tmp_path), model, {})
    assert [s[0].shape for s in samples] == [(3,), (1,)]
    assert deserialize_bytes_tensor(samples[0][0].content).tolist() == [b"alpha", b"beta", b"gamma"]
    assert deserialize_bytes_tensor(samples[1][0].content).tolist() == [b"\x00\x01"]


def test_json_strings_plain_and_b64(tmp_path: Path) -> None:
    model = _model(TensorSpec("S", "BYTES", (-1,)))
    path = tmp_path / "strings.json"
    encoded = base64.b64encode(b"\xff\x00").decode()
    path.write_text(json.dumps({"data": [{"S": ["a", "bc"]}, {"S": "single"}, {"S": [{"b64": encoded}, "x"]}]}))
    samples = _load(str(path), model, {})
    assert [deserialize_bytes_tensor(s[0].content).tolist() for s in samples] == [
        [b"a", b"bc"],
        [b"single"],
        [b"\xff\x00", b"x"],
    ]


def test_json_streams_several_files_and_validation_data(tmp_path: Path) -> None:
    model = ModelInfo(
        "m", "", "python", 0, (TensorSpec("A", "INT32", (1,)),), (TensorSpec("Y", "INT32", (1,)),),
        model_config_pb2.ModelConfig(),
    )  # fmt: skip
    first = tmp_path / "a.json"
    first.write_text(
        json.dumps(
            {
                "data": [[{"A": [1]}, {"A": [2]}], [{"A": [5]}]],
                "validation_data": [[{"Y": [1]}, {"Y": [3]}], [{"Y": [5]}]],
            }
        )
    )
    second = tmp_path / "b.json"
    second.write_text(json.dumps({"data": [{"A": [7]}], "validation_data": [{"Y": [7]}]}))
    data = load_data(model, Settings(input_data=[str(first), str(second)]))
    assert [len(stream) for stream in data.streams] == [2, 1, 1]
    assert data.expected is not None
    assert [np.frombuffer(s[0].content, np.int32).tolist() for s in data.expected_samples or ()] == [[1], [3], [5], [7]]
    requests = encode_requests(GrpcWire(), model, data, Settings(output=["Y"]))
    assert requests.streams == ((0, 1), (2,), (3,))
    decoded = [service_pb2.ModelInferRequest.FromString(p) for p in requests.payloads]
    assert [r.id for r in decoded] == ["0", "1", "2", "3"]  # responses are matched to expectations by id
    assert [o.name for o in decoded[0].outputs] == ["Y"]

    second.write_text(json.dumps({"data": [{"A": [7]}]}))
    with pytest.raises(OptionError, match="validation_data in every JSON file or in none"):
        load_data(model, Settings(input_data=[str(first), str(second)]))
    second.write_text(json.dumps({"data": [{"A": [7]}], "validation_data": [{"Q": [7]}]}))
    with pytest.raises(OptionError, match="unknown output"):
        load_data(model, Settings(input_data=[str(second)]))
    with pytest.raises(OptionError, match="several --input-data must all be JSON files"):
        load_data(model, Settings(input_data=[str(first), "random"]))


def test_output_selection_names_a_real_output() -> None:
    model = _model(TensorSpec("A", "INT32", (1,)))
    with pytest.raises(OptionError, match="--output NOPE: the model has no such output"):
        _load("zero", model, {}, output=["NOPE"])
    requests = encode_requests(GrpcWire(), model, load_data(model, Settings(input_data="zero")), Settings())
    request = service_pb2.ModelInferRequest.FromString(requests.payloads[0])
    assert not request.outputs and not request.id  # by default: every output, no id


def test_b64_of_a_bytes_tensor_is_perf_analyzers_wire_format(tmp_path: Path) -> None:
    """perf_analyzer's {"b64": ...} holds the tensor as it goes on the wire: each element after its 4-byte length."""
    model = _model(TensorSpec("S", "BYTES", (-1,)))
    wire = serialize_byte_tensor(np.array([b"ab", b"\xffc"], dtype=np.object_)).item()
    path = tmp_path / "b64.json"
    path.write_text(json.dumps({"data": [{"S": {"b64": base64.b64encode(wire).decode()}}]}))
    [sample] = _load(str(path), model, {})
    assert sample[0].shape == (2,) and sample[0].content == wire
    assert deserialize_bytes_tensor(sample[0].content).tolist() == [b"ab", b"\xffc"]
    path.write_text(json.dumps({"data": [{"S": {"b64": base64.b64encode(b"\xff\xd8 a jpeg").decode()}}]}))
    with pytest.raises(OptionError, match="4-byte length"):
        _load(str(path), model, {})


def test_content_given_as_b64_with_a_shape(tmp_path: Path) -> None:
    path = tmp_path / "content.json"
    ones = base64.b64encode(np.ones(4, np.float32).tobytes()).decode()
    path.write_text(json.dumps({"data": [{"A": {"content": {"b64": ones}, "shape": [2, 2]}, "B": [1]}]}))
    [sample] = _load(str(path), PAIR, {})
    assert sample[0].shape == (2, 2) and np.frombuffer(sample[0].content, np.float32).tolist() == [1] * 4


def test_optional_inputs_may_be_left_out_of_json_data(tmp_path: Path) -> None:
    config = model_config_pb2.ModelConfig()
    config.input.add(name="A", optional=False)
    config.input.add(name="B", optional=True)
    model = ModelInfo("m", "", "python", 0, PAIR.inputs, (), config)
    path = tmp_path / "optional.json"
    path.write_text(json.dumps({"data": [{"A": [1, 2, 3, 4]}, {"A": [1, 2, 3, 4], "B": [5]}]}))
    samples = _load(str(path), model, {})
    assert [[t.name for t in s] for s in samples] == [["A"], ["A", "B"]]
    path.write_text(json.dumps({"data": [{"B": [5]}]}))
    with pytest.raises(OptionError, match="no data for input"):
        _load(str(path), model, {})


def test_a_file_named_after_a_string_input_holds_one_string_per_line(tmp_path: Path) -> None:
    """perf_analyzer's directory layout: the file for a BYTES input has its name, no extension, one line each."""
    model = _model(TensorSpec("S", "BYTES", (-1,)), TensorSpec("N", "INT32", (2,)))
    (tmp_path / "S").write_text("alpha\nbeta\n")
    (tmp_path / "N").write_bytes(np.array([1, 2], np.int32).tobytes())
    [sample] = _load(str(tmp_path), model, {})
    assert deserialize_bytes_tensor(sample[0].content).tolist() == [b"alpha", b"beta"]
    single = _model(TensorSpec("S", "BYTES", (-1,)))
    (tmp_path / "other.bin").write_bytes(b"\x00\x01")
    [sample] = _load(str(tmp_path), single, {})  # the file named after the input, the others left alone
    assert deserialize_bytes_tensor(sample[0].content).tolist() == [b"alpha", b"beta"]


@pytest.mark.parametrize(
    ("spec", "value", "message"),
    [
        (TensorSpec("X", "UINT8", (-1,)), [1, 300], "300 is not UINT8: it holds 0 to 255"),
        (TensorSpec("X", "UINT8", (-1,)), [-1], "-1 is not UINT8"),
        (TensorSpec("X", "INT32", (-1,)), [1.5], "1.5 is not INT32 \\(its values are whole numbers\\)"),
        (TensorSpec("X", "INT64", (-1,)), [10**30], "is not INT64"),
        (TensorSpec("X", "INT8", (-1,)), [True], "True is not INT8"),
        (TensorSpec("X", "BOOL", (-1,)), [1], "1 is not BOOL"),
        (TensorSpec("X", "FP16", (-1,)), [1e10], "too large"),
        (TensorSpec("X", "FP32", (-1,)), ["a"], "'a' is not FP32"),
        (TensorSpec("X", "INT32", (-1,)), {"content": [1], "shape": 16}, "'shape' must be a list of whole numbers"),
        (TensorSpec("X", "INT32", (-1,)), {"content": [1], "shape": [1.0]}, "'shape' must be a list"),
        (TensorSpec("X", "INT32", (-1,)), {"content": [1], "shape": [10**30]}, "'shape' must be a list"),
    ],
)
def test_json_values_that_do_not_fit_are_refused_not_wrapped(
    tmp_path: Path, spec: TensorSpec, value: object, message: str
) -> None:
    path = tmp_path / "values.json"
    path.write_text(json.dumps({"data": [{"X": value}]}))
    with pytest.raises(OptionError, match=message):
        _load(str(path), _model(spec), {})


def test_deeply_nested_json_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"data": [{"X": ' + "[" * 100_000 + "1" + "]" * 100_000 + "}]}")
    with pytest.raises(OptionError, match="nested too deeply"):
        _load(str(path), _model(TensorSpec("X", "INT32", (-1,))), {})
    path.write_text(json.dumps({"data": [{"X": [[[1, 2]], [[3, 4]]]}]}))  # nested lists of equal lengths: flattened
    [sample] = _load(str(path), _model(TensorSpec("X", "INT32", (-1,))), {})
    assert np.frombuffer(sample[0].content, np.int32).tolist() == [1, 2, 3, 4]


def test_a_request_over_two_gib_is_refused_before_it_is_built() -> None:
    with pytest.raises(OptionError, match="over the 2 GiB a request can hold"):
        _load("random", IMAGE, {"INPUT": (9_000_000_000,)})


def test_large_numeric_json_is_read_column_by_column(tmp_path: Path) -> None:
    """Every step a flat list of the same length: one numpy conversion, the same tensors as step by step."""
    rows = [{"A": [float(i)] * 4, "B": [i, i + 1]} for i in range(500)]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"data": rows}))
    samples = _load(str(path), PAIR, {})
    assert len(samples) == 500 and samples[7][0].shape == (2, 2)
    assert np.frombuffer(samples[7][0].content, np.float32).tolist() == [7.0] * 4
    assert np.frombuffer(samples[7][1].content, np.int64).tolist() == [7, 8]
    rows[3]["B"] = [1, 2**70]
    path.write_text(json.dumps({"data": rows}))
    with pytest.raises(OptionError, match="is not INT64"):
        _load(str(path), PAIR, {})
