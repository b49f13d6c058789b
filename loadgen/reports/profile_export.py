"""perf_analyzer's profile export (`--profile-export-file`): every recorded request of every level, written as
perf_analyzer 2.51 writes it (compact JSON, its keys in its order), so that tools that read its file (genai-perf)
read loadgen's.

A token run's request lists one response per event that carried output (its time, and its text under the model's
text output, as perf_analyzer lists a TensorRT-LLM stream's), then loadgen's own `input_tokens` and
`output_tokens`: its counts as the run counted them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from loadgen.outputs import write_file
from loadgen.reports.aiperf import write_summaries
from loadgen.reports.perf_analyzer import PERF_ANALYZER_VERSION
from loadgen.transport import Tensor

if TYPE_CHECKING:
    from loadgen.results import Experiment, ProfileResult, RequestRecord, TokenRecord

SERVICE_KIND = "triton"
# the datatypes perf_analyzer writes as JSON numbers (or booleans), with their element types
_NUMBERS = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP32": np.float32,
    "FP64": np.float64,
}
_STRINGS = ("BYTES", "JSON")
BYTES_PREFIX = 4  # the length before a BYTES tensor's first element


def tensor_value(tensor: Tensor, unsupported: Callable[[str], None]) -> Any:
    """A tensor as perf_analyzer writes it: one element as a JSON scalar, more as a list; BYTES as one string (the
    content after the first element's 4-byte length: with several elements, the others' lengths stay in it, as
    perf_analyzer leaves them; bytes that are not UTF-8 become U+FFFD, so that the file stays valid JSON); no
    content as ""; other datatypes (FP16, BF16) as null, after `unsupported(datatype)`."""
    content = tensor.content
    if tensor.datatype in _STRINGS:
        return content[BYTES_PREFIX:].decode("utf-8", errors="replace") if len(content) >= BYTES_PREFIX else ""
    dtype = _NUMBERS.get(tensor.datatype)
    if dtype is None:
        unsupported(tensor.datatype)
        return None
    if not content:
        return ""
    values = np.frombuffer(content, dtype=dtype).tolist()
    return values[0] if len(values) == 1 else values


def _request(record: RequestRecord, unsupported: Callable[[str], None]) -> dict[str, Any]:
    request: dict[str, Any] = {"timestamp": record.timestamp}
    if record.sequence_id:
        request["sequence_id"] = record.sequence_id
    request["request_inputs"] = {tensor.name: tensor_value(tensor, unsupported) for tensor in record.request_inputs}
    request["response_timestamps"] = list(record.response_timestamps)
    request["response_outputs"] = [
        {tensor.name: tensor_value(tensor, unsupported) for tensor in outputs} for outputs in record.response_outputs
    ]
    return request


def _token_request(record: TokenRecord) -> dict[str, Any]:
    return {
        "timestamp": record.timestamp,
        "request_inputs": record.request_inputs,
        "response_timestamps": list(record.response_timestamps),
        "response_outputs": [{record.text_output: text} for text in record.response_texts],
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
    }


def _experiment(experiment: Experiment, unsupported: Callable[[str], None]) -> dict[str, Any]:
    return {
        "experiment": {"mode": experiment.mode, "value": experiment.value},
        "requests": [_request(record, unsupported) for record in experiment.requests]
        + [_token_request(record) for record in experiment.tokens],
        "window_boundaries": list(experiment.window_boundaries),
    }


def export_document(result: ProfileResult, unsupported: Callable[[str], None]) -> dict[str, Any]:
    """The export as a JSON-ready document, perf_analyzer's keys in its order."""
    return {
        "experiments": [_experiment(experiment, unsupported) for experiment in result.experiments],
        "version": PERF_ANALYZER_VERSION,
        "service_kind": SERVICE_KIND,
        "endpoint": "",
    }


def write_export(result: ProfileResult, path: str | os.PathLike[str]) -> None:
    """Write the profile export: compact JSON without a final newline, as perf_analyzer does; a datatype JSON cannot
    hold is written as null, and said once on stderr with perf_analyzer's warning. A token run's AIPerf files go
    beside it (`loadgen.reports.aiperf`)."""
    warned: set[str] = set()

    def unsupported(datatype: str) -> None:
        if datatype not in warned:
            warned.add(datatype)
            print(f"WARNING: unsupported data type: '{datatype}'", file=sys.stderr)

    document = export_document(result, unsupported)
    write_file(path, json.dumps(document, separators=(",", ":"), ensure_ascii=False))
    write_summaries(result, path)
