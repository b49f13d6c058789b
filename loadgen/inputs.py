"""Input data: turn a file, a directory, a perf_analyzer JSON file or generated data into request tensors."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tritonclient.utils import serialize_byte_tensor, triton_to_np_dtype

from loadgen.errors import OptionError
from loadgen.settings import ALL_INPUTS, Settings
from loadgen.shared_memory import Placements
from loadgen.transport import ModelInfo, Payload, RequestLayout, Sample, Tensor, TensorSpec, Wire

GENERATED = ("random", "zero")
_SEED = 0


@dataclass(frozen=True)
class InputData:
    """The requests' tensors as streams of steps (one stream unless the JSON data has several).

    `expected` mirrors `streams` with the outputs each step must produce, when the JSON data has `validation_data`.
    """

    streams: tuple[tuple[Sample, ...], ...]
    expected: tuple[tuple[Sample, ...], ...] | None = None

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
            RequestLayout(
                outputs=() if placements else tuple(settings.output),
                request_id=str(index) if expected is not None else "",
                streaming=settings.streaming,
                inputs_shm=placements.inputs[index] if placements else (),
                outputs_shm=placements.outputs if placements else (),
            ),
        )
        for index, sample in enumerate(data.samples)
    )
    streams = []
    start = 0
    for stream in data.streams:
        streams.append(tuple(range(start, start + len(stream))))
        start += len(stream)
    return Requests(payloads, tuple(streams), expected, model.is_sequence)


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
    if path.suffix.lower() == ".json":
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
    return InputData(tuple(stream for part in parts for stream in part.streams), expected)


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
        tensors = []
        for spec in self.model.inputs:
            shape = self.shape_for(spec, None, where)
            tensors.append(self.tensor(spec, self.generate(spec, shape, rng, zero, where), where))
        return tuple(tensors)

    def generate(
        self, spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator, zero: bool, where: str
    ) -> np.ndarray:
        """Data of the input's dtype: --string-data or random printable strings, or numbers in --input-range."""
        settings = self.settings
        if spec.datatype == "BYTES":
            count = math.prod(shape)
            if settings.string_data is not None:
                values = [settings.string_data.encode()] * count
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
        """A directory's file for one input: a `.txt` file for a BYTES input holds one string per line."""
        if spec.datatype == "BYTES" and path.suffix.lower() == ".txt":
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
            return [(self.from_file(spec, f),) for f in files]
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
        entries = document.get("data") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not entries:
            raise OptionError(f'--input-data {path}: expected {{"data": [{{"INPUT_NAME": ...}}, ...]}}')
        streams = self.json_streams(_streams(entries), self.model.inputs, f"--input-data {path}, data", "input")
        if "validation_data" not in document:
            return InputData(streams)
        checks = document["validation_data"]
        where = f"--input-data {path}, validation_data"
        if not isinstance(checks, list):
            raise OptionError(f"{where}: expected a list like data")
        expected = self.json_streams(_streams(checks), self.model.outputs, where, "output", every=False)
        if [len(s) for s in expected] != [len(s) for s in streams]:
            raise OptionError(f"{where}: needs one entry per entry of data, in the same layout")
        return InputData(streams, expected)

    def json_streams(
        self,
        streams: list[list[object]],
        specs: Sequence[TensorSpec],
        where: str,
        kind: str,
        every: bool = True,
    ) -> tuple[tuple[Sample, ...], ...]:
        """Tensors of JSON entries mapping tensor names to data; `every`: each entry must give every tensor."""
        by_name = {s.name: s for s in specs}
        result = []
        for number, stream in enumerate(streams):
            steps = []
            for index, entry in enumerate(stream):
                at = f"{where}[{number}][{index}]" if len(streams) > 1 else f"{where}[{index}]"
                if not isinstance(entry, dict):
                    raise OptionError(f"{at}: expected an object mapping {kind} names to data")
                unknown = sorted(set(entry) - set(by_name))
                if unknown:
                    names = ", ".join(by_name)
                    raise OptionError(f"{at}: unknown {kind}(s) {', '.join(unknown)}; model {kind}s: {names}")
                missing = sorted(set(by_name) - set(entry))
                if every and missing:
                    raise OptionError(f"{at}: no data for {kind}(s) {', '.join(missing)}")
                steps.append(tuple(self.json_tensor(by_name[n], entry[n], at) for n in by_name if n in entry))
            result.append(tuple(steps))
        return tuple(result)

    def json_tensor(self, spec: TensorSpec, value: object, where: str) -> Tensor:
        """One tensor of perf_analyzer's JSON format: a flat list, {"content", "shape"} or {"b64", "shape"}."""
        where = f"{where}.{spec.name}"
        shape = None
        if isinstance(value, dict):
            if "shape" in value:
                shape = tuple(value["shape"])
            if "b64" in value:
                try:
                    raw = base64.b64decode(value["b64"], validate=True)
                except (binascii.Error, TypeError):
                    raise OptionError(f"{where}: 'b64' is not valid base64") from None
                return self.from_bytes(spec, raw, where, shape)
            if "content" not in value:
                raise OptionError(f"{where}: expected a list, or an object with 'content' or 'b64'")
            value = value["content"]
        if spec.datatype == "BYTES" and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise OptionError(f"{where}: expected a list of values")
        flat = np.array(value, dtype=np.object_).reshape(-1)
        if spec.datatype == "BYTES":
            array = np.array([_string(v, where) for v in flat], dtype=np.object_)
        else:
            try:
                array = flat.astype(_np_dtype(spec, where))
            except (ValueError, TypeError):
                raise OptionError(f"{where}: values are not {spec.datatype}") from None
        shape = self.shape_for(spec, array.size, where, shape)
        return self.tensor(spec, array.reshape(shape), where)


def _streams(entries: list[object]) -> list[list[object]]:
    """perf_analyzer's `data`: a list of steps (one stream), or a list of streams, each a list of steps."""
    if all(isinstance(entry, list) for entry in entries):
        return [entry for entry in entries if isinstance(entry, list)]
    return [entries]


def _string(value: object, where: str) -> bytes:
    """One element of a BYTES tensor in JSON: a string (sent as UTF-8), or {"b64": ...} for arbitrary bytes."""
    if isinstance(value, str):
        return value.encode()
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
