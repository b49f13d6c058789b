"""Input data: turn a file, a directory, a perf_analyzer JSON file or generated data into request tensors."""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor, triton_to_np_dtype

from loadgen.errors import OptionError
from loadgen.prompts import SessionPlan
from loadgen.settings import ALL_INPUTS, Settings
from loadgen.shared_memory import Placements
from loadgen.transport import ModelInfo, Payload, RequestLayout, Sample, Tensor, TensorSpec, Wire
from loadgen.transport.tokens import TokenOutputs

GENERATED = ("random", "zero")
TIMESTAMP = "timestamp"  # --fixed-schedule: the pseudo-input of a JSON entry that says when to send it
_SEED = 0


@dataclass(frozen=True)
class InputData:
    """The requests' tensors as streams of steps (one stream unless the JSON data has several).

    `expected` mirrors `streams` with the outputs each step must produce, when the JSON data has `validation_data`.
    """

    streams: tuple[tuple[Sample, ...], ...]
    expected: tuple[tuple[Sample, ...], ...] | None = None
    timestamps_ms: tuple[int, ...] | None = None  # --fixed-schedule: each step's time, in order (one stream)
    json: bool = False  # from perf_analyzer's JSON format: a sequence is one stream, whole (see `Sequences`)

    @property
    def samples(self) -> tuple[Sample, ...]:
        """Every step of every stream, in order: what requests cycle through when there are no sequences."""
        return tuple(sample for stream in self.streams for sample in stream)

    @property
    def expected_samples(self) -> tuple[Sample, ...] | None:
        """The expected outputs in the order of `samples`."""
        return None if self.expected is None else tuple(sample for stream in self.expected for sample in stream)


@dataclass(frozen=True)
class Requests:
    """The run's requests, serialised once: what the load generators (and worker processes) receive."""

    payloads: tuple[Payload, ...]
    streams: tuple[tuple[int, ...], ...]  # indices into `payloads`, stream by stream
    expected: tuple[Sample, ...] | None = None  # per payload: the outputs validation_data expects
    sequential: bool = False  # a stateful model: requests go out in sequences
    json: bool = False  # the data was JSON: a sequence walks one stream from its first step
    tokens: TokenOutputs | None = None  # token streams: where the answers hold text and token ids
    input_tokens: tuple[int, ...] = ()  # token streams: per payload, its prompt's tokens
    sessions: SessionPlan | None = None  # token streams in multi-turn sessions: their turns, encoded as they go


def encode_requests(
    wire: Wire, model: ModelInfo, data: InputData, settings: Settings, placements: Placements | None = None
) -> Requests:
    """Serialise every sample once for a protocol's `wire`; with validation data, each request carries its
    index as its id; with `placements`, requests point at the tensors in shared memory."""
    expected = data.expected_samples
    payloads = tuple(
        wire.encode(
            model,
            sample,
            request_layout(settings, str(index) if expected is not None else "", placements, index),
        )
        for index, sample in enumerate(data.samples)
    )
    streams = []
    start = 0
    for stream in data.streams:
        streams.append(tuple(range(start, start + len(stream))))
        start += len(stream)
    return Requests(payloads, tuple(streams), expected, model.is_sequence, data.json)


def request_layout(
    settings: Settings, request_id: str = "", placements: Placements | None = None, index: int = 0
) -> RequestLayout:
    """How a request is laid out by the settings: its outputs, id, streaming flag, parameters, tensor formats, and
    with `placements` its tensors in shared memory (the `index`-th sample's inputs)."""
    return RequestLayout(
        outputs=() if placements else tuple(settings.output),
        request_id=request_id,
        streaming=settings.streaming,
        inputs_shm=placements.inputs[index] if placements else (),
        outputs_shm=placements.outputs if placements else (),
        parameters=tuple(settings.request_parameter.items()),
        binary_inputs=settings.input_tensor_format == "binary",
        binary_outputs=settings.output_tensor_format == "binary",
    )


def load_data(model: ModelInfo, settings: Settings) -> InputData:
    """The requests' input tensors (and expected outputs) from the settings' --input-data and related flags."""
    _check_names(model, settings)
    if model.max_batch_size == 0 and settings.batch_size > 1:
        raise OptionError(f"--batch-size {settings.batch_size}: model {model.name} does not support batching")
    if settings.batch_size > model.max_batch_size > 0:
        raise OptionError(
            f"--batch-size {settings.batch_size}: above model {model.name}'s max_batch_size {model.max_batch_size}"
        )
    builder = _Builder(model, settings)
    sources = settings.input_sources
    if len(sources) > 1:
        return _joined([builder.json_file(_json_path(source, several=True)) for source in sources])
    source = sources[0]
    if source in GENERATED:
        return InputData(((builder.generated(zero=source == "zero"),),))
    path = Path(source)
    if path.is_dir():
        return InputData((tuple(builder.directory(path)),))
    if not path.is_file():
        raise OptionError(f"--input-data {source}: no such file or directory (or use 'random' or 'zero')")
    if path.suffix.lower() == ".json" or settings.perf_analyzer_rules:  # perf_analyzer reads every file as JSON
        return builder.json_file(path)
    if len(model.inputs) != 1:
        raise OptionError(
            f"--input-data {source}: a single file feeds a model with one input; {model.name} has "
            f"{_names(model)} (use a directory of files named after them, or a JSON file)"
        )
    return InputData((((builder.from_bytes(model.inputs[0], _read(path), str(path)),),),))


def _check_names(model: ModelInfo, settings: Settings) -> None:
    """Every input or output a flag names must exist, and --input-range must name a numeric input."""
    inputs = {spec.name: spec for spec in model.inputs}
    for name in settings.shape:
        if name not in inputs:
            raise OptionError(f"--shape {name}: the model has no such input; its inputs: {_names(model)}")
    for name in settings.input_range:
        if name == ALL_INPUTS:
            continue
        if name not in inputs:
            raise OptionError(f"--input-range {name}: the model has no such input; its inputs: {_names(model)}")
        if inputs[name].datatype in ("BYTES", "BOOL"):
            raise OptionError(f"--input-range {name}: input {name} is {inputs[name].datatype}, not numbers")
    outputs = [spec.name for spec in model.outputs]
    for name in settings.output:
        if name not in outputs:
            raise OptionError(f"--output {name}: the model has no such output; its outputs: {', '.join(outputs)}")


def _joined(parts: Sequence[InputData]) -> InputData:
    """The streams of several JSON files, one after another; validation needs it in all of them or none."""
    if len({part.expected is None for part in parts}) > 1:
        raise OptionError("--input-data: give validation_data in every JSON file or in none")
    expected = None if parts[0].expected is None else tuple(s for p in parts for s in p.expected or ())
    return InputData(tuple(stream for part in parts for stream in part.streams), expected, json=True)


def _json_path(source: str, several: bool) -> Path:
    path = Path(source)
    if several and (path.suffix.lower() != ".json" or source in GENERATED):
        raise OptionError(f"--input-data {source}: several --input-data must all be JSON files")
    if not path.is_file():
        raise OptionError(f"--input-data {source}: no such file")
    return path


def _names(model: ModelInfo) -> str:
    return ", ".join(f"{s.name} ({s.datatype} {list(s.shape)})" for s in model.inputs)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise OptionError(f"--input-data {path}: cannot read: {error.strerror}") from None


class _Builder:
    """Builds tensors for one model, checking every shape against its metadata."""

    def __init__(self, model: ModelInfo, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        self.shapes = settings.shape
        self.batch_size = settings.batch_size
        self.batched = model.max_batch_size > 0

    def dims(self, spec: TensorSpec) -> tuple[int, ...]:
        """The model's dimensions for one sample (without the batch dimension)."""
        return spec.shape[1:] if self.batched else spec.shape

    def check_shape(self, spec: TensorSpec, shape: tuple[int, ...], where: str) -> None:
        dims = self.dims(spec)
        if len(shape) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, shape, strict=True)):
            raise OptionError(f"{where}: {spec.name} has shape {list(shape)}, the model expects {list(dims)}")

    def tensor(self, spec: TensorSpec, array: np.ndarray, where: str) -> Tensor:
        """A tensor from one sample's array, repeated along the batch dimension when the model batches."""
        shape = tuple(int(d) for d in array.shape)
        self.check_shape(spec, shape, where)
        if spec.datatype == "BYTES":
            content = serialize_byte_tensor(array).item() if array.size else b""
        else:
            content = np.ascontiguousarray(array, dtype=_np_dtype(spec, where)).tobytes()
        if self.batched:
            _check_request_size(len(content) * self.batch_size, where)
            return Tensor(spec.name, spec.datatype, (self.batch_size, *shape), content * self.batch_size)
        return Tensor(spec.name, spec.datatype, shape, content)

    def shape_for(
        self, spec: TensorSpec, elements: int | None, where: str, given: tuple[int, ...] | None = None
    ) -> tuple[int, ...]:
        """The shape of a sample: the data's own, else --shape, else the model's static dims, else 1-D."""
        dims = self.dims(spec)
        if given is not None:
            shape = given
        elif spec.name in self.shapes:
            shape = tuple(self.shapes[spec.name])
        elif -1 not in dims:
            shape = dims
        elif len(dims) == 1 and elements is not None:
            shape = (elements,)
        else:
            hint = "real data with --input-data FILE, or " if elements is None else ""
            raise OptionError(
                f"{where}: input {spec.name} has dynamic shape {list(dims)}; give {hint}--shape {spec.name}:D1[,D2,...]"
            )
        if elements is not None and math.prod(shape) != elements:
            raise OptionError(f"{where}: {spec.name} holds {elements} elements, which does not fit shape {list(shape)}")
        return shape

    def generated(self, zero: bool) -> Sample:
        rng = np.random.default_rng(_SEED)
        where = "--input-data zero" if zero else "--input-data random"
        shapes = [self.shape_for(spec, None, where) for spec in self.model.inputs]
        size = sum(
            math.prod(shape) * (4 + self.string_length if spec.datatype == "BYTES" else _np_dtype(spec, where).itemsize)
            for spec, shape in zip(self.model.inputs, shapes, strict=True)
        )
        _check_request_size(size * self.batch_size, where)  # before a byte of it is built
        return tuple(
            self.tensor(spec, self.generate(spec, shape, rng, zero, where), where)
            for spec, shape in zip(self.model.inputs, shapes, strict=True)
        )

    @property
    def string_length(self) -> int:
        """The length of a generated BYTES element."""
        settings = self.settings
        return (
            len(_utf8(settings.string_data, "--string-data"))
            if settings.string_data is not None
            else settings.string_length
        )

    def generate(
        self, spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator, zero: bool, where: str
    ) -> np.ndarray:
        """Data of the input's dtype: --string-data or random printable strings, or numbers in --input-range."""
        settings = self.settings
        if spec.datatype == "BYTES":
            count = math.prod(shape)
            if settings.string_data is not None:
                values = [_utf8(settings.string_data, "--string-data")] * count
            elif zero:
                values = [b"0" * settings.string_length] * count
            else:
                values = [rng.integers(32, 127, settings.string_length, dtype=np.uint8).tobytes() for _ in range(count)]
            return np.array(values, dtype=np.object_).reshape(shape)
        dtype = _np_dtype(spec, where)
        if zero:
            return np.zeros(shape, dtype=dtype)
        if dtype == np.bool_:
            return rng.integers(0, 2, shape).astype(np.bool_)
        bounds = settings.input_range.get(spec.name, settings.input_range.get(ALL_INPUTS))
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            low, high = (math.ceil(bounds[0]), math.floor(bounds[1])) if bounds is not None else (info.min, info.max)
            if low < info.min or high > info.max or low > high:
                raise OptionError(f"--input-range {low}:{high}: outside the range of {spec.name}'s {spec.datatype}")
            return rng.integers(low, high, shape, dtype=dtype, endpoint=True)
        low_f, high_f = bounds if bounds is not None else (0.0, 1.0)
        return (low_f + (high_f - low_f) * rng.random(shape)).astype(dtype)

    def from_bytes(self, spec: TensorSpec, raw: bytes, where: str, given: tuple[int, ...] | None = None) -> Tensor:
        """A tensor whose content is a file's bytes: one BYTES element, or the bytes as the input's dtype."""
        if spec.datatype == "BYTES":
            shape = self.shape_for(spec, 1, where, given)
            return self.tensor(spec, np.array([raw], dtype=np.object_).reshape(shape), where)
        dtype = _np_dtype(spec, where)
        if len(raw) % dtype.itemsize:
            raise OptionError(f"{where}: {len(raw)} bytes is not a whole number of {spec.datatype} values")
        array = np.frombuffer(raw, dtype=dtype)
        return self.tensor(spec, array.reshape(self.shape_for(spec, array.size, where, given)), where)

    def from_file(self, spec: TensorSpec, path: Path) -> Tensor:
        """A directory's file for one input: for a BYTES input, a file named after it (as perf_analyzer reads it) or
        a `.txt` file holds one string per line, any other file is one element; for others the tensor's raw bytes."""
        if spec.datatype == "BYTES" and (path.stem == spec.name or path.suffix.lower() == ".txt"):
            lines = _read(path).splitlines()
            array = np.array(lines, dtype=np.object_)
            return self.tensor(spec, array.reshape(self.shape_for(spec, len(lines), str(path))), str(path))
        return self.from_bytes(spec, _read(path), str(path))

    def directory(self, path: Path) -> list[Sample]:
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise OptionError(f"--input-data {path}: the directory has no files")
        if len(self.model.inputs) == 1:
            spec = self.model.inputs[0]
            named = [f for f in files if f.stem == spec.name]  # perf_analyzer's layout: one file named after it
            return [(self.from_file(spec, f),) for f in named or files]
        by_name = {f.name: f for f in files} | {f.stem: f for f in files}
        missing = [s.name for s in self.model.inputs if s.name not in by_name]
        if missing:
            raise OptionError(
                f"--input-data {path}: no file for input(s) {', '.join(missing)}; "
                f"a directory for a model with several inputs holds one file named after each: {_names(self.model)}"
            )
        return [tuple(self.from_file(s, by_name[s.name]) for s in self.model.inputs)]

    def json_file(self, path: Path) -> InputData:
        """perf_analyzer's JSON format: `data` (a list of steps, or of streams of steps), optional `validation_data`."""
        try:
            document = json.loads(_read(path))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise OptionError(f"--input-data {path}: not valid JSON: {error}") from None
        except RecursionError:
            raise OptionError(f"--input-data {path}: nested too deeply to be tensor data") from None
        entries = document.get("data") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not entries:
            raise OptionError(f'--input-data {path}: expected {{"data": [{{"INPUT_NAME": ...}}, ...]}}')
        streams = self.json_streams(_streams(entries), self.model.inputs, f"--input-data {path}, data", "input")
        expected = None
        if "validation_data" in document:
            checks = document["validation_data"]
            where = f"--input-data {path}, validation_data"
            if not isinstance(checks, list):
                raise OptionError(f"{where}: expected a list like data")
            expected = self.json_streams(_streams(checks), self.model.outputs, where, "output", every=False)
            if [len(s) for s in expected] != [len(s) for s in streams]:
                raise OptionError(f"{where}: needs one entry per entry of data, in the same layout")
        if not self.settings.fixed_schedule:
            return InputData(streams, expected, json=True)
        if len(streams) != 1:
            raise OptionError(
                f"--input-data {path}: --fixed-schedule sends one flat list of entries, each with its "
                '"timestamp"; this data has several streams'
            )
        steps = _streams(entries)[0]
        times = [_timestamp(entry, f"--input-data {path}, data[{index}]") for index, entry in enumerate(steps)]
        order = sorted(range(len(times)), key=times.__getitem__)  # sent in the order of their times
        return InputData(
            (tuple(streams[0][i] for i in order),),
            None if expected is None else (tuple(expected[0][i] for i in order),),
            tuple(times[i] for i in order),
        )

    def json_streams(
        self,
        streams: list[list[object]],
        specs: Sequence[TensorSpec],
        where: str,
        kind: str,
        every: bool = True,
    ) -> tuple[tuple[Sample, ...], ...]:
        """Tensors of JSON entries mapping tensor names to data; `every`: each entry must give every tensor that the
        model does not mark optional (perf_analyzer leaves optional inputs out when the data does)."""
        by_name = {s.name: s for s in specs}
        allowed = set(by_name) | {"model"}  # perf_analyzer allows a "model" key
        required = set(by_name) - {i.name for i in self.model.config.input if i.optional} if every else set()
        if self.settings.fixed_schedule and kind == "input":  # each request's time, not a tensor
            allowed.add(TIMESTAMP)
            required.add(TIMESTAMP)
        result = []
        for number, stream in enumerate(streams):
            steps = []
            at_stream = f"{where}[{number}]" if len(streams) > 1 else where
            batched = [(spec, self.json_column(spec, stream, at_stream)) for spec in specs]
            for index, entry in enumerate(stream):
                if not isinstance(entry, dict) or not entry.keys() <= allowed or not required <= entry.keys():
                    _refuse_entry(entry, f"{at_stream}[{index}]", kind, allowed, required)
                assert isinstance(entry, dict)
                steps.append(
                    tuple(
                        column[index]
                        if column is not None
                        else self.json_tensor(spec, entry[spec.name], f"{at_stream}[{index}]")
                        for spec, column in batched
                        if spec.name in entry
                    )
                )
            result.append(tuple(steps))
        return tuple(result)

    def json_column(self, spec: TensorSpec, stream: list[object], where: str) -> list[Tensor] | None:
        """One numeric input's tensors for a whole stream at once, when every step gives it as a flat list of the
        same length (the common case of large data files: converted and checked in one numpy call); else None."""
        values = [entry.get(spec.name) if isinstance(entry, dict) else None for entry in stream]
        first = values[0] if values else None
        if spec.datatype == "BYTES" or not isinstance(first, list) or not first:
            return None
        width = len(first)
        if any(not isinstance(value, list) or len(value) != width for value in values):
            return None
        try:
            array = np.asarray(values)
        except (ValueError, TypeError):
            return None
        if array.ndim != 2:  # nested, or not numbers: each step on its own
            return None
        content = _numbers(values, spec, _np_dtype(spec, where), where).tobytes()
        shape = self.shape_for(spec, width, f"{where}.{spec.name}")
        example = self.tensor(spec, np.zeros(shape, dtype=_np_dtype(spec, where)), f"{where}.{spec.name}")
        size = len(content) // len(values)
        repeat = self.batch_size if self.batched else 1
        return [
            Tensor(spec.name, spec.datatype, example.shape, content[i * size : (i + 1) * size] * repeat)
            for i in range(len(values))
        ]

    def json_tensor(self, spec: TensorSpec, value: object, where: str) -> Tensor:
        """One tensor of perf_analyzer's JSON format: a flat list, or an object with "content" (a list, or
        {"b64": ...}) or "b64", and an optional "shape"."""
        where = f"{where}.{spec.name}"
        shape = None
        if isinstance(value, dict):
            if "shape" in value:
                shape = _json_shape(value["shape"], where)
            if "b64" not in value and "content" not in value:
                raise OptionError(f"{where}: expected a list, or an object with 'content' or 'b64'")
            value = value if "b64" in value else value["content"]
            if isinstance(value, dict):
                if "b64" not in value:
                    raise OptionError(f"{where}: 'content' must be a list or {{\"b64\": ...}}")
                return self.from_wire_bytes(spec, _b64(value["b64"], where), where, shape)
        if spec.datatype == "BYTES" and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise OptionError(f"{where}: expected a list of values")
        if spec.datatype == "BYTES":
            array = np.array([_string(v, where) for v in _flat(value, where)], dtype=np.object_)
        else:
            array = _numbers(value, spec, _np_dtype(spec, where), where)
        return self.tensor(spec, array.reshape(self.shape_for(spec, array.size, where, shape)), where)

    def from_wire_bytes(self, spec: TensorSpec, raw: bytes, where: str, given: tuple[int, ...] | None = None) -> Tensor:
        """perf_analyzer's {"b64": ...}: the tensor's bytes as they go on the wire (for BYTES, every element
        preceded by its 4-byte little-endian length)."""
        if spec.datatype != "BYTES":
            return self.from_bytes(spec, raw, where, given)
        try:
            elements = deserialize_bytes_tensor(raw) if raw else np.array([], dtype=np.object_)
        except (ValueError, IndexError, struct.error):
            elements = None
        if elements is None or len(serialize_byte_tensor(elements).item() if len(elements) else b"") != len(raw):
            raise OptionError(
                f"{where}: 'b64' of a BYTES tensor holds each element after its 4-byte length (perf_analyzer's "
                "format); these bytes do not read that way"
            )
        return self.tensor(spec, elements.reshape(self.shape_for(spec, len(elements), where, given)), where)


MAX_REQUEST_BYTES = 2**31 - 1  # gRPC's limit on one message; no Triton request carries more


def _check_request_size(size: int, where: str) -> None:
    if size > MAX_REQUEST_BYTES:
        raise OptionError(
            f"{where}: one request would carry {size / 2**30:.1f} GiB of tensors, over the 2 GiB a request can hold "
            "(gRPC's message limit); use smaller --shape dimensions or --batch-size"
        )


def _timestamp(entry: object, where: str) -> int:
    """A --fixed-schedule entry's "timestamp": whole milliseconds from the start, or a list of that one number (as
    perf_analyzer's tensors are written)."""
    value = entry.get(TIMESTAMP) if isinstance(entry, dict) else None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptionError(
            f'{where}: "{TIMESTAMP}" must be whole milliseconds from the start (0 or more), got {value!r}'
        )
    return value


def _refuse_entry(entry: object, at: str, kind: str, allowed: set[str], required: set[str]) -> None:
    """Say what is wrong with a JSON step that is not an object of the model's tensors."""
    if not isinstance(entry, dict):
        raise OptionError(f"{at}: expected an object mapping {kind} names to data")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        names = ", ".join(sorted(allowed - {"model"}))
        raise OptionError(f"{at}: unknown {kind}(s) {', '.join(unknown)}; model {kind}s: {names}")
    raise OptionError(f"{at}: no data for {kind}(s) {', '.join(sorted(required - set(entry)))}")


def _b64(text: object, where: str) -> bytes:
    if not isinstance(text, str):
        raise OptionError(f"{where}: the value of 'b64' must be a string")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise OptionError(f"{where}: 'b64' is not valid base64") from None


MAX_DIMENSION = 2**31 - 1


def _json_shape(value: object, where: str) -> tuple[int, ...]:
    """A JSON "shape": a list of whole numbers from 0 up."""
    if not isinstance(value, list) or any(
        isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= MAX_DIMENSION for d in value
    ):
        raise OptionError(f"{where}: 'shape' must be a list of whole numbers from 0 to {MAX_DIMENSION}, got {value!r}")
    return tuple(value)


def _flat(value: list[object], where: str) -> list[object]:
    """A list's elements, nested lists (of any depth) flattened in order."""
    flat: list[object] = []
    pending: list[Iterator[object]] = [iter(value)]
    while pending:
        for item in pending[-1]:
            if isinstance(item, list):
                pending.append(iter(item))
                break
            flat.append(item)
        else:
            pending.pop()
    return flat


def _numbers(value: list[object], spec: TensorSpec, dtype: np.dtype, where: str) -> np.ndarray:
    """JSON numbers as an array of the input's dtype, refusing (never wrapping) values the dtype cannot hold."""
    try:
        array = np.asarray(value).reshape(-1)
    except (ValueError, TypeError):  # ragged nesting
        array = np.asarray(_flat(value, where), dtype=np.object_)
    integer = np.issubdtype(dtype, np.integer)
    what = "true or false" if dtype == np.bool_ else "whole numbers" if integer else "numbers"
    expected_kinds = "b" if dtype == np.bool_ else "iu" if integer else "iuf"
    if array.size and array.dtype.kind not in expected_kinds:
        for item in _flat(value, where):  # the slow path, only to name the value that does not fit
            if dtype == np.bool_ and not isinstance(item, bool):
                break
            if dtype != np.bool_ and (isinstance(item, bool) or not isinstance(item, int if integer else (int, float))):
                break
        else:
            item = None
        if item is not None or not integer:
            raise OptionError(f"{where}: {item!r} is not {spec.datatype} (its values are {what})")
        array = np.asarray(_flat(value, where), dtype=np.object_)  # integers too large for numpy's own types
    if integer and array.size:
        info = np.iinfo(dtype)
        if array.dtype.kind == "O":
            outside = [v for v in array.tolist() if not info.min <= v <= info.max][:1]
        else:  # compared within the array's own range, so that no bound overflows it
            own = np.iinfo(array.dtype)
            low, high = max(info.min, own.min), min(info.max, own.max)
            outside = array[(array < low) | (array > high)][:1].tolist()
        if outside:
            raise OptionError(f"{where}: {outside[0]} is not {spec.datatype}: it holds {info.min} to {info.max}")
    with np.errstate(over="ignore"):  # overflow is checked just below
        converted = array.astype(dtype)
    if dtype.kind == "f" and not np.isfinite(converted[np.isfinite(array.astype(np.float64))]).all():
        raise OptionError(f"{where}: a value is not {spec.datatype}: too large for it")
    return converted


def _streams(entries: list[object]) -> list[list[object]]:
    """perf_analyzer's `data`: a list of steps (one stream), or a list of streams, each a list of steps."""
    if all(isinstance(entry, list) for entry in entries):
        return [entry for entry in entries if isinstance(entry, list)]
    return [entries]


def _utf8(text: str, where: str) -> bytes:
    """A string as UTF-8; one that has none (a lone surrogate, as JSON's "\\ud800" reads) is a one-line error."""
    try:
        return text.encode()
    except UnicodeEncodeError as error:
        raise OptionError(
            f"{where}: {text[error.start : error.end]!r} at character {error.start} is not valid text (a lone "
            'surrogate cannot be sent as UTF-8; give such bytes as {"b64": ...})'
        ) from None


def _string(value: object, where: str) -> bytes:
    """One element of a BYTES tensor in JSON: a string (sent as UTF-8), or {"b64": ...} for arbitrary bytes."""
    if isinstance(value, str):
        return _utf8(value, where)
    if isinstance(value, dict) and "b64" in value:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError):
            raise OptionError(f"{where}: 'b64' is not valid base64") from None
    raise OptionError(f"{where}: expected strings for a BYTES tensor")


def _np_dtype(spec: TensorSpec, where: str) -> np.dtype:
    dtype = triton_to_np_dtype(spec.datatype)
    if dtype is None:
        raise OptionError(f"{where}: {spec.name} has datatype {spec.datatype}, which loadgen cannot build")
    return np.dtype(dtype)
